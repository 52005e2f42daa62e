"""Neighbour lists with lattice shifts: brute-force reference, invariances, partners, data."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from gears_h_core.graph.neighbors import (
    build_neighbor_graph,
    canonical_pair_mask,
    neighbor_pairs,
    pair_partner_index,
)
from gears_h_core.structure import Structure, StructureError

# ----------------------------------------------------------------------------- helpers


def brute_force(structure: Structure, cutoff: float) -> dict[tuple[int, ...], np.ndarray]:
    """{(i, j, n0, n1, n2): D} by an explicit loop over image shifts (numpy reference)."""
    cell, pbc, pos = structure.cell, structure.pbc, structure.positions
    ranges = []
    for axis in range(3):
        if not pbc[axis]:
            ranges.append(range(1))
            continue
        others = [cell[b] for b in range(3) if b != axis]
        normal = np.cross(*others) if np.linalg.norm(np.cross(*others)) > 0 else cell[axis]
        height = abs(cell[axis] @ normal) / np.linalg.norm(normal)
        extent = np.ptp(pos, axis=0).max() if len(pos) else 0.0
        m = int(np.ceil((cutoff + extent) / height)) + 1
        ranges.append(range(-m, m + 1))
    out: dict[tuple[int, ...], np.ndarray] = {}
    for n in itertools.product(*ranges):
        shift = np.array(n, dtype=np.float64)
        vec = pos[None, :, :] + shift @ cell - pos[:, None, :]  # [i, j, 3]
        dist = np.linalg.norm(vec, axis=-1)
        for a, b in zip(*np.nonzero(dist <= cutoff), strict=True):
            if a == b and not any(n):
                continue
            out[(int(a), int(b), *n)] = vec[a, b]
    return out


def as_dict(i, j, shift, vec) -> dict[tuple[int, ...], np.ndarray]:
    return {
        (int(a), int(b), *(int(s) for s in n)): v
        for a, b, n, v in zip(i, j, shift, vec, strict=True)
    }


def vectors(structure: Structure, i, j, shift) -> np.ndarray:
    pos = structure.positions
    return pos[j] + shift @ structure.cell - pos[i]


def assert_matches_brute_force(structure: Structure, cutoff: float) -> None:
    i, j, shift, dist = neighbor_pairs(structure, cutoff)
    assert i.dtype == np.int32 and j.dtype == np.int32 and shift.dtype == np.int32
    assert dist.dtype == np.float64 and shift.shape == (len(i), 3)
    vec = vectors(structure, i, j, shift)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), dist, rtol=0, atol=1e-12)
    assert np.all(dist <= cutoff)
    assert not np.any((i == j) & np.all(shift == 0, axis=1))
    assert np.all(shift[:, ~structure.pbc] == 0)
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], j, i))
    np.testing.assert_array_equal(order, np.arange(len(i)))
    got = as_dict(i, j, shift, vec)
    ref = brute_force(structure, cutoff)
    assert len(got) == len(i)  # no duplicate rows
    assert got.keys() == ref.keys()
    for key, v in ref.items():
        np.testing.assert_allclose(got[key], v, rtol=0, atol=1e-10)


def sorted_rows(i, j, vec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows in an order that depends only on (i, j, vec) (shift-free comparison)."""
    r = np.round(vec, 4)
    order = np.lexsort((r[:, 2], r[:, 1], r[:, 0], j, i))
    return np.asarray(i)[order], np.asarray(j)[order], np.asarray(vec)[order]


def assert_same_rows(a: tuple, b: tuple) -> None:
    ia, ja, va = sorted_rows(*a)
    ib, jb, vb = sorted_rows(*b)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(ja, jb)
    np.testing.assert_allclose(va, vb, rtol=0, atol=1e-9)


TRICLINIC = np.array([[4.1, 0.0, 0.0], [1.3, 3.7, 0.0], [0.6, -0.8, 4.4]])


def random_crystal(seed: int = 0, n: int = 6, cell: np.ndarray = TRICLINIC) -> Structure:
    rng = np.random.default_rng(seed)
    frac = rng.random((n, 3))
    return Structure.from_arrays(
        rng.choice([5, 7, 6], size=n), frac @ cell, cell, True, validate=False
    )


