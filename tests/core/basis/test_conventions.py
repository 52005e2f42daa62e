"""Orbital conventions proven by evaluating the harmonics: Q_l, Wigner matrices, PySCF table."""

from __future__ import annotations

import math

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from scipy.spatial.transform import Rotation

from gears_h_core.basis.conventions import (
    PYSCF_TO_GPAW,
    R_CYC,
    convert_block,
    gpaw_to_e3nn,
    orbital_permutation,
    pyscf_to_gpaw_permutation,
    wigner_e3nn,
    wigner_for_shells,
    wigner_gpaw,
)

L_MAX_CHECK = 6
SQPI = math.sqrt(math.pi)


def _unit_points(n: int, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed).normal(size=(n, 3))
    return r / np.linalg.norm(r, axis=1, keepdims=True)


def gpaw_explicit(ell: int, r: np.ndarray) -> np.ndarray:
    """GPAW's real harmonics for l <= 3 written out, orthonormal on the unit sphere.

    Components and signs from GPAW ``gpaw/spherical_harmonics.py`` (``names`` and ``YL``:
    e.g. l = 3, m = -3: -0.5900 y³ + 1.7701 x²y; m = -1: -0.4570 y³ + 1.8282 yz² - 0.4570 x²y).

    Args:
        r: unit vectors ``[n, 3]``. Returns ``[n, 2l+1]``, m = -ell..ell.
    """
    x, y, z = r.T
    if ell == 0:
        comps = [np.full_like(x, 0.5 / SQPI)]
    elif ell == 1:
        c = math.sqrt(3 / (4 * math.pi))
        comps = [c * y, c * z, c * x]
    elif ell == 2:
        c = math.sqrt(15 / (4 * math.pi))
        comps = [
            c * x * y,
            c * y * z,
            math.sqrt(5 / (16 * math.pi)) * (3 * z**2 - 1),
            c * x * z,
            0.5 * c * (x**2 - y**2),
        ]
    elif ell == 3:
        comps = [
            math.sqrt(35 / (32 * math.pi)) * (3 * x**2 * y - y**3),
            math.sqrt(105 / (4 * math.pi)) * x * y * z,
            math.sqrt(21 / (32 * math.pi)) * y * (4 * z**2 - x**2 - y**2),
            math.sqrt(7 / (16 * math.pi)) * z * (2 * z**2 - 3 * x**2 - 3 * y**2),
            math.sqrt(21 / (32 * math.pi)) * x * (4 * z**2 - x**2 - y**2),
            math.sqrt(105 / (16 * math.pi)) * z * (x**2 - y**2),
            math.sqrt(35 / (32 * math.pi)) * (x**3 - 3 * x * y**2),
        ]
    else:
        raise ValueError(ell)
    return np.stack(comps, axis=-1)


def real_harmonics(ell: int, r: np.ndarray) -> np.ndarray:
    """Real harmonics without Condon–Shortley phase for any l (GPAW's rule), ``[n, 2l+1]``.

    m > 0: N P_l^m(cos θ) cos(mφ); m < 0: N P_l^|m|(cos θ) sin(|m|φ); scipy's ``lpmv``
    includes the (-1)^m phase, which is removed here.
    """
    x, y, z = r.T
    phi = np.arctan2(y, x)
    out = []
    for m in range(-ell, ell + 1):
        am = abs(m)
        norm = math.sqrt(
            (2 * ell + 1) / (4 * math.pi) * math.factorial(ell - am) / math.factorial(ell + am)
        )
        p = (-1) ** am * scipy.special.lpmv(am, ell, np.clip(z, -1, 1))
        if m > 0:
            out.append(math.sqrt(2) * norm * p * np.cos(m * phi))
        elif m < 0:
            out.append(math.sqrt(2) * norm * p * np.sin(am * phi))
        else:
            out.append(norm * p)
    return np.stack(out, axis=-1)


def e3nn_harmonics(lmax: int, r: np.ndarray) -> list[np.ndarray]:
    """e3nn-jax harmonics (normalize=True, normalization="integral"), float64, one per l."""
    irreps = e3nn.Irreps([(1, (ell, (-1) ** ell)) for ell in range(lmax + 1)])
    with jax.enable_x64(True):
        sh = e3nn.spherical_harmonics(
            irreps,
            jnp.asarray(r),
            normalize=True,
            normalization="integral",
            algorithm=("recursive", "dense"),
        )
        arr = np.asarray(sh.array, dtype=np.float64)
    return [arr[:, ell * ell : (ell + 1) ** 2] for ell in range(lmax + 1)]


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    return _unit_points(200, seed=0)


@pytest.fixture(scope="module")
def e3nn_values(points: np.ndarray) -> list[np.ndarray]:
    return e3nn_harmonics(L_MAX_CHECK, points)


