"""Exact change of basis between an atom-pair orbital block and e3nn-jax irreps.

A block B (``n_orb_i × n_orb_j``, our GPAW orbital order, shells ``ells_i`` × ``ells_j``) is
cut into shell-pair sub-blocks ``B_ab`` of shape ``(2l_a+1) × (2l_b+1)``. Each sub-block is
taken to e3nn order, ``B'_ab = Q_la B_ab Q_lbᵀ`` (`conventions.gpaw_to_e3nn`), and decomposed
with e3nn-jax's Clebsch–Gordan coefficients into the irreps L = |l_a−l_b| .. l_a+l_b of parity
(−1)^(l_a+l_b):

    x_L = √(2L+1) · Σ_mn C^(l_a l_b L)_{m n k} B'_ab[m, n]

(e3nn-jax normalizes each C to unit Frobenius norm; the √(2L+1) makes the map orthonormal).

**Order of the irreps** (`BlockIrreps.irreps`, never simplified or sorted): shell pairs in
block order — shell a of atom i outer, shell b of atom j inner (row-major over the block) —
and within a shell pair L ascending. Each irrep has multiplicity 1; `BlockIrreps.components`
names (a, b, L) for each.

**Normalization**: the map is orthogonal, ``vec(B) = U x`` with ``UᵀU = I`` (``vec`` the C-order
row-major flatten), so ``‖B‖_F = ‖x‖`` and ``x = Uᵀ vec(B)``. Under a rotation R,
``W_i(R) B W_j(R)ᵀ`` ↦ ``D(R) x`` with ``D = irreps.D_from_matrix(R)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from gears_h_core.basis.conventions import gpaw_to_e3nn, wigner_e3nn


@dataclass(frozen=True, eq=False)
class BlockIrreps:
    """Orthogonal map between blocks of shells ``ells_i × ells_j`` and an irreps vector.

    Build with the cached factory `block_irreps`.

    Attributes:
        ells_i, ells_j: shell angular momenta of atoms i and j.
        irreps: e3nn Irreps of the vector, in the documented (unsimplified) order.
        components: ``(a, b, L)`` per irrep: shell indices of atoms i and j and the irrep's l.
        matrix: U, float64 ``[n_i * n_j, dim]``, orthogonal, ``vec(B) = U x``.
        n_i, n_j: orbitals of atoms i and j.
    """

    ells_i: tuple[int, ...]
    ells_j: tuple[int, ...]
    irreps: e3nn.Irreps
    components: tuple[tuple[int, int, int], ...]
    matrix: np.ndarray
    n_i: int
    n_j: int

    @property
    def dim(self) -> int:
        """Length of the irreps vector (= ``n_i * n_j``)."""
        return int(self.matrix.shape[1])

    @functools.cached_property
    def _matrix_f32(self) -> np.ndarray:
        return self.matrix.astype(np.float32)

    def _matrix_for(self, dtype: Any) -> np.ndarray:
        if dtype == np.float64:
            return self.matrix
        if dtype == np.float32:
            return self._matrix_f32
        return self.matrix.astype(dtype)

    def block_to_irreps(self, blocks: Any) -> Any:
        """Irreps vectors ``[..., dim]`` of blocks ``[..., n_i, n_j]``: ``x = Uᵀ vec(B)``.

        numpy (or array-like) in, numpy out; a jax array (also under ``jit``) in, jax out. The
        result keeps the input's float dtype (float32 uses a float32 copy of U; jax matmuls
        run at ``Precision.HIGHEST``); integer input is promoted to the default float.
        """
        blocks, use_jax = _as_array(blocks)
        if tuple(blocks.shape[-2:]) != (self.n_i, self.n_j):
            raise ValueError(
                f"blocks of shape {tuple(blocks.shape)} do not match {self.n_i}x{self.n_j}"
            )
        flat_shape = (*blocks.shape[:-2], self.n_i * self.n_j)
        dtype = _float_dtype(blocks.dtype, use_jax)
        flat = (blocks if blocks.dtype == dtype else blocks.astype(dtype)).reshape(flat_shape)
        if use_jax:
            u = jnp.asarray(self._matrix_for(dtype))
            return jnp.matmul(flat, u, precision=jax.lax.Precision.HIGHEST)
        return flat @ self._matrix_for(dtype)

    def irreps_to_block(self, x: Any) -> Any:
        """Blocks ``[..., n_i, n_j]`` of irreps vectors ``[..., dim]``: ``vec(B) = U x``.

        Inverse of `block_to_irreps`, with the same array-namespace and dtype rules.
        """
        x, use_jax = _as_array(x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"irreps vectors of shape {tuple(x.shape)} do not match dim {self.dim}"
            )
        block_shape = (*x.shape[:-1], self.n_i, self.n_j)
        dtype = _float_dtype(x.dtype, use_jax)
        x = x if x.dtype == dtype else x.astype(dtype)
        if use_jax:
            u = jnp.asarray(self._matrix_for(dtype))
            flat = jnp.matmul(x, u.T, precision=jax.lax.Precision.HIGHEST)
        else:
            flat = x @ self._matrix_for(dtype).T
        return flat.reshape(block_shape)

    def D_from_matrix(self, R: np.ndarray) -> np.ndarray:
        """Representation matrix of `irreps` for an orthogonal ``R``, float64 ``[dim, dim]``
        (block-diagonal; equals ``irreps.D_from_matrix(R)`` without float32 round-off)."""
        distinct = {(ir.l, ir.p) for _, ir in self.irreps}
        per_irrep = {(ell, p): wigner_e3nn(ell, R, p) for ell, p in distinct}
        return scipy.linalg.block_diag(*(per_irrep[(ir.l, ir.p)] for _, ir in self.irreps))


def _as_array(a: Any) -> tuple[Any, bool]:
    """``(array, is_jax)``: jax arrays (and tracers) pass through, anything else -> numpy."""
    if isinstance(a, jax.Array):
        return a, True
    return np.asarray(a), False


def _float_dtype(dtype: Any, use_jax: bool) -> np.dtype:
    """The input's dtype if it is a float or complex type, else the default float."""
    if jnp.issubdtype(dtype, jnp.inexact):
        return np.dtype(dtype)
    return np.dtype(jnp.result_type(float)) if use_jax else np.dtype(np.float64)


