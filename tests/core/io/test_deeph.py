"""DeepH directories (`gears_h_core.io.deeph`): layout, atom order, round trips, bad input.

The blocks are the DFT blocks of shipped snapshots: a periodic h-BN slab (many lattice
shifts, atoms alternating B, N so that POSCAR's grouping permutes them) and a molecule
(butanol: no periodicity, three elements interleaved).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from gears_h_core.assemble.blocks import block_matrix_from_rows, block_matrix_rows, onsite_blocks
from gears_h_core.io.deeph import (
    GEARS_H_FILE,
    HAMILTONIAN_FILE,
    INFO_FILE,
    OVERLAP_FILE,
    POSCAR_FILE,
    DeepHFormatError,
    is_deeph_folder,
    poscar_order,
    read_deeph_folder,
    write_deeph_folders,
)
from gears_h_core.structure import Structure
from gears_h_core.testing import assert_block_matrices_close
from gears_h_core.types import BlockMatrix, SparseHamiltonian
from training.data.snapshot import LabeledStructure


def _export(labeled: LabeledStructure, root: Path) -> Path:
    ref = labeled.reference
    assert ref is not None and ref.e_fermi is not None
    [folder] = write_deeph_folders([labeled.hamiltonian], root, fermi_energy=ref.e_fermi)
    return folder


def _shuffled(sh: SparseHamiltonian, seed: int) -> SparseHamiltonian:
    """The same operator with the atoms listed in a random order (new k = old perm[k])."""
    perm = np.random.default_rng(seed).permutation(sh.structure.n_atoms)
    inv = np.argsort(perm)
    st = sh.structure
    new_st = Structure(st.numbers[perm], st.positions[perm], st.cell, st.pbc)

    def move(bm: BlockMatrix) -> BlockMatrix:
        i, j, n, blocks = block_matrix_rows(bm)
        on = onsite_blocks(bm, st.n_atoms)
        return block_matrix_from_rows(
            new_st.numbers, sh.basis, [on[p] for p in perm], inv[i], inv[j], n, blocks
        )

    assert sh.S is not None
    return SparseHamiltonian(new_st, sh.basis, move(sh.H), move(sh.S))


def _h5(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def test_poscar_order_groups_elements_stably() -> None:
    numbers = np.array([6, 1, 1, 8, 6, 1, 8])
    order = poscar_order(numbers)
    np.testing.assert_array_equal(order, [0, 4, 1, 2, 5, 3, 6])
    np.testing.assert_array_equal(numbers[order], [6, 6, 1, 1, 1, 8, 8])


@pytest.mark.parametrize("which", ["hbn", "butanol"])
def test_round_trip_gives_the_same_blocks(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    labeled: LabeledStructure = request.getfixturevalue(which)
    sh = labeled.hamiltonian
    folder = _export(labeled, tmp_path)
    assert folder == tmp_path / "structure_0000" and is_deeph_folder(folder)
    back = read_deeph_folder(folder)
    assert back.fermi_energy == labeled.reference.e_fermi  # type: ignore[union-attr]
    out = back.hamiltonian
    np.testing.assert_array_equal(out.structure.numbers, sh.structure.numbers)
    np.testing.assert_array_equal(out.structure.positions, sh.structure.positions)
    np.testing.assert_array_equal(out.structure.cell, sh.structure.cell)
    np.testing.assert_array_equal(out.structure.pbc, sh.structure.pbc)
    assert out.S is not None and sh.S is not None
    assert assert_block_matrices_close(sh.H, out.H, rtol=0.0) == 0.0  # float32 -> f64 -> f32
    assert assert_block_matrices_close(sh.S, out.S, rtol=0.0) == 0.0


@pytest.mark.parametrize("which", ["hbn", "butanol"])
def test_plain_deeph_directory_is_read_in_poscar_order(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Without our gears_h.json (a directory from another tool): atoms in POSCAR order, the
    blocks those of the permuted structure, pbc from the lattice shifts present."""
    labeled: LabeledStructure = request.getfixturevalue(which)
    sh = labeled.hamiltonian
    if which == "butanol":  # stored grouped already (C, O, H): interleave the elements
        sh = _shuffled(sh, 0)
    [folder] = write_deeph_folders([sh], tmp_path, fermi_energy=0.0)
    (folder / GEARS_H_FILE).unlink()
    back = read_deeph_folder(folder)
    order = poscar_order(sh.structure.numbers)
    assert not np.array_equal(order, np.arange(len(order)))  # the grouping does permute
    np.testing.assert_array_equal(back.poscar_order, np.arange(len(order)))
    st = back.hamiltonian.structure
    np.testing.assert_array_equal(st.numbers, sh.structure.numbers[order])
    np.testing.assert_array_equal(st.positions, sh.structure.positions[order])
    np.testing.assert_array_equal(st.pbc, sh.structure.pbc)  # T T F / F F F from the shifts
    assert back.hamiltonian.S is not None and sh.S is not None
    assert_block_matrices_close(sh.H, back.hamiltonian.H, rtol=0.0, permutation=order)
    assert_block_matrices_close(sh.S, back.hamiltonian.S, rtol=0.0, permutation=order)