# R_CYC, two rotations, one improper matrix
REFERENCE_MATRICES = np.stack(
    [
        R_CYC,
        *Rotation.random(2, random_state=1).as_matrix(),
        -Rotation.random(1, random_state=2).as_matrix()[0],
    ]
)


# (l, p) pairs checked against e3nn-jax: the harmonics' parity up to L_MAX_CHECK, both for l <= 1
WIGNER_IRREPS = [(ell, (-1) ** ell) for ell in range(L_MAX_CHECK + 1)] + [(0, -1), (1, 1)]


@pytest.fixture(scope="module")
def e3nn_wigner() -> dict[tuple[int, int], np.ndarray]:
    """e3nn-jax's own ``Irrep(l, p).D_from_matrix`` (float64) of REFERENCE_MATRICES, per (l, p):
    ``[4, 2l+1, 2l+1]``. One jitted, batched call keeps the test fast."""

    def all_d(rs: jax.Array) -> list[jax.Array]:
        return [e3nn.Irrep(ell, p).D_from_matrix(rs) for ell, p in WIGNER_IRREPS]

    with jax.enable_x64(True):
        d = jax.jit(all_d)(jnp.asarray(REFERENCE_MATRICES))
        return {key: np.asarray(v) for key, v in zip(WIGNER_IRREPS, d, strict=True)}


def _random_rotations(n: int, seed: int) -> np.ndarray:
    return Rotation.random(n, random_state=seed).as_matrix()


# ---------------------------------------------------------------- harmonics and Q_l


@pytest.mark.parametrize("ell", range(4))
def test_explicit_gpaw_harmonics_match_general_rule(ell: int, points: np.ndarray) -> None:
    np.testing.assert_allclose(gpaw_explicit(ell, points), real_harmonics(ell, points), atol=1e-13)


@pytest.mark.parametrize("ell", range(L_MAX_CHECK + 1))
def test_q_maps_gpaw_harmonics_to_e3nn(
    ell: int, points: np.ndarray, e3nn_values: list[np.ndarray]
) -> None:
    gpaw = gpaw_explicit(ell, points) if ell <= 3 else real_harmonics(ell, points)
    mapped = gpaw @ gpaw_to_e3nn(ell).T  # [n, 2l+1]: rows Q_l · Y^gpaw(r)
    target = e3nn_values[ell]
    # only an overall positive constant is allowed; with "integral" normalization it is 1
    c = float(np.sum(target * mapped) / np.sum(mapped * mapped))
    assert c > 0
    assert abs(c - 1) < 1e-12
    np.testing.assert_allclose(target, c * mapped, atol=1e-12)


@pytest.mark.parametrize("ell", range(L_MAX_CHECK + 1))
def test_q_is_spec_formula_and_orthogonal(
    ell: int, e3nn_wigner: dict[tuple[int, int], np.ndarray]
) -> None:
    q = gpaw_to_e3nn(ell)
    assert q.dtype == np.float64 and q.shape == (2 * ell + 1, 2 * ell + 1)
    np.testing.assert_allclose(q @ q.T, np.eye(2 * ell + 1), atol=1e-13)
    # SPEC §2: Q_l = e3nn.Irrep(l, (-1)**l).D_from_matrix(R_CYC)
    np.testing.assert_allclose(q, e3nn_wigner[(ell, (-1) ** ell)][0], atol=1e-12)
    assert gpaw_to_e3nn(ell) is q  # cached


def test_q1_is_the_axis_permutation() -> None:
    q1 = gpaw_to_e3nn(1)
    np.testing.assert_array_equal(np.round(q1, 12), R_CYC)
    y, z, x = 0.3, -0.7, 1.9
    np.testing.assert_allclose(q1 @ np.array([y, z, x]), [x, y, z], atol=1e-15)


def test_q2_is_not_a_signed_permutation() -> None:
    q2 = gpaw_to_e3nn(2)
    fractional = (np.abs(q2) > 1e-8) & (np.abs(np.abs(q2) - 1) > 1e-8)
    assert fractional.any()  # e3nn's l = 2 mixes 3z²−r² and x²−y²
    # the mixing is confined to (3z²−r², x²−y²): m = 0 and m = 2 of GPAW's order
    assert set(np.nonzero(fractional)[1]) == {2, 4}


# ---------------------------------------------------------------- Wigner matrices


@pytest.mark.parametrize("ell", range(L_MAX_CHECK + 1))
def test_wigner_e3nn_matches_e3nn(ell: int, e3nn_wigner: dict[tuple[int, int], np.ndarray]) -> None:
    for parity in (1, -1):
        if (ell, parity) not in e3nn_wigner:
            continue
        for R, ref in zip(REFERENCE_MATRICES, e3nn_wigner[(ell, parity)], strict=True):
            np.testing.assert_allclose(wigner_e3nn(ell, R, parity), ref, atol=1e-12)


