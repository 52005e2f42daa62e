"""DeepH directories as training data: `read_dataset` / `read_snapshot` recognise them and give
the `LabeledStructure` of the snapshot they were written from, with the reader's checks."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from gears_h_core.io.deeph import (
    GEARS_H_FILE,
    HAMILTONIAN_FILE,
    poscar_order,
    write_deeph_folders,
)
from gears_h_core.testing import assert_block_matrices_close
from training.analysis import analyze
from training.data.snapshot import DatasetError, LabeledStructure, read_dataset, read_snapshot
from training.evaluate import evaluate_predictions


@pytest.fixture(scope="module")
def snapshots(shared_data: Path) -> list[LabeledStructure]:
    return [
        read_snapshot(shared_data / "hbn_pbe_dzp" / "valid" / "hbn5x5_100"),
        read_snapshot(shared_data / "butanol_pbe_def2svp" / "valid" / "butanol_100"),
    ]


@pytest.fixture
def deeph_set(snapshots: list[LabeledStructure], tmp_path: Path) -> Path:
    root = tmp_path / "dft"
    write_deeph_folders(
        [s.hamiltonian for s in snapshots],
        root,
        fermi_energy=[s.reference.e_fermi for s in snapshots],  # type: ignore[union-attr]
        names=["0", "1"],
    )
    for d in root.iterdir():  # as another tool writes them: no gears_h.json
        (d / GEARS_H_FILE).unlink()
    return root


def test_a_deeph_data_set_reads_like_snapshots(
    deeph_set: Path, snapshots: list[LabeledStructure]
) -> None:
    data = read_dataset(deeph_set)
    assert [d.name for d in data] == ["0", "1"]
    for got, want in zip(data, snapshots, strict=True):
        assert not got.gamma_only and got.meta["format"] == "deeph"
        assert got.meta["deeph_info"]["orthogonal_basis"] is False
        assert got.reference is not None and want.reference is not None
        assert got.reference.e_fermi == want.reference.e_fermi
        assert got.reference.eps_gamma is None
        assert len(got.fingerprint) == 64
        st, ref = got.structure, want.structure
        order = poscar_order(ref.numbers)
        np.testing.assert_array_equal(st.numbers, ref.numbers[order])
        np.testing.assert_array_equal(st.pbc, ref.pbc)
        assert got.hamiltonian.S is not None and want.hamiltonian.S is not None
        assert_block_matrices_close(
            want.hamiltonian.H, got.hamiltonian.H, rtol=0, permutation=order
        )
        assert_block_matrices_close(
            want.hamiltonian.S, got.hamiltonian.S, rtol=0, permutation=order
        )
    one = read_dataset(deeph_set / "1")  # a single directory is a data set of one
    assert [d.name for d in one] == ["1"]
    # the rest of the pipeline takes them: analysis, and evaluation (a perfect prediction)
    result = analyze(data, edge_cutoff=3.0, with_statistics=False)
    assert set(result.species) == {1, 5, 6, 7, 8}
    metrics = evaluate_predictions([(d.hamiltonian, d) for d in data])
    assert metrics["H"]["mae_meV"] == 0.0 and metrics["eigenvalues"] is None


def _edit_h5(path: Path, **changes: np.ndarray) -> None:
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f}
    data |= changes
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f.create_dataset(k, data=v)


def test_checks_name_the_folder_and_file(deeph_set: Path) -> None:
    folder = deeph_set / "1"
    path = folder / HAMILTONIAN_FILE
    with h5py.File(path, "r") as f:
        pairs, bounds, entries = f["atom_pairs"][()], f["chunk_boundaries"][()], f["entries"][()]
    # a hopping block that is not the transpose of its partner's
    hop = int(np.flatnonzero(pairs[:, 3] != pairs[:, 4])[0])
    bad = entries.copy()
    bad[bounds[hop]] += 0.5
    _edit_h5(path, entries=bad)
    with pytest.raises(DatasetError, match=rf"{path}: row \d+ .*not the transpose"):
        read_dataset(deeph_set)
    assert read_snapshot(folder, validate=False).name == "1"  # layout fine, values unchecked

    # a row without its partner (drop it)
    keep = np.ones(len(pairs), bool)
    keep[hop] = False
    with h5py.File(path, "r") as f:
        shapes = f["chunk_shapes"][()]
    new_entries = np.concatenate(
        [entries[bounds[r] : bounds[r + 1]] for r in range(len(pairs)) if keep[r]]
    )
    new_shapes = shapes[keep]
    _edit_h5(
        path,
        atom_pairs=pairs[keep],
        chunk_shapes=new_shapes,
        chunk_boundaries=np.concatenate([[0], np.cumsum(np.prod(new_shapes, axis=1))]),
        entries=new_entries,
    )
    with pytest.raises(DatasetError, match="different atom_pairs"):
        read_snapshot(folder)  # overlap.h5 still has the row
    (folder / "overlap.h5").unlink()
    info = json.loads((folder / "info.json").read_text())
    (folder / "info.json").write_text(json.dumps(info | {"orthogonal_basis": True}))
    with pytest.raises(DatasetError, match=rf"{path}: row \d+ \(i=.* has no partner"):
        read_snapshot(folder)
