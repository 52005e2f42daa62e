"""Orbital conventions in one place: orbital order, e3nn-jax change of basis, Wigner matrices.

**Our order** (SPEC §2, data README §2.3) is GPAW's real spherical harmonics, m = −l..l, with no
Condon–Shortley phase, i.e. the plain real solid harmonics with positive coefficients:

==  =========================================================================================
l   components (m = −l .. l)
==  =========================================================================================
0   1
1   y, z, x
2   xy, yz, 3z²−r², xz, x²−y²
3   y(3x²−y²), xyz, y(4z²−x²−y²), z(2z²−3x²−3y²), x(4z²−x²−y²), z(x²−y²), x(x²−3y²)
==  =========================================================================================

(GPAW ``gpaw/spherical_harmonics.py``: ``names`` and the ``YL`` table; for l = 3 the table
reads ``['3x2y-y3', 'xyz', '4yz2-y3-x2y', '2z3-3x2z-3y2z', '4xz2-x3-xy2', 'x2z-y2z',
'x3-3xy2']`` with all leading coefficients positive.) Every l ≥ 0 follows the same rule:
m > 0 ∝ P_l^m(cos θ) cos(mφ), m < 0 ∝ P_l^|m|(cos θ) sin(|m|φ), P without the (−1)^m phase.

**e3nn-jax** orders l = 1 as (x, y, z). Per l the two real bases are related by an orthogonal
matrix Q_l (`gpaw_to_e3nn`)::

    Y^e3nn_l(r) = Q_l · Y^gpaw_l(r),    Q_l = D^e3nn_l(R_cyc),    R_cyc = [[0,0,1],[1,0,0],[0,1,0]]

(with ``normalization="integral"`` both bases are orthonormal on the sphere, so no extra
constant). For l = 1, Q_1 = R_cyc is the permutation (y, z, x) → (x, y, z); for l ≥ 2 it is not
a signed permutation. The tests prove the relation by evaluating both sets of harmonics.

**Wigner matrices** in our order: W_l(R) = Q_lᵀ D^e3nn_l(R) Q_l, so Y^gpaw_l(R r) =
W_l(R) Y^gpaw_l(r); an improper R (det −1) contributes the parity (−1)^l. Rotating a structure
by R maps every atom-pair block as H_ij → W_{l_i}(R) H_ij W_{l_j}(R)ᵀ shell by shell.
All matrices here are float64 numpy, computed from e3nn-jax's float64 Lie-algebra generators
(e3nn-jax's own ``D_from_matrix`` runs in float32 unless x64 is enabled).

**Other codes** are converted into our order by explicit tables (`OrbitalOrderTable`); the
PySCF table is `PYSCF_TO_GPAW`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.spatial.transform import Rotation

# Cyclic axis permutation with Q_l = D^e3nn_l(R_CYC); R_CYC @ (y, z, x) = (x, y, z). Read-only.
R_CYC = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
R_CYC.flags.writeable = False

_ORTHO_ATOL = 1e-5


def _check_ell(ell: int) -> int:
    if int(ell) != ell or ell < 0:
        raise ValueError(f"angular momentum must be a non-negative integer, got {ell!r}")
    return int(ell)


def _proper_rotvec(R: np.ndarray) -> tuple[np.ndarray, bool]:
    """Split an orthogonal 3×3 matrix into the rotation vector of its proper part and whether
    it is improper (det −1): R = (−1)^improper · exp([rotvec]_×)."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"expected a 3x3 matrix, got shape {R.shape}")
    if not np.allclose(R @ R.T, np.eye(3), atol=_ORTHO_ATOL):
        raise ValueError("matrix is not orthogonal")
    improper = bool(np.linalg.det(R) < 0)
    proper = -R if improper else R
    return Rotation.from_matrix(proper).as_rotvec(), improper


@functools.cache
def _generators(ell: int) -> np.ndarray:
    """e3nn-jax's real SO(3) generators for ``l``, float64 ``[3, 2l+1, 2l+1]``."""
    import e3nn_jax as e3nn  # deferred: importing e3nn-jax takes seconds; tables need numpy only

    gen = np.array(e3nn.Irrep(ell, 1).generators(), dtype=np.float64)
    gen.flags.writeable = False
    return gen