def _harmonics(ell: int, r: np.ndarray) -> np.ndarray:
    return gpaw_explicit(ell, r) if ell <= 3 else real_harmonics(ell, r)


@pytest.mark.parametrize("ell", range(L_MAX_CHECK + 1))
def test_wigner_gpaw_rotates_harmonics(ell: int, points: np.ndarray) -> None:
    mirror = np.diag([1.0, 1.0, -1.0])
    rots = [*_random_rotations(3, seed=3), -np.eye(3), mirror, -_random_rotations(1, seed=4)[0]]
    for R in rots:
        w = wigner_gpaw(ell, R)
        # Y(R r) = W Y(r) for every point r (row form: Y(r @ Rᵀ) = Y(r) @ Wᵀ)
        np.testing.assert_allclose(
            _harmonics(ell, points @ R.T), _harmonics(ell, points) @ w.T, atol=1e-12
        )


@pytest.mark.parametrize("ell", range(4))
def test_wigner_gpaw_is_a_representation_with_parity(ell: int) -> None:
    r1, r2 = _random_rotations(2, seed=5)
    for a, b in [(r1, r2), (-r1, r2), (r1, -r2), (-r1, -r2)]:
        np.testing.assert_allclose(
            wigner_gpaw(ell, a @ b), wigner_gpaw(ell, a) @ wigner_gpaw(ell, b), atol=1e-12
        )
    np.testing.assert_allclose(
        wigner_gpaw(ell, -np.eye(3)), (-1) ** ell * np.eye(2 * ell + 1), atol=1e-13
    )
    np.testing.assert_allclose(
        wigner_gpaw(ell, -r1), (-1) ** ell * wigner_gpaw(ell, r1), atol=1e-13
    )
    w = wigner_gpaw(ell, r1)
    np.testing.assert_allclose(w @ w.T, np.eye(2 * ell + 1), atol=1e-12)


def test_wigner_for_shells_is_block_diagonal(points: np.ndarray) -> None:
    ells = [0, 1, 2, 1, 3]
    R = _random_rotations(1, seed=6)[0]
    w = wigner_for_shells(ells, R)
    n = sum(2 * ell + 1 for ell in ells)
    assert w.shape == (n, n)
    orbitals = np.concatenate([gpaw_explicit(ell, points) for ell in ells], axis=1)
    rotated = np.concatenate([gpaw_explicit(ell, points @ R.T) for ell in ells], axis=1)
    np.testing.assert_allclose(rotated, orbitals @ w.T, atol=1e-12)
    off = 1 + 3
    np.testing.assert_array_equal(w[off : off + 5, : off + 0], 0.0)
    np.testing.assert_allclose(w[off : off + 5, off : off + 5], wigner_gpaw(2, R))


def test_non_orthogonal_matrix_is_rejected() -> None:
    with pytest.raises(ValueError, match="orthogonal"):
        wigner_gpaw(1, np.diag([1.0, 2.0, 1.0]))
    with pytest.raises(ValueError):
        gpaw_to_e3nn(-1)


# ---------------------------------------------------------------- PySCF order


def test_pyscf_p_order_maps_xyz_to_yzx() -> None:
    perm, sign = pyscf_to_gpaw_permutation([1])
    pyscf_values = np.array([10.0, 20.0, 30.0])  # (x, y, z)
    np.testing.assert_array_equal(sign * pyscf_values[perm], [20.0, 30.0, 10.0])  # (y, z, x)


def test_pyscf_permutation_of_shell_list() -> None:
    perm, sign = pyscf_to_gpaw_permutation([0, 1, 2, 1, 3])
    expected = [0, 2, 3, 1, *range(4, 9), 10, 11, 9, *range(12, 19)]
    np.testing.assert_array_equal(perm, expected)
    np.testing.assert_array_equal(sign, np.ones(19))
    assert perm.dtype == np.int64


def test_pyscf_table_has_no_g() -> None:
    with pytest.raises(NotImplementedError, match="l=4"):
        pyscf_to_gpaw_permutation([0, 4])


