"""Assembly of stored blocks: grouping, lattice shifts, CSR per shift, Bloch H(k), eigenvalues.

The acceptance test rebuilds H(k), S(k) of every h-BN snapshot with our own code and
reproduces the DFT code's eigenvalues (``ref_eigenvalues.npz``) to 1e-4 eV.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gears_h_core.assemble.blocks import (
    block_matrix_from_rows,
    block_matrix_rows,
    lattice_shifts,
    onsite_blocks,
)
from gears_h_core.assemble.eigen import eigvals_near, generalized_eigvalsh
from gears_h_core.assemble.sparse import (
    bloch_matrix,
    gamma_fold,
    hamiltonian_at_k,
    to_csr_per_shift,
)
from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.structure import Structure
from gears_h_core.types import BlockMatrix
from training.data.safe_npz import load_npz
from training.data.snapshot import LabeledStructure, read_snapshot

# Same rule as tests/conftest.py, needed at collection time to parametrize over snapshots.
_DATA = Path(
    os.environ.get(
        "GEARS_H_SHARED_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data"
    )
)
HBN_SNAPSHOTS = [
    f"{split}/{p.name}"
    for split in ("train", "valid")
    for p in sorted((_DATA / "hbn_pbe_dzp" / split).glob("*"))
    if p.is_dir()
]
EIG_TOL = 1e-4  # eV


@functools.cache
def _read(path: str) -> LabeledStructure:
    return read_snapshot(path)


def _first(folder: Path) -> Path:
    return sorted(p for p in folder.iterdir() if p.is_dir())[0]


@pytest.fixture(scope="module")
def hbn(shared_data: Path) -> LabeledStructure:
    return _read(str(_first(shared_data / "hbn_pbe_dzp" / "valid")))


def _max_dev(eps: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(eps[: ref.shape[0]] - ref)


# --------------------------------------------------------------------------------------
# acceptance: stored blocks reproduce the DFT eigenvalues


@pytest.mark.parametrize("snapshot", HBN_SNAPSHOTS)
def test_hbn_blocks_reproduce_reference_eigenvalues(shared_data: Path, snapshot: str) -> None:
    ls = _read(str(shared_data / "hbn_pbe_dzp" / snapshot))
    ref = ls.reference
    assert ref is not None and ref.eps_gamma is not None and ref.eps_ktest is not None
    assert ref.k_test is not None
    for k, eps_ref in (((0.0, 0.0, 0.0), ref.eps_gamma), (ref.k_test, ref.eps_ktest)):
        Hk, Sk = hamiltonian_at_k(ls.hamiltonian, k)
        eps = generalized_eigvalsh(Hk, Sk)
        assert eps.dtype == np.float64 and eps.shape == (650,)
        dev = _max_dev(eps, eps_ref)
        assert dev.max() <= EIG_TOL, f"{snapshot} k={k}: max deviation {dev.max():.3g} eV"


@pytest.mark.parametrize("index", [0, 1])
def test_butanol_blocks_reproduce_reference_eigenvalues(shared_data: Path, index: int) -> None:
    folder = sorted((shared_data / "butanol_pbe_def2svp" / "valid").iterdir())[index]
    ls = _read(str(folder))
    ref = ls.reference
    assert ref is not None and ref.eps_gamma is not None and ref.e_fermi is not None
    assert ref.eps_ktest is None and ref.k_test is None and ref.homo is not None
    Hk, Sk = hamiltonian_at_k(ls.hamiltonian, (0.0, 0.0, 0.0))
    eps = generalized_eigvalsh(Hk, Sk)
    assert eps.shape == ref.eps_gamma.shape == (120,)
    dev = _max_dev(eps, ref.eps_gamma)
    near = np.abs(ref.eps_gamma - ref.e_fermi) <= 10.0
    assert dev[near].max() <= EIG_TOL
    assert dev.max() <= 1e-3  # float32 rounding of core levels (≈ −500 eV)


def test_mos2_blocks_reproduce_reference_eigenvalues(shared_data: Path) -> None:
    ls = _read(str(_first(shared_data / "mos2_pbe_dzp" / "valid")))
    ref = ls.reference
    assert ref is not None and ref.e_fermi is not None and ref.k_test is not None
    assert ref.eps_gamma is not None and ref.eps_ktest is not None
    # Mo self-image rows (i, i, n != 0) are present and handled like any other row.
    i, j, shift, _ = block_matrix_rows(ls.hamiltonian.H)
    assert np.any((i == j) & np.any(shift != 0, axis=1))
    for k, eps_ref in (((0.0, 0.0, 0.0), ref.eps_gamma), (ref.k_test, ref.eps_ktest)):
        Hk, Sk = hamiltonian_at_k(ls.hamiltonian, k)
        dev = _max_dev(generalized_eigvalsh(Hk, Sk), eps_ref)
        near = np.abs(eps_ref - ref.e_fermi) <= 5.0
        assert dev[near].max() <= EIG_TOL
        assert dev.max() <= 1e-3


# --------------------------------------------------------------------------------------
# Bloch matrices


def test_bloch_matrix_is_hermitian_and_conjugate_at_minus_k(hbn: LabeledStructure) -> None:
    rng = np.random.default_rng(7)
    k = rng.uniform(-0.5, 0.5, 3) * np.array([1.0, 1.0, 0.0])
    sh = hbn.hamiltonian
    for bm in (sh.H, sh.S):
        assert bm is not None
        hk = bloch_matrix(bm, sh.basis, sh.structure.numbers, k)
        assert isinstance(hk, sp.csr_array) and hk.dtype == np.complex128
        dense = hk.toarray()
        assert np.abs(dense.imag).max() > 1e-3  # genuinely complex at this k
        np.testing.assert_allclose(dense, dense.conj().T, rtol=0, atol=1e-12)
        minus = bloch_matrix(bm, sh.basis, sh.structure.numbers, -k).toarray()
        np.testing.assert_allclose(minus, dense.conj(), rtol=0, atol=1e-12)


def test_bloch_at_gamma_equals_gamma_fold(hbn: LabeledStructure) -> None:
    sh = hbn.hamiltonian
    at_gamma = bloch_matrix(sh.H, sh.basis, sh.structure.numbers, [0, 0, 0])
    folded = gamma_fold(sh.H, sh.basis, sh.structure.numbers)
    assert abs(at_gamma - folded).max() < 1e-12
    # Periodic images with a phase: k = (1, 0, 0) is again Γ (integer k).
    at_g1 = bloch_matrix(sh.H, sh.basis, sh.structure.numbers, [1, 0, 0])
    assert abs(at_g1 - folded).max() < 1e-9


def test_hamiltonian_at_k_without_overlap(shared_data: Path) -> None:
    folder = _first(shared_data / "wse2_gearsh_example" / "training_data")
    ls = _read(str(folder))
    Hk, Sk = hamiltonian_at_k(ls.hamiltonian, [0, 0, 0])
    assert Sk is None and Hk.shape == (963, 963)


# --------------------------------------------------------------------------------------
# CSR per shift


def _blocks_from_csr(
    csr: dict[tuple[int, int, int], sp.csr_array],
    offsets: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    shift: np.ndarray,
) -> list[np.ndarray]:
    out = []
    for a, b, n in zip(i, j, shift, strict=True):
        m = csr[(int(n[0]), int(n[1]), int(n[2]))]
        out.append(m[offsets[a] : offsets[a + 1], offsets[b] : offsets[b + 1]].toarray())
    return out


def _assert_same_block_matrix(a: BlockMatrix, b: BlockMatrix) -> None:
    assert [g.z for g in a.onsite] == [g.z for g in b.onsite]
    for ga, gb in zip(a.onsite, b.onsite, strict=True):
        np.testing.assert_array_equal(ga.atoms, gb.atoms)
        np.testing.assert_array_equal(ga.blocks, gb.blocks)
    assert [(g.z_i, g.z_j) for g in a.hopping] == [(g.z_i, g.z_j) for g in b.hopping]
    for ha, hb in zip(a.hopping, b.hopping, strict=True):
        for name in ("i", "j", "shift", "blocks"):
            np.testing.assert_array_equal(getattr(ha, name), getattr(hb, name))


def test_csr_per_shift_round_trip(hbn: LabeledStructure) -> None:
    sh = hbn.hamiltonian
    numbers = sh.structure.numbers
    offsets = sh.basis.orbital_offsets(numbers)
    csr = to_csr_per_shift(sh.H, sh.basis, numbers)
    assert (0, 0, 0) in csr and all(m.shape == (650, 650) for m in csr.values())
    assert all(key[2] == 0 for key in csr)  # 2D periodic
    assert list(csr) == sorted(csr)
    i, j, shift, _ = block_matrix_rows(sh.H)
    rebuilt = block_matrix_from_rows(
        numbers,
        sh.basis,
        [
            csr[(0, 0, 0)][offsets[a] : offsets[a + 1], offsets[a] : offsets[a + 1]].toarray()
            for a in range(sh.structure.n_atoms)
        ],
        i,
        j,
        shift,
        _blocks_from_csr(csr, offsets, i, j, shift),
    )
    _assert_same_block_matrix(rebuilt, sh.H)


def test_gamma_fold_is_the_sum_over_shifts(hbn: LabeledStructure) -> None:
    sh = hbn.hamiltonian
    numbers = sh.structure.numbers
    csr = to_csr_per_shift(sh.S, sh.basis, numbers, dtype=np.float64)  # type: ignore[arg-type]
    total = sum(csr.values())
    folded = gamma_fold(sh.S, sh.basis, numbers)  # type: ignore[arg-type]
    assert folded.dtype == np.float64
    assert abs(folded - total).max() < 1e-12


# --------------------------------------------------------------------------------------
# block grouping


def _synthetic() -> tuple[
    np.ndarray, OrbitalBasis, list[np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]
]:
    rng = np.random.default_rng(0)
    basis = OrbitalBasis({1: (0, 0, 1), 8: (0, 1, 2)})
    numbers = np.array([8, 1, 1, 8])
    n = basis.orbital_counts(numbers)
    onsite = [rng.normal(size=(k, k)).astype(np.float32) for k in n]
    i = np.array([3, 0, 1, 2, 0, 1, 3, 2])
    j = np.array([0, 3, 0, 0, 1, 2, 1, 1])
    shift = np.array(
        [[1, 0, 0], [-1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, -1, 0]]
    )
    blocks = [rng.normal(size=(n[a], n[b])).astype(np.float32) for a, b in zip(i, j, strict=True)]
    return numbers, basis, onsite, i, j, shift, blocks


def test_block_matrix_groups_and_canonical_rows() -> None:
    numbers, basis, onsite, i, j, shift, blocks = _synthetic()
    bm = block_matrix_from_rows(numbers, basis, onsite, i, j, shift, blocks)
    assert [g.z for g in bm.onsite] == [1, 8]
    assert [(g.z_i, g.z_j) for g in bm.hopping] == [(1, 1), (1, 8), (8, 1), (8, 8)]
    assert bm.n_pairs == len(i)
    for g in bm.hopping:
        assert g.blocks.dtype == np.float32 and g.shift.dtype == np.int32
        assert g.blocks.shape == (g.i.shape[0], basis.n_orb(g.z_i), basis.n_orb(g.z_j))
    ri, rj, rs, rb = block_matrix_rows(bm)
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], j, i))
    np.testing.assert_array_equal(ri, i[order])
    np.testing.assert_array_equal(rj, j[order])
    np.testing.assert_array_equal(rs, shift[order])
    for got, p in zip(rb, order, strict=True):
        np.testing.assert_array_equal(got, blocks[p])
    for got, want in zip(onsite_blocks(bm, 4), onsite, strict=True):
        np.testing.assert_array_equal(got, want)
    # Building again from the canonical rows gives the same groups.
    _assert_same_block_matrix(
        block_matrix_from_rows(numbers, basis, onsite_blocks(bm, 4), ri, rj, rs, rb), bm
    )


def test_block_matrix_rejects_wrong_block_shape() -> None:
    numbers, basis, onsite, i, j, shift, blocks = _synthetic()
    blocks[5] = blocks[5][:, :-1]
    with pytest.raises(
        ValueError, match=r"hopping row 5: block has shape \(5, 4\), expected \(5, 5\)"
    ):
        block_matrix_from_rows(numbers, basis, onsite, i, j, shift, blocks)
    numbers, basis, onsite, i, j, shift, blocks = _synthetic()
    with pytest.raises(ValueError, match="on-site blocks: 3 given for 4 atoms"):
        block_matrix_from_rows(numbers, basis, onsite[:3], i, j, shift, blocks)
    with pytest.raises(ValueError, match="row 2: atom index"):
        block_matrix_from_rows(
            numbers, basis, onsite, i, np.where(np.arange(8) == 2, 9, j), shift, blocks
        )


def test_onsite_blocks_reports_missing_atom() -> None:
    numbers, basis, onsite, i, j, shift, blocks = _synthetic()
    bm = block_matrix_from_rows(numbers, basis, onsite, i, j, shift, blocks)
    with pytest.raises(ValueError, match="atom 4: no on-site block"):
        onsite_blocks(bm, 5)


# --------------------------------------------------------------------------------------
# lattice shifts


def test_lattice_shifts_hbn_and_butanol(shared_data: Path) -> None:
    folder = _first(shared_data / "hbn_pbe_dzp" / "train")
    ls = _read(str(folder))
    ijd = load_npz(folder / "ijD.npz")
    ij, D = ijd["ij"], ijd["D"]
    st = ls.structure
    n = lattice_shifts(st, ij[:, 0], ij[:, 1], D)
    assert n.dtype == np.int32 and n.shape == D.shape
    assert np.all(n[:, 2] == 0) and np.any(n[:, :2] != 0)
    rebuilt = st.positions[ij[:, 1]] + n @ st.cell - st.positions[ij[:, 0]]
    np.testing.assert_allclose(rebuilt, D, atol=1e-6)

    folder = _first(shared_data / "butanol_pbe_def2svp" / "train")
    ls = _read(str(folder))
    ijd = load_npz(folder / "ijD.npz")
    n = lattice_shifts(ls.structure, ijd["ij"][:, 0], ijd["ij"][:, 1], ijd["D"])
    assert not np.any(n)


def test_lattice_shifts_rejects_bad_rows() -> None:
    cell = np.diag([3.0, 4.0, 20.0])
    st = Structure.from_arrays(
        [1, 1], [[0, 0, 0], [1.0, 1.0, 1.0]], cell, [True, True, False], validate=False
    )
    i, j = np.array([0, 0, 1]), np.array([1, 1, 0])
    D = np.array([[1.0, 1.0, 1.0], [4.0, -3.0, 1.0], [-1.0, -1.0, -1.0]])
    np.testing.assert_array_equal(lattice_shifts(st, i, j, D), [[0, 0, 0], [1, -1, 0], [0, 0, 0]])
    bad = D.copy()
    bad[2, 0] += 0.3
    with pytest.raises(ValueError, match=r"row 2 \(i=1, j=0\).*not an integer vector"):
        lattice_shifts(st, i, j, bad)
    bad = D.copy()
    bad[1, 2] += 20.0  # a whole cell vector along the non-periodic axis
    with pytest.raises(ValueError, match=r"row 1 \(i=0, j=1\).*outside the periodic lattice"):
        lattice_shifts(st, i, j, bad)
    molecule = Structure.from_arrays(
        [1, 1], [[0, 0, 0], [1.0, 0, 0]], np.eye(3) * 24, False, validate=False
    )
    with pytest.raises(ValueError, match="row 0"):
        lattice_shifts(molecule, [0], [1], [[25.0, 0, 0]])


# --------------------------------------------------------------------------------------
# eigenvalues


def test_eigvals_near_matches_dense(hbn: LabeledStructure) -> None:
    ref = hbn.reference
    assert ref is not None and ref.e_fermi is not None and ref.k_test is not None
    for k in ((0.0, 0.0, 0.0), ref.k_test):
        Hk, Sk = hamiltonian_at_k(hbn.hamiltonian, k)
        dense = generalized_eigvalsh(Hk, Sk)
        near = eigvals_near(Hk, Sk, ref.e_fermi, 12)
        assert near.dtype == np.float64 and near.shape == (12,)
        want = np.sort(dense[np.argsort(np.abs(dense - ref.e_fermi))[:12]])
        np.testing.assert_allclose(near, want, rtol=0, atol=1e-8)


def test_eigen_limits_and_standard_problem() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(30, 30)) + 1j * rng.normal(size=(30, 30))
    h = a + a.conj().T
    dense = generalized_eigvalsh(sp.csr_array(h), None)
    np.testing.assert_allclose(dense, np.linalg.eigvalsh(h), atol=1e-10)
    near = eigvals_near(sp.csr_array(h), None, 0.1, 4)
    want = np.sort(dense[np.argsort(np.abs(dense - 0.1))[:4]])
    np.testing.assert_allclose(near, want, atol=1e-8)
    with pytest.raises(ValueError, match="refused"):
        generalized_eigvalsh(h, None, max_size=20)
    with pytest.raises(ValueError, match="does not match"):
        generalized_eigvalsh(h, np.eye(29))
    with pytest.raises(ValueError, match="need 1 ≤ n < N"):
        eigvals_near(h, None, 0.0, 30)
