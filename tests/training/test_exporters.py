"""Prediction writers (gears_h_core.io.exporters): each output reads back into the same blocks.

The "predictions" here are DFT blocks of shipped snapshots (a molecule and a periodic slab with
many lattice shifts), so the round trips are checked on real block layouts without a model.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gears_h_core.assemble.sparse import to_csr_per_shift
from gears_h_core.io.exporters import (
    csr_arrays,
    output_kind,
    read_csr_npz,
    write_csr_npz,
    write_msgpack,
    write_snapshot_folders,
)
from gears_h_core.io.wire import ModelInfo, decode_response
from gears_h_core.testing import assert_block_matrices_close
from gears_h_core.types import BlockMatrix, SparseHamiltonian
from training.data.safe_npz import load_npz
from training.data.snapshot import DatasetError, LabeledStructure, read_snapshot

MODEL = ModelInfo(name="unit-model", version="9.9", sha256="ab" * 32)


@pytest.fixture(scope="module")
def butanol(shared_data: Path) -> LabeledStructure:
    return read_snapshot(shared_data / "butanol_pbe_def2svp" / "train" / "butanol_000")


def assert_same_blocks(a: BlockMatrix, b: BlockMatrix, name: str) -> None:
    """Same rows (on-site and (i, j, shift)) holding bit-identical float32 blocks."""
    assert_block_matrices_close(a, b, rtol=0.0, name=name)
    for g in (*b.onsite, *b.hopping):
        assert g.blocks.dtype == np.float32, name


def assert_same_hamiltonian(a: SparseHamiltonian, b: SparseHamiltonian) -> None:
    np.testing.assert_array_equal(a.structure.numbers, b.structure.numbers)
    np.testing.assert_allclose(b.structure.positions, a.structure.positions, rtol=0, atol=1e-7)
    np.testing.assert_allclose(b.structure.cell, a.structure.cell, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(a.structure.pbc, b.structure.pbc)
    assert_same_blocks(a.H, b.H, "H")
    assert (a.S is None) == (b.S is None)
    if a.S is not None and b.S is not None:
        assert_same_blocks(a.S, b.S, "S")


def shift_count(sh: SparseHamiltonian) -> int:
    return len({tuple(s) for g in sh.H.hopping for s in g.shift.tolist()})


def test_output_kind_by_suffix() -> None:
    assert output_kind("pred.msgpack") == "msgpack"
    assert output_kind(Path("dir/Pred.MSGPACK")) == "msgpack"
    assert output_kind("h.npz") == "npz"
    assert output_kind("H.NPZ") == "npz"
    for folder in ("out", "out/", "out.d", "predictions.json"):
        assert output_kind(folder) == "folder", folder


# -- snapshot folders ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["butanol", "hbn"])
def test_snapshot_folder_reads_back_bit_exact(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ref: LabeledStructure = request.getfixturevalue(which)
    [folder] = write_snapshot_folders([ref.hamiltonian], MODEL, tmp_path / "pred")
    assert folder == tmp_path / "pred" / "structure_0000"
    back = read_snapshot(folder)  # with validation: symmetric on-site, transposed partners
    assert_same_hamiltonian(ref.hamiltonian, back.hamiltonian)
    assert back.gamma_only is False  # S written: real-space rows, H(k) can be built
    if which == "hbn":
        assert shift_count(back.hamiltonian) > 1
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["model"] == {"name": "unit-model", "version": "9.9", "sha256": "ab" * 32}
    assert meta["n_atoms"] == ref.structure.n_atoms
    assert meta["n_basis"] == int(ref.basis.orbital_offsets(ref.structure.numbers)[-1])


def test_snapshot_block_files_are_flat_float32_and_pickle_free(
    butanol: LabeledStructure, tmp_path: Path
) -> None:
    [folder] = write_snapshot_folders([butanol.hamiltonian], MODEL, tmp_path)
    counts = butanol.basis.orbital_counts(butanol.structure.numbers)
    n_onsite = int((counts**2).sum())
    n_hop = sum(int(g.blocks.size) for g in butanol.hamiltonian.H.hopping)
    for prefix in ("h", "s"):
        for part, size in (("on-diagonal", n_onsite), ("off-diagonal", n_hop)):
            with np.load(folder / f"{prefix}blocks_{part}.npz", allow_pickle=False) as z:
                assert z.files == [f"{prefix}blocks_flat"]
                flat = z[f"{prefix}blocks_flat"]
            assert flat.dtype == np.float32 and flat.shape == (size,)
    with np.load(folder / "ijD.npz", allow_pickle=False) as z:
        ij, D = z["ij"], z["D"]
    # D = r_j + T - r_i (molecule: T = 0)
    pos = butanol.structure.positions
    np.testing.assert_allclose(D, pos[ij[:, 1]] - pos[ij[:, 0]], atol=1e-12)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left


def test_snapshot_folders_names_and_overwrite(
    butanol: LabeledStructure, hbn: LabeledStructure, tmp_path: Path
) -> None:
    results = [butanol.hamiltonian, hbn.hamiltonian]
    out = write_snapshot_folders(results, MODEL, tmp_path, names=["mol", "slab"])
    assert [p.name for p in out] == ["mol", "slab"]
    # overwrite "mol" with the slab: the folder is replaced, not merged
    write_snapshot_folders([hbn.hamiltonian], MODEL, tmp_path, names=["mol"])
    assert read_snapshot(tmp_path / "mol").structure.n_atoms == hbn.structure.n_atoms
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mol", "slab"]


def test_snapshot_folder_without_overlap(butanol: LabeledStructure, tmp_path: Path) -> None:
    h_only = replace(butanol.hamiltonian, S=None)
    [folder] = write_snapshot_folders([h_only], MODEL, tmp_path)
    assert not (folder / "sblocks_on-diagonal.npz").exists()
    back = read_snapshot(folder)
    assert back.hamiltonian.S is None
    assert_same_blocks(butanol.hamiltonian.H, back.hamiltonian.H, "H")


def _rewrite_flat(folder: Path, file: str, key: str, value: np.ndarray) -> None:
    (folder / file).unlink()
    np.savez(folder / file, **{key: value})


def test_flat_blocks_of_wrong_size_or_type_are_rejected(
    butanol: LabeledStructure, tmp_path: Path
) -> None:
    [folder] = write_snapshot_folders([butanol.hamiltonian], MODEL, tmp_path)
    file = "hblocks_off-diagonal.npz"
    flat = load_npz(folder / file)["hblocks_flat"]
    _rewrite_flat(folder, file, "hblocks_flat", flat[:-1])
    with pytest.raises(DatasetError, match=r"hblocks_off-diagonal\.npz: hblocks_flat: "):
        read_snapshot(folder)
    _rewrite_flat(folder, file, "hblocks_flat", np.round(flat).astype(np.int32))
    with pytest.raises(DatasetError, match=r"hblocks_flat: .* int32"):
        read_snapshot(folder)
    _rewrite_flat(folder, file, "hblocks_flat", flat.reshape(1, -1))
    with pytest.raises(DatasetError, match=r"1-D float array"):
        read_snapshot(folder)
    # the order of elements matters: shuffled values break the partner transposition check
    _rewrite_flat(folder, file, "hblocks_flat", flat[::-1].copy())
    with pytest.raises(DatasetError, match="not the transpose"):
        read_snapshot(folder)


# -- wire format --------------------------------------------------------------------------------


def test_msgpack_decodes_into_the_same_blocks(
    butanol: LabeledStructure, hbn: LabeledStructure, tmp_path: Path
) -> None:
    results = [butanol.hamiltonian, replace(hbn.hamiltonian, S=None)]
    path = write_msgpack(results, MODEL, tmp_path / "sub" / "pred.msgpack")
    decoded = decode_response(path.read_bytes())
    assert len(decoded) == 2
    for res, ref in zip(decoded, results, strict=True):
        assert res.model == MODEL
        assert res.timing is None
        np.testing.assert_array_equal(res.structure.positions, ref.structure.positions)
        np.testing.assert_array_equal(res.structure.cell, ref.structure.cell)
        assert_same_hamiltonian(ref, res.hamiltonian)


# -- CSR per shift ------------------------------------------------------------------------------


def _assert_csr_equal(a, b) -> None:  # scipy sparse arrays
    assert a.shape == b.shape
    diff = (a - b).tocoo()
    assert diff.nnz == 0 or np.max(np.abs(diff.data)) == 0.0
    assert a.nnz == b.nnz


@pytest.mark.parametrize("with_s", [True, False])
def test_csr_npz_round_trip_equals_to_csr_per_shift(
    hbn: LabeledStructure, tmp_path: Path, with_s: bool
) -> None:
    sh = hbn.hamiltonian if with_s else replace(hbn.hamiltonian, S=None)
    [path] = write_csr_npz([sh], tmp_path / "h.npz")
    assert path == tmp_path / "h.npz"
    back = read_csr_npz(path)
    numbers = sh.structure.numbers
    np.testing.assert_array_equal(back["numbers"], numbers)
    np.testing.assert_array_equal(back["orbital_offsets"], sh.basis.orbital_offsets(numbers))
    np.testing.assert_array_equal(back["cell"], sh.structure.cell)
    np.testing.assert_array_equal(back["pbc"], sh.structure.pbc)
    assert ("S" in back) is with_s
    ops = {"H": sh.H} | ({"S": sh.S} if with_s else {})
    for name, bm in ops.items():
        expected = to_csr_per_shift(bm, sh.basis, numbers, dtype=np.float32)
        assert len(expected) > 1  # periodic: several lattice shifts
        assert set(expected) <= set(back[name])
        if not with_s:
            assert set(back[name]) == set(expected)
        for shift, matrix in back[name].items():
            if shift in expected:
                _assert_csr_equal(matrix, expected[shift])
            else:  # a shift only the other operator has: stored empty
                assert matrix.nnz == 0
        # every element of every block is somewhere: totals agree
        total = sum(float(np.abs(g.blocks).sum()) for g in (*bm.onsite, *bm.hopping))
        assert sum(float(np.abs(m.data).sum()) for m in back[name].values()) == pytest.approx(
            total, rel=1e-6
        )


def test_csr_npz_several_structures_get_numbered_files(
    butanol: LabeledStructure, hbn: LabeledStructure, tmp_path: Path
) -> None:
    paths = write_csr_npz([butanol.hamiltonian, hbn.hamiltonian], tmp_path / "pred.npz")
    assert [p.name for p in paths] == ["pred_0000.npz", "pred_0001.npz"]
    assert not (tmp_path / "pred.npz").exists()
    for p, ref in zip(paths, (butanol, hbn), strict=True):
        assert read_csr_npz(p)["numbers"].tolist() == ref.structure.numbers.tolist()
        with np.load(p, allow_pickle=False) as z:  # plain numeric arrays only
            assert all(z[k].dtype != object for k in z.files)


def test_csr_arrays_layout(butanol: LabeledStructure) -> None:
    arrays = csr_arrays(butanol.hamiltonian)
    n = int(arrays["orbital_offsets"][-1])
    assert arrays["shifts"].tolist() == [[0, 0, 0]]  # a molecule: one shift
    for name in ("H", "S"):
        assert arrays[f"{name}_0_indptr"].shape == (n + 1,)
        assert arrays[f"{name}_0_data"].dtype == np.float32
    # H(Γ) assembled from the CSR data is symmetric
    import scipy.sparse as sp

    h = sp.csr_array(
        (arrays["H_0_data"], arrays["H_0_indices"], arrays["H_0_indptr"]), shape=(n, n)
    )
    assert abs(h - h.T).max() == 0.0
