"""`gears_h_core.assemble.bands`: band energies, k paths, canonical orthogonalisation, DOS.

The acceptance check of issue 9 is here: the stored DFT blocks of a shipped h-BN snapshot,
put through `band_energies` (the function ``gears_h bands`` and ``gears_h evaluate`` call on
predictions), reproduce GPAW's own eigenvalues at Γ and at the stored off-mesh k point.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gears_h_core.assemble.bands import (
    OverlapNotPositiveDefiniteError,
    band_energies,
    band_path,
    count_negative_eigenvalues,
    gaussian_dos,
    kpoint_mesh,
    linear_kpoint_axis,
)
from gears_h_core.assemble.sparse import hamiltonian_at_k
from gears_h_core.types import BlockMatrix, OnsiteGroup, SparseHamiltonian
from training.data.snapshot import LabeledStructure


def _shifted_overlap(sh: SparseHamiltonian, c: float) -> SparseHamiltonian:
    """S − c·1 (on-site blocks only): S(k) − c·1 at every k, indefinite for c > min eig S."""
    assert sh.S is not None
    onsite = tuple(
        OnsiteGroup(
            z=g.z,
            atoms=g.atoms,
            blocks=g.blocks - np.float32(c) * np.eye(g.blocks.shape[1], dtype=np.float32),
        )
        for g in sh.S.onsite
    )
    return replace(sh, S=BlockMatrix(onsite=onsite, hopping=sh.S.hopping))


def test_reference_blocks_reproduce_dft_eigenvalues(hbn: LabeledStructure) -> None:
    ref = hbn.reference
    assert ref is not None and ref.k_test is not None
    assert ref.eps_gamma is not None and ref.eps_ktest is not None
    bands = band_energies(hbn.hamiltonian, [[0.0, 0.0, 0.0], ref.k_test])
    n_orb = int(hbn.basis.orbital_offsets(hbn.structure.numbers)[-1])
    assert bands.solver == "dense"
    assert bands.eigenvalues.shape == (2, n_orb)
    assert np.all(np.diff(bands.eigenvalues, axis=1) >= 0)
    np.testing.assert_array_equal(bands.kpoints[1], ref.k_test)
    for row, eps in zip(bands.eigenvalues, (ref.eps_gamma, ref.eps_ktest), strict=True):
        assert len(eps) == 124
        np.testing.assert_allclose(row[: len(eps)], eps, rtol=0, atol=1e-4)
    # k and −k differ (off-mesh, complex H(k)) yet have the same spectrum (real H(T))
    back = band_energies(hbn.hamiltonian, [-ref.k_test])
    np.testing.assert_allclose(back.eigenvalues[0], bands.eigenvalues[1], rtol=0, atol=1e-9)


def test_shift_invert_window_is_the_dense_spectrum_near_the_centre(hbn: LabeledStructure) -> None:
    ref = hbn.reference
    assert ref is not None and ref.e_fermi is not None
    k = np.array([[0.0, 0.0, 0.0], [0.25, 0.1, 0.0]])
    dense = band_energies(hbn.hamiltonian, k)
    centre = ref.e_fermi + 2.0  # inside the gap
    window = band_energies(hbn.hamiltonian, k, solver="shift-invert", center=centre, n_window=10)
    assert window.solver == "shift-invert" and window.eigenvalues.shape == (2, 10)
    for row, full in zip(window.eigenvalues, dense.eigenvalues, strict=True):
        nearest = np.sort(full[np.argsort(np.abs(full - centre))[:10]])
        np.testing.assert_allclose(row, nearest, rtol=0, atol=1e-8)
    auto = band_energies(hbn.hamiltonian, k[:1], dense_limit=100, center=centre, n_window=4)
    assert auto.solver == "shift-invert"  # 650 orbitals > dense_limit
    with pytest.raises(ValueError, match="centre energy"):
        band_energies(hbn.hamiltonian, k, solver="shift-invert")


def test_indefinite_overlap_is_reported_with_k_and_count(hbn: LabeledStructure) -> None:
    """S − 0.002: dozens of eigenvalues of S(k) become negative (dzp S(k) reaches ~1e-4)."""
    bad = _shifted_overlap(hbn.hamiltonian, 0.002)
    k = np.array([0.137, 0.291, 0.0])
    _, Sk = hamiltonian_at_k(bad, k)
    assert Sk is not None
    expected = int(np.count_nonzero(np.linalg.eigvalsh(Sk.toarray()) <= 0))
    assert expected > 10
    assert count_negative_eigenvalues(Sk) == expected  # sparse inertia = dense count
    _, Sk_good = hamiltonian_at_k(hbn.hamiltonian, k)
    assert count_negative_eigenvalues(Sk_good) == 0

    with pytest.raises(OverlapNotPositiveDefiniteError, match=r"k = \(0.137, 0.291, 0\)") as err:
        band_energies(bad, [k])
    assert err.value.n_negative == expected and err.value.min_eigenvalue < 0
    assert isinstance(err.value, np.linalg.LinAlgError)  # what `evaluate` catches
    with pytest.raises(OverlapNotPositiveDefiniteError) as err:
        band_energies(bad, [k], solver="shift-invert", center=-3.0)
    assert err.value.n_negative == expected


def test_canonical_orthogonalisation(hbn: LabeledStructure) -> None:
    """Projecting out the smallest-S directions keeps the rest of the problem exact:
    nothing dropped -> the dense spectrum; some dropped -> Ritz values of a subspace, i.e.
    upper bounds of the full eigenvalues (Cauchy interlacing), with the drop counts of S(k)."""
    sh = hbn.hamiltonian
    k = np.array([[0.0, 0.0, 0.0], [0.137, 0.291, 0.0]])
    full = band_energies(sh, k).eigenvalues
    same = band_energies(sh, k, overlap_threshold=1e-6)
    assert np.all(same.n_dropped == 0)
    np.testing.assert_allclose(same.eigenvalues, full, rtol=0, atol=1e-7)

    cut = band_energies(sh, k, overlap_threshold=1e-3)
    for n, kk in enumerate(k):
        _, Sk = hamiltonian_at_k(sh, kk)
        assert cut.n_dropped[n] == np.count_nonzero(np.linalg.eigvalsh(Sk.toarray()) <= 1e-3)
    assert cut.n_dropped.min() > 0
    assert cut.eigenvalues.shape == (2, full.shape[1] - cut.n_dropped.max())
    assert np.all(cut.eigenvalues >= full[:, : cut.eigenvalues.shape[1]] - 1e-8)

    # an indefinite S: the threshold removes every non-positive direction and solves
    bad = band_energies(_shifted_overlap(sh, 0.002), k, overlap_threshold=0.01)
    assert np.all(np.isfinite(bad.eigenvalues)) and bad.n_dropped.min() > 0
    with pytest.raises(ValueError, match="dense solver"):
        band_energies(sh, k, solver="shift-invert", center=0.0, overlap_threshold=0.01)


def test_band_path_of_a_strained_hexagonal_cell(hbn: LabeledStructure) -> None:
    st = hbn.structure
    path = band_path(st, "GMKG", 31)
    # the rattled 5x5 cell is oblique at ASE's default tolerance; its M and K come from the
    # hexagonal lattice recognised within a larger tolerance
    assert path.lattice == "HEX2D" and path.tolerance > 2e-4
    assert path.labels == ("G", "M", "K", "G")
    assert path.kpoints.shape == (31, 3)
    np.testing.assert_allclose(path.kpoints[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(path.kpoints[-1], 0.0, atol=1e-12)
    assert np.all(path.kpoints[:, 2] == 0)  # nothing along the non-periodic axis
    # x is the Cartesian path length and the special points sit on it
    np.testing.assert_allclose(path.x, linear_kpoint_axis(st, path.kpoints), rtol=1e-9)
    assert path.special_x[0] == 0.0 and path.special_x[-1] == pytest.approx(path.x[-1])
    with pytest.raises(ValueError, match=r"special point\(s\) L, Q.*HEX2D has G, M, K"):
        band_path(st, "GLQ", 10)
    default = band_path(st, None, 20, tolerance=2e-4)
    assert default.lattice == "OBL" and default.labels[0] == "G"


def test_a_molecule_has_no_band_path(butanol: LabeledStructure) -> None:
    with pytest.raises(ValueError, match="no periodic axis"):
        band_path(butanol.structure, "GX", 10)
    with pytest.raises(ValueError, match="axis a is not periodic"):
        kpoint_mesh(butanol.structure, [2, 1, 1])
    k, w = kpoint_mesh(butanol.structure, [1, 1, 1])
    np.testing.assert_array_equal(k, [[0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(w, [1.0])
    bands = band_energies(butanol.hamiltonian, k)
    ref = butanol.reference
    assert ref is not None and ref.eps_gamma is not None
    np.testing.assert_allclose(bands.eigenvalues[0], ref.eps_gamma, rtol=0, atol=1e-3)


def test_kpoint_mesh_and_gaussian_dos(hbn: LabeledStructure) -> None:
    k, w = kpoint_mesh(hbn.structure, [3, 2, 1])
    assert k.shape == (6, 3) and w.sum() == pytest.approx(1.0)
    assert {tuple(x) for x in np.round(k * 6).astype(int)} == {
        (a, b, 0) for a in (0, 2, 4) for b in (0, 3)
    }
    eig = np.array([[-1.0, 0.0, 2.0], [-1.0, 0.5, 2.0]])
    weights = np.array([0.25, 0.75])
    e = np.linspace(-4.0, 5.0, 9001)
    dos = gaussian_dos(eig, weights, e, 0.05)
    integral = np.trapezoid(dos, e)
    assert integral == pytest.approx(2 * 3, rel=1e-6)  # both spins × 3 bands
    # the weight of each level: 2·w_k at its energy
    below_zero = np.trapezoid(dos[e < -0.5], e[e < -0.5])
    assert below_zero == pytest.approx(2.0, rel=1e-6)
    near_half = np.trapezoid(dos[(e > 0.25) & (e < 0.75)], e[(e > 0.25) & (e < 0.75)])
    assert near_half == pytest.approx(2 * 0.75, rel=1e-3)
    with pytest.raises(ValueError, match="smearing"):
        gaussian_dos(eig, weights, e, 0.0)
