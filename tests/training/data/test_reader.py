"""Snapshot-folder reader: the shipped sets load, malformed folders fail with clear errors."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gears_h_core.assemble.blocks import block_matrix_rows, lattice_shifts, onsite_blocks
from gears_h_core.assemble.sparse import gamma_fold
from training.data.safe_npz import UnsafePickleError, load_npz
from training.data.snapshot import (
    DatasetError,
    LabeledStructure,
    read_dataset,
    read_snapshot,
)


def _first(folder: Path) -> Path:
    return sorted(p for p in folder.iterdir() if p.is_dir())[0]


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    """Listing with mtimes and sizes (and the folder's own mtime) to detect any write."""
    out = {".": (folder.stat().st_mtime_ns, 0)}
    for p in sorted(folder.iterdir()):
        st = p.stat()
        out[p.name] = (st.st_mtime_ns, st.st_size)
    return out


def _object_array(blocks: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(blocks), dtype=object)
    for k, b in enumerate(blocks):
        out[k] = b
    return out


@pytest.fixture
def butanol(shared_data: Path, tmp_path: Path) -> Path:
    """A writable copy of one butanol snapshot (small) to corrupt."""
    src = _first(shared_data / "butanol_pbe_def2svp" / "train")
    dst = tmp_path / src.name
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    dst.chmod(0o755)
    return dst


def _load(folder: Path, file: str) -> dict[str, np.ndarray]:
    return dict(load_npz(folder / file))


def _save(folder: Path, file: str, arrays: dict[str, np.ndarray]) -> None:
    (folder / file).unlink()
    np.savez_compressed(folder / file, **arrays)  # type: ignore[arg-type]


def _edit_blocks(folder: Path, file: str, edit: Callable[[list[np.ndarray]], None]) -> None:
    arrays = _load(folder, file)
    key = next(k for k in arrays if k.endswith("blocks"))
    blocks = list(arrays[key])
    edit(blocks)
    arrays[key] = _object_array(blocks)
    _save(folder, file, arrays)


# --------------------------------------------------------------------------------------
# the shipped sets


def test_read_hbn_snapshot(shared_data: Path) -> None:
    folder = _first(shared_data / "hbn_pbe_dzp" / "train")
    before = _state(folder)
    ls = read_snapshot(folder)
    assert _state(folder) == before
    assert isinstance(ls, LabeledStructure)
    assert ls.name == folder.name and ls.path == folder
    assert not ls.gamma_only
    sh = ls.hamiltonian
    assert sh.structure.n_atoms == 50 and sh.S is not None
    assert sh.structure.pbc.tolist() == [True, True, False]
    assert sh.basis.shells == {5: (0, 1, 0, 1, 2), 7: (0, 1, 0, 1, 2)}
    ij = load_npz(folder / "ijD.npz")["ij"]
    assert sh.H.n_pairs == sh.S.n_pairs == ij.shape[0]
    assert [(g.z_i, g.z_j) for g in sh.H.hopping] == [(5, 5), (5, 7), (7, 5), (7, 7)]
    assert all(g.blocks.dtype == np.float32 for g in sh.H.hopping)
    # Blocks are the stored ones, row for row.
    ijd = load_npz(folder / "ijD.npz")
    stored_shift = lattice_shifts(sh.structure, ij[:, 0], ij[:, 1], ijd["D"])
    raw = load_npz(folder / "hblocks_off-diagonal.npz")["hblocks"]
    stored = {
        (int(a), int(b), *map(int, n)): blk
        for a, b, n, blk in zip(ij[:, 0], ij[:, 1], stored_shift, raw, strict=True)
    }
    i, j, shift, blocks = block_matrix_rows(sh.H)
    assert len(stored) == len(blocks)
    for a, b, n, blk in zip(i, j, shift, blocks, strict=True):
        np.testing.assert_array_equal(blk, stored[(int(a), int(b), *map(int, n))])
    onsite = load_npz(folder / "hblocks_on-diagonal.npz")["hblocks"]
    for got, want in zip(onsite_blocks(sh.H, 50), onsite, strict=True):
        np.testing.assert_array_equal(got, want)
    ref = ls.reference
    assert ref is not None and ref.eps_gamma is not None and ref.eps_gamma.shape == (124,)
    assert ref.k_test is not None and ref.k_test.shape == (3,)
    assert ref.e_fermi is not None and ref.homo is None and ref.lumo is None
    assert ls.meta["code"].lower().startswith("gpaw") and ls.meta["n_atoms"] == 50
    assert len(ls.fingerprint) == 64 and ls.fingerprint == read_snapshot(folder).fingerprint


def test_read_time_hbn(shared_data: Path) -> None:
    folder = _first(shared_data / "hbn_pbe_dzp" / "valid")
    read_snapshot(folder)  # warm imports
    start = time.perf_counter()
    read_snapshot(folder)
    assert time.perf_counter() - start < 1.0


def test_read_dataset_order_limit_and_single_folder(shared_data: Path) -> None:
    valid = shared_data / "hbn_pbe_dzp" / "valid"
    names = sorted(p.name for p in valid.iterdir() if p.is_dir())
    got = read_dataset(valid, limit=2)
    assert [s.name for s in got] == names[:2]
    single = read_dataset(valid / names[0])
    assert [s.name for s in single] == [names[0]]
    assert single[0].fingerprint == got[0].fingerprint
    assert len({s.fingerprint for s in got}) == 2


def test_read_dataset_skips_files(butanol: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a snapshot")
    shutil.copytree(butanol, tmp_path / "z_second")
    got = read_dataset(tmp_path)
    assert [s.name for s in got] == [butanol.name, "z_second"]
    assert got[0].fingerprint == got[1].fingerprint  # same bytes, same fingerprint
    empty = tmp_path.parent / f"{tmp_path.name}_empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("still not a snapshot")
    with pytest.raises(DatasetError, match="no snapshot folders"):
        read_dataset(empty)


def test_read_butanol_reference_and_meta(shared_data: Path) -> None:
    ls = read_snapshot(_first(shared_data / "butanol_pbe_def2svp" / "valid"))
    ref = ls.reference
    assert ref is not None and ref.homo is not None and ref.lumo is not None
    assert ref.e_fermi == pytest.approx((ref.homo + ref.lumo) / 2)
    assert ref.eps_ktest is None and ref.k_test is None
    assert not ls.structure.pbc.any()
    assert ls.meta["code"].lower().startswith("pyscf")


@pytest.mark.parametrize("split", ["training_data", "validation_data"])
def test_read_wse2_gamma_only(shared_data: Path, split: str) -> None:
    root = shared_data / "wse2_gearsh_example" / split
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    before = _state(folder)
    (ls,) = read_dataset(root)
    assert _state(folder) == before
    assert ls.gamma_only and ls.hamiltonian.S is None
    assert ls.reference is None and ls.meta == {}
    assert ls.structure.n_atoms == 107
    sh = ls.hamiltonian
    assert all(g.blocks.shape[1:] == (9, 9) for g in sh.H.hopping)
    h = gamma_fold(sh.H, sh.basis, sh.structure.numbers).toarray()
    assert h.shape == (963, 963)
    np.testing.assert_allclose(h, h.T, rtol=0, atol=1e-5 * np.abs(h).max())


# --------------------------------------------------------------------------------------
# malformed folders


def _expect(folder: Path, *patterns: str) -> DatasetError:
    before = _state(folder)
    with pytest.raises(DatasetError) as info:
        read_snapshot(folder)
    message = str(info.value)
    assert str(folder) in message
    for pattern in patterns:
        assert pattern in message, f"{pattern!r} not in {message!r}"
    assert _state(folder) == before
    return info.value


def test_copy_reads_cleanly(butanol: Path) -> None:
    before = _state(butanol)
    ls = read_snapshot(butanol)
    assert _state(butanol) == before
    assert ls.name == butanol.name and ls.hamiltonian.H.n_pairs == 210


def test_missing_file(butanol: Path) -> None:
    (butanol / "hblocks_off-diagonal.npz").unlink()
    _expect(butanol, "missing file hblocks_off-diagonal.npz")


def test_missing_one_overlap_file(butanol: Path) -> None:
    (butanol / "sblocks_on-diagonal.npz").unlink()
    _expect(butanol, "missing file sblocks_on-diagonal.npz")


def test_missing_key(butanol: Path) -> None:
    arrays = _load(butanol, "hblocks_on-diagonal.npz")
    _save(butanol, "hblocks_on-diagonal.npz", {"blocks": arrays["hblocks"]})
    _expect(butanol, "hblocks_on-diagonal.npz", "key 'hblocks' missing")


def test_onsite_count(butanol: Path) -> None:
    _edit_blocks(butanol, "hblocks_on-diagonal.npz", lambda b: b.pop())
    _expect(butanol, "hblocks_on-diagonal.npz", "14 blocks, expected 15")


def test_block_shape(butanol: Path) -> None:
    def reshape(blocks: list[np.ndarray]) -> None:
        blocks[7] = blocks[7][:, :-1]

    _edit_blocks(butanol, "hblocks_off-diagonal.npz", reshape)
    ij = load_npz(butanol / "ijD.npz")["ij"]
    shape = load_npz(butanol / "hblocks_off-diagonal.npz")["hblocks"][7].shape
    expected = (shape[0], shape[1] + 1)
    assert ij.shape[0] == 210
    _expect(
        butanol,
        "hblocks_off-diagonal.npz",
        f"row 7: block shape {shape} does not match orbital_ells.json",
        f"expected {expected}",
    )


def test_onsite_block_shape(butanol: Path) -> None:
    def reshape(blocks: list[np.ndarray]) -> None:
        blocks[3] = np.zeros((2, 2), np.float32)

    _edit_blocks(butanol, "sblocks_on-diagonal.npz", reshape)
    _expect(butanol, "sblocks_on-diagonal.npz", "atom 3: block shape (2, 2)")


def test_index_out_of_range(butanol: Path) -> None:
    arrays = _load(butanol, "ijD.npz")
    arrays["ij"][11, 1] = 99
    _save(butanol, "ijD.npz", arrays)
    _expect(butanol, "ijD.npz", "row 11: atom index", "out of range for 15 atoms")


def test_d_length(butanol: Path) -> None:
    arrays = _load(butanol, "ijD.npz")
    arrays["D"] = arrays["D"][:-1]
    _save(butanol, "ijD.npz", arrays)
    _expect(butanol, "ijD.npz", "'D' has 209 rows but 'ij' has 210")


def test_missing_partner_row(butanol: Path) -> None:
    drop = 20
    ijd = _load(butanol, "ijD.npz")
    i, j = ijd["ij"][drop]
    keep = np.arange(210) != drop
    _save(butanol, "ijD.npz", {"ij": ijd["ij"][keep], "D": ijd["D"][keep]})
    for file in ("hblocks_off-diagonal.npz", "sblocks_off-diagonal.npz"):
        _edit_blocks(butanol, file, lambda b: b.pop(drop))
    err = _expect(butanol, "ijD.npz", f"(i={j}, j={i}", "has no partner row", f"(i={i}, j={j}")
    assert "row " in str(err)


def test_partner_block_not_transposed(butanol: Path) -> None:
    def perturb(blocks: list[np.ndarray]) -> None:
        blocks[30] = blocks[30].copy()
        blocks[30][0, -1] += 1e-3

    _edit_blocks(butanol, "hblocks_off-diagonal.npz", perturb)
    err = _expect(butanol, "hblocks_off-diagonal.npz", "not the transpose of its partner")
    assert "row 30 " in str(err) or "partner row 30 " in str(err)
    read_snapshot(butanol, validate=False)  # the layout itself is fine


def test_nan_block(butanol: Path) -> None:
    def poison(blocks: list[np.ndarray]) -> None:
        blocks[12] = np.full_like(blocks[12], np.nan)

    _edit_blocks(butanol, "sblocks_off-diagonal.npz", poison)
    _expect(butanol, "sblocks_off-diagonal.npz", "NaN or inf", "row 12 (")


def test_non_integer_shift(butanol: Path) -> None:
    arrays = _load(butanol, "ijD.npz")
    arrays["D"][42] += [0.3, 0.0, 0.0]
    _save(butanol, "ijD.npz", arrays)
    _expect(butanol, "ijD.npz", "row 42 (", "outside the periodic lattice")


def test_non_integer_shift_periodic(shared_data: Path, tmp_path: Path) -> None:
    src = _first(shared_data / "hbn_pbe_dzp" / "valid")
    folder = tmp_path / src.name
    shutil.copytree(src, folder, copy_function=shutil.copyfile)
    folder.chmod(0o755)
    arrays = _load(folder, "ijD.npz")
    cell_x = read_snapshot(src).structure.cell[0]
    arrays["D"][100] += 0.5 * cell_x
    _save(folder, "ijD.npz", arrays)
    _expect(folder, "ijD.npz", "row 100 (", "is not an integer vector")


def test_element_missing_from_basis(butanol: Path) -> None:
    shells = json.loads((butanol / "orbital_ells.json").read_text())
    del shells["8"]
    (butanol / "orbital_ells.json").unlink()
    (butanol / "orbital_ells.json").write_text(json.dumps(shells))
    _expect(butanol, "atoms.extxyz", "element O (Z=8) has no entry in orbital_ells.json")


def test_malformed_basis_file(butanol: Path) -> None:
    (butanol / "orbital_ells.json").unlink()
    (butanol / "orbital_ells.json").write_text("{not json")
    _expect(butanol, "orbital_ells.json", "malformed orbital shells")


def test_overlapping_atoms(butanol: Path) -> None:
    lines = (butanol / "atoms.extxyz").read_text().splitlines()
    lines[3] = lines[2]  # atom 1 on top of atom 0
    (butanol / "atoms.extxyz").unlink()
    (butanol / "atoms.extxyz").write_text("\n".join(lines) + "\n")
    _expect(butanol, "atoms.extxyz", "atom 0")


def test_unsafe_pickle_in_block_file(butanol: Path) -> None:
    arrays = _load(butanol, "hblocks_on-diagonal.npz")
    blocks = list(arrays["hblocks"])
    from collections import OrderedDict

    blocks[0] = OrderedDict(a=1)
    _save(butanol, "hblocks_on-diagonal.npz", {"hblocks": _object_array(blocks)})
    err = _expect(butanol, "hblocks_on-diagonal.npz", "collections.OrderedDict")
    assert isinstance(err.__cause__, UnsafePickleError)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a snapshot folder"):
        read_snapshot(tmp_path / "nope")
    with pytest.raises(DatasetError, match="dataset folder not found"):
        read_dataset(tmp_path / "nope")