def wigner_e3nn(ell: int, R: np.ndarray, parity: int | None = None) -> np.ndarray:
    """Real Wigner matrix of e3nn-jax's irrep ``(l, parity)`` for an orthogonal ``R``.

    Equals ``e3nn.Irrep(l, parity).D_from_matrix(R)`` but in float64 numpy:
    ``D = parity^k · expm(Σ_a v_a X_a)`` with ``v`` the rotation vector of the proper part of
    ``R``, ``X`` e3nn-jax's generators and ``k = 1`` for an improper ``R``.

    Args:
        ell: angular momentum.
        R: orthogonal matrix ``[3, 3]`` (acting on column vectors, r → R r).
        parity: ±1; default ``(-1)**l`` (the parity of the spherical harmonics).

    Returns:
        float64 ``[2l+1, 2l+1]`` with ``Y^e3nn_l(R r) = D · Y^e3nn_l(r)``.
    """
    ell = _check_ell(ell)
    p = (-1) ** ell if parity is None else int(parity)
    if p not in (-1, 1):
        raise ValueError(f"parity must be +1 or -1, got {parity!r}")
    rotvec, improper = _proper_rotvec(R)
    D = scipy.linalg.expm(np.einsum("a,aij->ij", rotvec, _generators(ell)))
    return -D if (improper and p == -1) else D


@functools.cache
def gpaw_to_e3nn(ell: int) -> np.ndarray:
    """Change of basis Q_l from our (GPAW) real harmonics to e3nn-jax's: Y^e3nn = Q_l · Y^gpaw.

    Args:
        ell: angular momentum (any l ≥ 0).

    Returns:
        float64 ``[2l+1, 2l+1]`` orthogonal (read-only; cached). Its transpose maps back.
    """
    q = wigner_e3nn(_check_ell(ell), R_CYC)
    q.flags.writeable = False
    return q


def wigner_gpaw(ell: int, R: np.ndarray) -> np.ndarray:
    """Real Wigner matrix in our (GPAW) order: ``W_l(R) = Q_lᵀ D^e3nn_l(R) Q_l``.

    Args:
        ell: angular momentum.
        R: orthogonal matrix ``[3, 3]``; an improper ``R`` adds the parity ``(-1)**l``.

    Returns:
        float64 ``[2l+1, 2l+1]`` with ``Y^gpaw_l(R r) = W_l(R) · Y^gpaw_l(r)``; a representation,
        ``W(R1 R2) = W(R1) W(R2)``.
    """
    q = gpaw_to_e3nn(ell)
    return q.T @ wigner_e3nn(ell, R) @ q


def wigner_for_shells(ells: Sequence[int], R: np.ndarray) -> np.ndarray:
    """Block-diagonal Wigner matrix of one atom's orbitals (shells in basis order).

    Args:
        ells: shell angular momenta of the atom, in basis order.
        R: orthogonal matrix ``[3, 3]``.

    Returns:
        float64 ``[n_orb, n_orb]``, ``n_orb = Σ (2l+1)``; a block H_ij rotates as
        ``W_i H_ij W_jᵀ``.
    """
    per_l = {int(ell): wigner_gpaw(int(ell), R) for ell in set(ells)}
    if not ells:
        return np.zeros((0, 0))
    return scipy.linalg.block_diag(*(per_l[int(ell)] for ell in ells))