def test_file_layout_matches_the_deeph_format(hbn: LabeledStructure, tmp_path: Path) -> None:
    sh = hbn.hamiltonian
    folder = _export(hbn, tmp_path)
    assert {p.name for p in folder.iterdir()} == {
        POSCAR_FILE,
        INFO_FILE,
        HAMILTONIAN_FILE,
        OVERLAP_FILE,
        GEARS_H_FILE,
    }
    info = json.loads((folder / INFO_FILE).read_text())
    n_orb = int(sh.basis.orbital_offsets(sh.structure.numbers)[-1])
    assert info == {
        "atoms_quantity": 50,
        "orbits_quantity": n_orb,
        "orthogonal_basis": False,
        "spinful": False,
        "fermi_energy_eV": hbn.reference.e_fermi,  # type: ignore[union-attr]
        "elements_orbital_map": {"B": [0, 1, 0, 1, 2], "N": [0, 1, 0, 1, 2]},
    }
    lines = (folder / POSCAR_FILE).read_text().splitlines()
    assert lines[5].split() == ["B", "N"] and lines[6].split() == ["25", "25"]
    assert lines[7] == "Cartesian"
    order = poscar_order(sh.structure.numbers)
    xyz = np.array([[float(v) for v in line.split()] for line in lines[8:58]])
    np.testing.assert_array_equal(xyz, sh.structure.positions[order])  # repr: exact

    h, s = _h5(folder / HAMILTONIAN_FILE), _h5(folder / OVERLAP_FILE)
    assert set(h) == set(s) == {"atom_pairs", "chunk_boundaries", "chunk_shapes", "entries"}
    np.testing.assert_array_equal(h["atom_pairs"], s["atom_pairs"])  # identical, as required
    pairs = h["atom_pairs"]
    assert pairs.dtype == np.int64 and h["entries"].dtype == np.float64
    i, j, shift, _ = block_matrix_rows(sh.H)
    assert pairs.shape == (len(i) + 50, 5)
    np.testing.assert_array_equal(
        h["chunk_boundaries"], np.concatenate([[0], np.cumsum(np.prod(h["chunk_shapes"], 1))])
    )
    assert h["chunk_boundaries"][-1] == h["entries"].size
    # on-site rows (0, 0, 0, i, i) for every atom; every row's partner (-R, j, i) present
    keys = {tuple(r) for r in pairs.tolist()}
    assert all((0, 0, 0, a, a) in keys for a in range(50))
    assert all((-r1, -r2, -r3, b, a) in keys for r1, r2, r3, a, b in keys)
    assert np.all(pairs[:, 2] == 0) and np.any(pairs[:, :2] != 0)
    # a row holds the block of the atoms POSCAR lists at i and j, shift R
    rank = np.argsort(order)
    p = 123
    r1, r2, r3, pi, pj = pairs[p]
    ours = {
        (int(a), int(b), tuple(int(x) for x in n)): k
        for k, (a, b, n) in enumerate(zip(i, j, shift, strict=True))
    }
    oi, oj = int(order[pi]), int(order[pj])
    assert rank[oi] == pi
    block = h["entries"][h["chunk_boundaries"][p] : h["chunk_boundaries"][p + 1]].reshape(
        h["chunk_shapes"][p]
    )
    _, _, _, blocks = block_matrix_rows(sh.H)
    np.testing.assert_array_equal(block, blocks[ours[(oi, oj, (int(r1), int(r2), int(r3)))]])