def slab(cell_z: float) -> Structure:
    """Small in-plane cell (2.5 Å) so that self-images fall inside the cutoff."""
    cell = np.array([[2.5, 0.0, 0.0], [1.25, 2.165, 0.0], [0.0, 0.0, cell_z]])
    pos = np.array([[0.0, 0.0, 0.0], [1.25, 0.72, 0.3], [0.4, 1.5, 3.1]])
    return Structure.from_arrays([5, 7, 6], pos, cell, [True, True, False])


def molecule(cell: np.ndarray | None = None) -> Structure:
    rng = np.random.default_rng(3)
    pos = rng.normal(scale=2.0, size=(9, 3)) + 12.0
    return Structure.from_arrays([6, 1, 1, 8, 1, 6, 1, 1, 1], pos, cell, False, validate=False)


# ----------------------------------------------------------------------------- brute force


def test_triclinic_periodic_matches_brute_force() -> None:
    assert_matches_brute_force(random_crystal(0), 5.5)


def test_left_handed_cell_matches_brute_force() -> None:
    assert_matches_brute_force(random_crystal(1, cell=TRICLINIC[[0, 2, 1]]), 5.0)


@pytest.mark.parametrize("cell_z", [0.0, 1.0, 20.0])
def test_slab_matches_brute_force_with_self_images(cell_z: float) -> None:
    s = slab(cell_z)
    assert_matches_brute_force(s, 6.0)
    i, j, shift, _ = neighbor_pairs(s, 6.0)
    assert np.any((i == j) & np.any(shift != 0, axis=1))  # periodic self-images kept
    pairs = np.column_stack([i, j])
    _, counts = np.unique(pairs, axis=0, return_counts=True)
    assert counts.max() > 1  # several images of the same (i, j) are distinct rows


def test_slab_with_tilted_nonperiodic_vector() -> None:
    base = slab(10.0)
    cell = base.cell.copy()
    cell[2] = [3.0, -2.0, 1.0]
    tilted = Structure(base.numbers, base.positions, cell, base.pbc)
    assert_matches_brute_force(tilted, 6.0)


def test_molecule_zero_cell_and_dummy_box() -> None:
    mol = molecule()
    assert_matches_brute_force(mol, 3.5)
    boxed = molecule(np.eye(3) * 24.0)
    for a, b in zip(neighbor_pairs(mol, 3.5), neighbor_pairs(boxed, 3.5), strict=True):
        np.testing.assert_array_equal(a, b)


def test_small_cell_many_images() -> None:
    cell = np.array([[1.6, 0.0, 0.0], [0.3, 1.5, 0.0], [0.2, 0.1, 1.7]])
    s = random_crystal(2, n=2, cell=cell)
    assert_matches_brute_force(s, 7.0)
    _, _, shift, _ = neighbor_pairs(s, 7.0)
    assert np.abs(shift).max() >= 4


def test_invalid_cutoff() -> None:
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_pairs(random_crystal(0), 0.0)
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_pairs(random_crystal(0), float("nan"))


# ----------------------------------------------------------------------------- invariances


def test_translation_by_lattice_vector_adjusts_shifts() -> None:
    s = random_crystal(4)
    k = 2
    pos = s.positions.copy()
    pos[k] += s.cell[0] - 2 * s.cell[2]
    moved = Structure(s.numbers, pos, s.cell, s.pbc)
    i, j, shift, _ = neighbor_pairs(s, 5.0)
    i2, j2, shift2, _ = neighbor_pairs(moved, 5.0)
    delta = np.zeros((s.n_atoms, 3), dtype=np.int64)
    delta[k] = [1, 0, -2]
    expected = shift + delta[i] - delta[j]  # keeps D = r_j + n·cell − r_i
    assert set(zip(i2, j2, map(tuple, shift2), strict=True)) == set(
        zip(i, j, map(tuple, expected), strict=True)
    )
    assert_same_rows((i, j, vectors(s, i, j, shift)), (i2, j2, vectors(moved, i2, j2, shift2)))