# --------------------------------------------------------------------------------------------
# Tables from other codes' orbital orders into ours
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrbitalOrderTable:
    """Per-l permutation and signs taking another code's shell order into ours.

    For a shell of angular momentum ``l`` with ``(perm, sign) = shells[l]``:
    ``ours[m] = sign[m] * theirs[perm[m]]`` for m index 0..2l.

    Attributes:
        name: the other code, for error messages.
        shells: mapping l -> (perm, sign), both tuples of length 2l+1; ``perm`` a permutation
            of ``range(2l+1)``, ``sign`` entries ±1.
    """

    name: str
    shells: Mapping[int, tuple[tuple[int, ...], tuple[int, ...]]]

    def __post_init__(self) -> None:
        for ell, (perm, sign) in self.shells.items():
            n = 2 * ell + 1
            if sorted(perm) != list(range(n)) or len(sign) != n:
                raise ValueError(f"{self.name}: malformed table for l={ell}")
            if any(s not in (-1, 1) for s in sign):
                raise ValueError(f"{self.name}: signs for l={ell} must be +1 or -1")

    def shell(self, ell: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(perm, sign)`` of one shell; NotImplementedError for an l the table lacks."""
        try:
            return self.shells[int(ell)]
        except KeyError:
            raise NotImplementedError(
                f"{self.name} -> GPAW orbital order is not established for l={ell}"
            ) from None


PYSCF_TO_GPAW = OrbitalOrderTable(
    name="PySCF",
    shells={
        0: ((0,), (1,)),
        # PySCF/libcint (default build, no PYPZPX) orders p as (x, y, z); ours is (y, z, x).
        1: ((1, 2, 0), (1, 1, 1)),
        # libcint src/cart2sph.c g_trans_cart2sph: d = (xy, yz, z², xz, x²−y²) and
        # f = (y(3x²−y²), xyz, yz², z³, xz², z(x²−y²), x(x²−3y²)), every component with the
        # same positive leading coefficients as GPAW's YL table: identity, no signs.
        2: ((0, 1, 2, 3, 4), (1, 1, 1, 1, 1)),
        3: ((0, 1, 2, 3, 4, 5, 6), (1, 1, 1, 1, 1, 1, 1)),
    },
)
"""PySCF spherical AO order (``mol.cart = False``) into ours, l = 0..3."""


def orbital_permutation(
    ells: Sequence[int], table: OrbitalOrderTable
) -> tuple[np.ndarray, np.ndarray]:
    """Permutation and signs for all orbitals of one atom (shells in basis order).

    Args:
        ells: shell angular momenta of the atom, in basis order (same in both codes).
        table: per-shell conversion into our order.

    Returns:
        ``(perm, sign)``: int64 ``[n_orb]`` and float64 ``[n_orb]`` with
        ``ours = sign * theirs[perm]`` along the orbital axis.
    """
    perm: list[int] = []
    sign: list[int] = []
    offset = 0
    for ell in ells:
        p, s = table.shell(int(ell))
        perm.extend(offset + k for k in p)
        sign.extend(s)
        offset += 2 * int(ell) + 1
    return np.asarray(perm, dtype=np.int64), np.asarray(sign, dtype=np.float64)


def pyscf_to_gpaw_permutation(ells: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """`orbital_permutation` with the PySCF table: ``ours = sign * pyscf[perm]``.

    Returns:
        int64 ``[n_orb]`` permutation and float64 ``[n_orb]`` signs.
    """
    return orbital_permutation(ells, PYSCF_TO_GPAW)


def convert_block(
    block: np.ndarray,
    ells_i: Sequence[int],
    ells_j: Sequence[int],
    table: OrbitalOrderTable = PYSCF_TO_GPAW,
) -> np.ndarray:
    """Reorder an atom-pair block (or a batch of them) from another code's order into ours.

    Args:
        block: ``[..., n_orb_i, n_orb_j]`` in the other code's order.
        ells_i, ells_j: shell angular momenta of atoms i and j.
        table: the other code's conversion table.

    Returns:
        ``[..., n_orb_i, n_orb_j]``: ``out[a, b] = sign_i[a] sign_j[b] block[perm_i[a], perm_j[b]]``.
    """
    block = np.asarray(block)
    perm_i, sign_i = orbital_permutation(ells_i, table)
    perm_j, sign_j = orbital_permutation(ells_j, table)
    if block.shape[-2:] != (perm_i.size, perm_j.size):
        raise ValueError(
            f"block shape {block.shape} does not match shells {tuple(ells_i)} x {tuple(ells_j)}"
        )
    out = block[..., perm_i[:, None], perm_j[None, :]]
    return out * (sign_i[:, None] * sign_j[None, :]).astype(out.dtype, copy=False)