def test_molecule_without_a_cell_gets_a_box(butanol: LabeledStructure, tmp_path: Path) -> None:
    st = butanol.hamiltonian.structure
    bare = Structure.from_arrays(st.numbers, st.positions, None, False)
    sh = replace(butanol.hamiltonian, structure=bare)
    [folder] = write_deeph_folders([sh], tmp_path, fermi_energy=0.0)
    lines = (folder / POSCAR_FILE).read_text().splitlines()
    box = np.array([[float(v) for v in line.split()] for line in lines[2:5]])
    assert abs(np.linalg.det(box)) > 1.0
    extent = np.ptp(st.positions, axis=0)
    assert np.all(np.linalg.norm(box, axis=1) >= extent + 9.99)
    back = read_deeph_folder(folder)
    np.testing.assert_array_equal(back.hamiltonian.structure.cell, np.zeros((3, 3)))
    assert_block_matrices_close(sh.H, back.hamiltonian.H, rtol=0.0)


def test_export_needs_s_and_several_structures_get_folders(
    butanol: LabeledStructure, hbn: LabeledStructure, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="needs the overlap S"):
        write_deeph_folders([replace(butanol.hamiltonian, S=None)], tmp_path, fermi_energy=0.0)
    paths = write_deeph_folders(
        [butanol.hamiltonian, hbn.hamiltonian], tmp_path / "out", fermi_energy=[1.0, 2.0]
    )
    assert [p.name for p in paths] == ["structure_0000", "structure_0001"]
    assert [read_deeph_folder(p).fermi_energy for p in paths] == [1.0, 2.0]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def _rewrite(path: Path, **changes: np.ndarray) -> None:
    data = _h5(path) | changes
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f.create_dataset(k, data=v)


def test_malformed_directories_name_the_file(hbn: LabeledStructure, tmp_path: Path) -> None:
    folder = _export(hbn, tmp_path)
    h = _h5(folder / HAMILTONIAN_FILE)

    other = h["atom_pairs"].copy()
    other[5, :3] += 7  # one row at another lattice shift
    _rewrite(folder / OVERLAP_FILE, atom_pairs=other)
    with pytest.raises(DeepHFormatError, match="hold different atom_pairs"):
        read_deeph_folder(folder)
    folder = _export(hbn, tmp_path)

    dup = h["atom_pairs"].copy()
    dup[1] = dup[0]
    _rewrite(folder / HAMILTONIAN_FILE, atom_pairs=dup)
    with pytest.raises(DeepHFormatError, match=rf"{HAMILTONIAN_FILE}: rows \[0, 1\] are the same"):
        read_deeph_folder(folder)
    folder = _export(hbn, tmp_path)

    _rewrite(folder / HAMILTONIAN_FILE, chunk_boundaries=h["chunk_boundaries"] + 1)
    with pytest.raises(DeepHFormatError, match="chunk_boundaries do not match"):
        read_deeph_folder(folder)
    folder = _export(hbn, tmp_path)

    info = json.loads((folder / INFO_FILE).read_text())
    (folder / INFO_FILE).write_text(json.dumps(info | {"spinful": True}))
    with pytest.raises(DeepHFormatError, match=rf"{INFO_FILE}: spinful"):
        read_deeph_folder(folder)
    (folder / INFO_FILE).write_text(json.dumps(info | {"orbits_quantity": 649}))
    with pytest.raises(DeepHFormatError, match="orbits_quantity 649"):
        read_deeph_folder(folder)
    (folder / INFO_FILE).write_text(json.dumps(info))

    (folder / OVERLAP_FILE).unlink()
    with pytest.raises(DeepHFormatError, match=f"missing file {OVERLAP_FILE}"):
        read_deeph_folder(folder)
    (folder / INFO_FILE).write_text(json.dumps(info | {"orthogonal_basis": True}))
    assert read_deeph_folder(folder).hamiltonian.S is None  # orthogonal: H alone is complete


def test_non_float_entries_and_complex_are_refused(hbn: LabeledStructure, tmp_path: Path) -> None:
    folder = _export(hbn, tmp_path)
    h = _h5(folder / HAMILTONIAN_FILE)
    _rewrite(folder / HAMILTONIAN_FILE, entries=h["entries"].astype(np.complex128))
    with pytest.raises(DeepHFormatError, match="spinful data are not supported"):
        read_deeph_folder(folder)


def test_prediction_like_input_is_unchanged(hbn: LabeledStructure) -> None:
    """The writer never modifies its input blocks (they are converted into new arrays)."""
    sh: SparseHamiltonian = hbn.hamiltonian
    before = [g.blocks.copy() for g in sh.H.hopping]
    from gears_h_core.io.deeph import deeph_files

    deeph_files(sh, fermi_energy=0.0)
    for g, b in zip(sh.H.hopping, before, strict=True):
        np.testing.assert_array_equal(g.blocks, b)