@pytest.mark.parametrize("wrap", [False, True])
def test_permutation_and_wrapping(wrap: bool) -> None:
    s = random_crystal(5, n=7)
    rng = np.random.default_rng(11)
    # unwrap on purpose: random lattice translations per atom
    pos = s.positions + rng.integers(-2, 3, size=(s.n_atoms, 3)) @ s.cell
    perm = rng.permutation(s.n_atoms)  # atom a moves to index perm[a]
    new_pos = np.empty_like(pos)
    new_pos[perm] = pos
    new_numbers = np.empty_like(s.numbers)
    new_numbers[perm] = s.numbers
    if wrap:
        frac = new_pos @ np.linalg.inv(s.cell)
        new_pos = (frac - np.floor(frac)) @ s.cell
    other = Structure(new_numbers, new_pos, s.cell, s.pbc)
    g1 = build_neighbor_graph(s, 4.5, 5.5)
    g2 = build_neighbor_graph(other, 4.5, 5.5)
    assert_same_rows(
        (perm[g1.edge_i], perm[g1.edge_j], g1.edge_vec), (g2.edge_i, g2.edge_j, g2.edge_vec)
    )
    assert_same_rows(
        (perm[g1.pair_i], perm[g1.pair_j], g1.pair_vec), (g2.pair_i, g2.pair_j, g2.pair_vec)
    )


# ----------------------------------------------------------------------------- partners


@pytest.mark.parametrize("structure", [random_crystal(6), slab(0.0), molecule()])
def test_partners_and_canonical_half(structure: Structure) -> None:
    i, j, shift, _ = neighbor_pairs(structure, 5.0)
    p = pair_partner_index(i, j, shift)
    np.testing.assert_array_equal(p[p], np.arange(len(i)))  # involution
    np.testing.assert_array_equal(i[p], j)
    np.testing.assert_array_equal(j[p], i)
    np.testing.assert_array_equal(shift[p], -shift)
    assert not np.any(p == np.arange(len(i)))  # no self partner: the self pair is excluded
    mask = canonical_pair_mask(i, j, shift)
    assert mask.dtype == bool and mask.sum() * 2 == len(i)
    assert np.all(mask ^ mask[p])  # exactly one of each couple


def test_canonical_rule_for_self_images() -> None:
    i = np.array([0, 0, 0, 0, 1, 0])
    j = np.array([0, 0, 0, 0, 0, 1])
    shift = np.array([[0, 1, 0], [0, -1, 0], [1, -3, 0], [-1, 3, 0], [2, 2, 0], [-2, -2, 0]])
    mask = canonical_pair_mask(i, j, shift)
    np.testing.assert_array_equal(mask, [True, False, True, False, False, True])
    np.testing.assert_array_equal(pair_partner_index(i, j, shift), [1, 0, 3, 2, 5, 4])


def test_missing_partner_and_duplicate_rows_raise() -> None:
    i, j, shift, _ = neighbor_pairs(random_crystal(7), 4.0)
    keep = np.ones(len(i), bool)
    keep[5] = False
    p = pair_partner_index(i, j, shift)
    partner_of_removed = int(p[5]) - (1 if p[5] > 5 else 0)
    with pytest.raises(ValueError, match=rf"row {partner_of_removed} .*no partner"):
        pair_partner_index(i[keep], j[keep], shift[keep])
    dup = np.r_[np.arange(len(i)), 3]
    with pytest.raises(ValueError, match="occurs twice"):
        pair_partner_index(i[dup], j[dup], shift[dup])
    assert pair_partner_index(i[:0], j[:0], shift[:0]).shape == (0,)


# ----------------------------------------------------------------------------- graph


def test_per_species_pair_cutoffs() -> None:
    s = random_crystal(8, n=9)  # species 5, 6, 7
    cutoffs = {(5, 5): 3.0, (7, 5): 4.5, (6, 7): 5.0}  # (5,6), (6,6), (7,7) absent
    g = build_neighbor_graph(s, 3.5, cutoffs)
    table = {(5, 5): 3.0, (5, 7): 4.5, (6, 7): 5.0}
    z = s.numbers
    ref_i, ref_j, ref_shift, ref_dist = neighbor_pairs(s, 5.0)
    keep = np.array(
        [
            d <= table.get((min(z[a], z[b]), max(z[a], z[b])), -1.0)
            for a, b, d in zip(ref_i, ref_j, ref_dist, strict=True)
        ]
    )
    assert 0 < keep.sum() < len(keep)
    np.testing.assert_array_equal(g.pair_i, ref_i[keep])
    np.testing.assert_array_equal(g.pair_j, ref_j[keep])
    np.testing.assert_array_equal(g.pair_shift, ref_shift[keep])
    pair_dist = np.linalg.norm(g.pair_vec, axis=1)
    limits = np.array(
        [table[(min(z[a], z[b]), max(z[a], z[b]))] for a, b in zip(g.pair_i, g.pair_j, strict=True)]
    )
    assert np.all(pair_dist <= limits)
    ei, ej, eshift, edist = neighbor_pairs(s, 3.5)
    np.testing.assert_array_equal(g.edge_i, ei)
    np.testing.assert_array_equal(g.edge_j, ej)
    np.testing.assert_array_equal(g.edge_shift, eshift)
    np.testing.assert_allclose(np.linalg.norm(g.edge_vec, axis=1), edist, atol=1e-12)
    assert g.edge_vec.dtype == np.float64 and g.pair_vec.dtype == np.float64
    p = pair_partner_index(g.pair_i, g.pair_j, g.pair_shift)  # filtering keeps partners
    np.testing.assert_array_equal(p[p], np.arange(g.n_pairs))