def _pyscf_angular(ell: int, r: np.ndarray) -> np.ndarray:
    """PySCF/libcint spherical angular parts in PySCF's order, from libcint's Cartesian →
    spherical table (``src/cart2sph.c``, ``g_trans_cart2sph``; p in the default (x, y, z)).

    Cartesian monomials in libcint order: d (xx, xy, xz, yy, yz, zz),
    f (xxx, xxy, xxz, xyy, xyz, xzz, yyy, yyz, yzz, zzz). ``r`` need not be unit length.
    """
    x, y, z = r.T
    if ell == 0:
        return np.full((len(x), 1), 0.5 / SQPI)
    if ell == 1:
        return math.sqrt(3 / (4 * math.pi)) * np.stack([x, y, z], axis=-1)
    if ell == 2:
        cart = np.stack([x * x, x * y, x * z, y * y, y * z, z * z], axis=-1)
        c2s = np.zeros((5, 6))
        c2s[0, 1] = 1.092548430592079070  # xy
        c2s[1, 4] = 1.092548430592079070  # yz
        c2s[2, [0, 3, 5]] = [-0.315391565252520002, -0.315391565252520002, 0.630783130505040012]
        c2s[3, 2] = 1.092548430592079070  # xz
        c2s[4, [0, 3]] = [0.546274215296039535, -0.546274215296039535]
        return cart @ c2s.T
    if ell == 3:
        cart = np.stack(
            [
                x**3,
                x * x * y,
                x * x * z,
                x * y * y,
                x * y * z,
                x * z * z,
                y**3,
                y * y * z,
                y * z * z,
                z**3,
            ],
            axis=-1,
        )
        c2s = np.zeros((7, 10))
        c2s[0, [1, 6]] = [1.770130769779930531, -0.590043589926643510]
        c2s[1, 4] = 2.890611442640554055
        c2s[2, [1, 6, 8]] = [-0.457045799464465739, -0.457045799464465739, 1.828183197857862944]
        c2s[3, [2, 7, 9]] = [-1.119528997770346170, -1.119528997770346170, 0.746352665180230782]
        c2s[4, [0, 3, 5]] = [-0.457045799464465739, -0.457045799464465739, 1.828183197857862944]
        c2s[5, [2, 7]] = [1.445305721320277020, -1.445305721320277020]
        c2s[6, [0, 3]] = [0.590043589926643510, -1.770130769779930530]
        return cart @ c2s.T
    raise ValueError(ell)


def _gaussian_orbitals(
    ells: list[int], center: np.ndarray, grid: np.ndarray, order: str
) -> np.ndarray:
    """Atom-centred Gaussian orbitals r^ell Y_lm(r̂) exp(-a r²) on grid points, ``[n_orb, n_grid]``."""
    d = grid - center
    rows = []
    for k, ell in enumerate(ells):
        radial = np.exp(-(0.7 + 0.3 * k) * np.sum(d * d, axis=1))
        if order == "pyscf":
            ang = _pyscf_angular(ell, d)  # homogeneous polynomials: r^ell Y_lm(r̂)
        else:
            rn = np.linalg.norm(d, axis=1, keepdims=True)
            ang = gpaw_explicit(ell, d / rn) * rn**ell
        rows.append((ang * radial[:, None]).T)
    return np.concatenate(rows, axis=0)


def test_pyscf_table_on_gaussian_orbitals() -> None:
    """PySCF-ordered orbitals, permuted by the table, are exactly our orbitals, and a two-centre
    matrix (grid quadrature of products) converts with `convert_block`."""
    grid = np.random.default_rng(7).normal(scale=1.5, size=(400, 3))
    ells_i, ells_j = [0, 1, 2, 3, 1], [1, 0, 2, 3]
    ca, cb = np.array([0.1, -0.2, 0.3]), np.array([1.2, 0.4, -0.5])
    phi_i_pyscf = _gaussian_orbitals(ells_i, ca, grid, "pyscf")
    phi_i_ours = _gaussian_orbitals(ells_i, ca, grid, "gpaw")
    perm, sign = pyscf_to_gpaw_permutation(ells_i)
    np.testing.assert_allclose(sign[:, None] * phi_i_pyscf[perm], phi_i_ours, atol=1e-12)

    phi_j_pyscf = _gaussian_orbitals(ells_j, cb, grid, "pyscf")
    phi_j_ours = _gaussian_orbitals(ells_j, cb, grid, "gpaw")
    block_pyscf = phi_i_pyscf @ phi_j_pyscf.T  # [n_orb_i, n_orb_j]
    block_ours = phi_i_ours @ phi_j_ours.T
    np.testing.assert_allclose(convert_block(block_pyscf, ells_i, ells_j), block_ours, atol=1e-12)


def test_convert_block_batched_and_generic_table() -> None:
    ells_i, ells_j = [1, 2], [0, 1]
    blocks = np.random.default_rng(8).normal(size=(4, 8, 4))
    out = convert_block(blocks, ells_i, ells_j, PYSCF_TO_GPAW)
    pi, si = orbital_permutation(ells_i, PYSCF_TO_GPAW)
    pj, sj = orbital_permutation(ells_j, PYSCF_TO_GPAW)
    P_i = np.eye(8)[pi] * si[:, None]  # ours = P theirs
    P_j = np.eye(4)[pj] * sj[:, None]
    np.testing.assert_allclose(out, P_i @ blocks @ P_j.T)
    with pytest.raises(ValueError, match="does not match"):
        convert_block(blocks, ells_i, [1, 1], PYSCF_TO_GPAW)