def block_irreps(ells_i: Sequence[int], ells_j: Sequence[int]) -> BlockIrreps:
    """Cached `BlockIrreps` for the shell lists of atoms i and j.

    Args:
        ells_i, ells_j: shell angular momenta (basis order) of atoms i and j.
    """
    return _block_irreps(tuple(int(ell) for ell in ells_i), tuple(int(ell) for ell in ells_j))


@functools.cache
def _shell_pair_basis(l1: int, l2: int) -> np.ndarray:
    """Orthonormal columns taking a (l1, l2) sub-block's irreps to its row-major flatten.

    Returns:
        float64 ``[(2l1+1)(2l2+1), (2l1+1)(2l2+1)]``; columns grouped by L ascending.
    """
    q = np.kron(gpaw_to_e3nn(l1), gpaw_to_e3nn(l2))  # vec(Q1 B Q2ᵀ) = (Q1 ⊗ Q2) vec(B)
    cols = [
        e3nn.clebsch_gordan(l1, l2, L).reshape(-1, 2 * L + 1) * np.sqrt(2 * L + 1)
        for L in range(abs(l1 - l2), l1 + l2 + 1)
    ]
    return q.T @ np.concatenate(cols, axis=1)


@functools.cache
def _block_irreps(ells_i: tuple[int, ...], ells_j: tuple[int, ...]) -> BlockIrreps:
    if any(ell < 0 for ell in ells_i + ells_j):
        raise ValueError(f"negative angular momentum in shells {ells_i} x {ells_j}")
    dims_i = [2 * ell + 1 for ell in ells_i]
    dims_j = [2 * ell + 1 for ell in ells_j]
    off_i = np.concatenate([[0], np.cumsum(dims_i)]).astype(int)
    off_j = np.concatenate([[0], np.cumsum(dims_j)]).astype(int)
    n_i, n_j = int(off_i[-1]), int(off_j[-1])
    rows_of_block = np.arange(n_i * n_j).reshape(n_i, n_j)

    matrix = np.zeros((n_i * n_j, n_i * n_j))  # [n_i * n_j, dim]
    irreps: list[tuple[int, tuple[int, int]]] = []
    components: list[tuple[int, int, int]] = []
    col = 0
    for a, la in enumerate(ells_i):
        for b, lb in enumerate(ells_j):
            rows = rows_of_block[off_i[a] : off_i[a + 1], off_j[b] : off_j[b + 1]].reshape(-1)
            basis = _shell_pair_basis(la, lb)
            matrix[rows, col : col + basis.shape[1]] = basis
            col += basis.shape[1]
            for L in range(abs(la - lb), la + lb + 1):
                irreps.append((1, (L, (-1) ** (la + lb))))
                components.append((a, b, L))
    matrix.flags.writeable = False
    return BlockIrreps(
        ells_i=ells_i,
        ells_j=ells_j,
        irreps=e3nn.Irreps(irreps),
        components=tuple(components),
        matrix=matrix,
        n_i=n_i,
        n_j=n_j,
    )