def test_scalar_pair_cutoff_and_bad_mappings() -> None:
    s = random_crystal(9)
    g = build_neighbor_graph(s, 5.0, 3.0)
    i, j, shift, _ = neighbor_pairs(s, 3.0)
    np.testing.assert_array_equal(g.pair_i, i)
    np.testing.assert_array_equal(g.pair_j, j)
    np.testing.assert_array_equal(g.pair_shift, shift)
    assert g.n_edges == len(neighbor_pairs(s, 5.0)[0])
    assert build_neighbor_graph(s, 3.0, {}).n_pairs == 0
    with pytest.raises(ValueError, match="given twice"):
        build_neighbor_graph(s, 3.0, {(5, 7): 3.0, (7, 5): 4.0})
    with pytest.raises(ValueError, match="pair_cutoff"):
        build_neighbor_graph(s, 3.0, {(5, 7): -1.0})
    with pytest.raises(ValueError, match="invalid atomic number"):
        build_neighbor_graph(s, 3.0, {(0, 7): 3.0})


# ----------------------------------------------------------------------------- validation


def test_close_contacts_rejected_through_neighbor_pairs() -> None:
    with pytest.raises(StructureError, match=r"atom 0: closer than .* to atom 1"):
        Structure.from_arrays([1, 1], [[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]])
    with pytest.raises(StructureError, match=r"atom 0: .*its own periodic image"):
        Structure.from_arrays(
            [1], [[0.0, 0.0, 0.0]], np.diag([0.05, 5.0, 5.0]), [True, False, False]
        )
    ok = Structure.from_arrays([1, 1], [[0.0, 0.0, 0.0], [0.74, 0.0, 0.0]])
    assert ok.n_atoms == 2


# ----------------------------------------------------------------------------- shipped data


def first_snapshot(folder: Path) -> Path:
    return sorted(p for p in folder.iterdir() if p.is_dir())[0]


@pytest.mark.parametrize("dataset", ["hbn_pbe_dzp/train", "mos2_pbe_dzp/train"])
def test_shift_convention_matches_data(shared_data: Path, dataset: str) -> None:
    from ase.io import read

    folder = first_snapshot(shared_data / dataset)
    structure = Structure.from_ase(read(folder / "atoms.extxyz"))
    ijd = np.load(folder / "ijD.npz")
    ij, D = ijd["ij"], ijd["D"]
    cutoff = float(np.linalg.norm(D, axis=1).max()) + 1e-6
    i, j, shift, _ = neighbor_pairs(structure, cutoff)
    ours = vectors(structure, i, j, shift)
    index = {
        (int(a), int(b), *(int(x) for x in n)): k
        for k, (a, b, n) in enumerate(zip(i, j, shift, strict=True))
    }
    pos = structure.positions
    frac = (D - (pos[ij[:, 1]] - pos[ij[:, 0]])) @ np.linalg.inv(structure.cell)
    n = np.rint(frac).astype(np.int64)
    np.testing.assert_allclose(frac, n, atol=1e-6)
    rows = []
    for (a, b), shift_ab in zip(ij, n, strict=True):
        key = (int(a), int(b), *(int(x) for x in shift_ab))
        assert key in index, f"stored row {key} missing from our pairs"
        rows.append(index[key])
    np.testing.assert_allclose(ours[rows], D, rtol=0, atol=1e-8)
    if dataset.startswith("mos2"):
        assert np.any(ij[:, 0] == ij[:, 1])  # the data's self-image rows were matched
