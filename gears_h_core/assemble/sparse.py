"""`BlockMatrix` -> scipy sparse matrices: per lattice shift, Γ image sum, Bloch H(k).

Orbital index of atom a, orbital μ: ``offsets[a] + μ`` with ``offsets =
basis.orbital_offsets(numbers)``; N = ``offsets[-1]`` orbitals in all. Every function builds
one COO triplet list from all blocks at once (per species-pair group, by broadcasting the
orbital offsets) and converts it to CSR; nothing here forms a dense N × N matrix (call
``.toarray()`` yourself if you want one).

Bloch convention (§2): ``H(k) = Σ_T exp(+2πi k·n) H(T)`` with ``k`` in reduced coordinates
and ``n`` the integer shift of the row; on-site blocks enter with phase 1.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.types import BlockMatrix, SparseHamiltonian

__all__ = [
    "bloch_matrix",
    "gamma_fold",
    "hamiltonian_at_k",
    "to_csr_per_shift",
]

Shift = tuple[int, int, int]


def _group_triplets(
    row_atoms: np.ndarray,
    col_atoms: np.ndarray,
    blocks: np.ndarray,
    offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Orbital row/column indices of a stack of equally shaped blocks.

    Args:
        row_atoms, col_atoms: int ``[n]``; blocks: ``[n, a, b]``; offsets: ``[n_atoms + 1]``.

    Returns:
        rows, cols: int64 ``[n, a, b]`` (broadcast views, ravel to match ``blocks.ravel()``).
    """
    n, a, b = blocks.shape
    rows = offsets[row_atoms][:, None, None] + np.arange(a, dtype=np.int64)[None, :, None]
    cols = offsets[col_atoms][:, None, None] + np.arange(b, dtype=np.int64)[None, None, :]
    return np.broadcast_to(rows, (n, a, b)), np.broadcast_to(cols, (n, a, b))


def _iter_groups(
    bm: BlockMatrix, offsets: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(rows, cols, blocks, shift)`` per group; on-site groups get shift 0.

    rows, cols: int64 ``[n, a, b]``; blocks: ``[n, a, b]``; shift: int ``[n, 3]``.
    """
    for g in bm.onsite:
        atoms = np.asarray(g.atoms, dtype=np.int64)
        rows, cols = _group_triplets(atoms, atoms, g.blocks, offsets)
        yield rows, cols, g.blocks, np.zeros((atoms.shape[0], 3), dtype=np.int64)
    for h in bm.hopping:
        rows, cols = _group_triplets(
            np.asarray(h.i, dtype=np.int64), np.asarray(h.j, dtype=np.int64), h.blocks, offsets
        )
        yield rows, cols, h.blocks, np.asarray(h.shift, dtype=np.int64).reshape(-1, 3)


def _offsets(bm: BlockMatrix, basis: OrbitalBasis, numbers: np.ndarray) -> np.ndarray:
    offsets = basis.orbital_offsets(np.asarray(numbers))
    n_atoms = offsets.shape[0] - 1
    for g in bm.onsite:
        if g.atoms.size and (g.atoms.min() < 0 or g.atoms.max() >= n_atoms):
            raise ValueError(f"on-site group Z={g.z}: atom index out of range ({n_atoms} atoms)")
    for h in bm.hopping:
        for name, idx in (("i", h.i), ("j", h.j)):
            if idx.size and (idx.min() < 0 or idx.max() >= n_atoms):
                raise ValueError(
                    f"hopping group ({h.z_i}, {h.z_j}): {name} index out of range ({n_atoms} atoms)"
                )
    return offsets


def to_csr_per_shift(
    bm: BlockMatrix,
    basis: OrbitalBasis,
    numbers: np.ndarray,
    *,
    dtype: type[np.floating] | np.dtype = np.float32,
) -> dict[Shift, sp.csr_array]:
    """One N × N CSR matrix per lattice shift: ``{(n1, n2, n3): H(T = n·cell)}``.

    On-site blocks are in shift ``(0, 0, 0)``. Each matrix holds the blocks of the rows with
    that shift only; rows of the same (i, j) with different shifts go to different matrices,
    so nothing is lost. Shifts come out sorted.

    Args:
        bm: blocks; basis, numbers: give the orbital offsets.
        dtype: value dtype of the matrices (float32 by default, the blocks' precision).
    """
    offsets = _offsets(bm, basis, numbers)
    N = int(offsets[-1])
    rows_l, cols_l, vals_l, shift_l, size_l = [], [], [], [], []
    for rows, cols, blocks, shift in _iter_groups(bm, offsets):
        rows_l.append(rows.reshape(-1))
        cols_l.append(cols.reshape(-1))
        vals_l.append(np.asarray(blocks, dtype=dtype).reshape(-1))
        shift_l.append(shift)
        size_l.append(np.full(shift.shape[0], int(np.prod(blocks.shape[1:])), dtype=np.int64))
    if not rows_l:
        return {(0, 0, 0): sp.csr_array((N, N), dtype=dtype)}
    rows = np.concatenate(rows_l)
    cols = np.concatenate(cols_l)
    vals = np.concatenate(vals_l)
    shifts, block_sid = np.unique(np.concatenate(shift_l), axis=0, return_inverse=True)
    inverse = np.repeat(block_sid.reshape(-1), np.concatenate(size_l))  # [nnz]
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(shifts.shape[0] + 1))
    out: dict[Shift, sp.csr_array] = {}
    for s, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        sel = order[lo:hi]
        key = (int(shifts[s, 0]), int(shifts[s, 1]), int(shifts[s, 2]))
        out[key] = sp.coo_array((vals[sel], (rows[sel], cols[sel])), shape=(N, N)).tocsr()
    return out


def gamma_fold(
    bm: BlockMatrix,
    basis: OrbitalBasis,
    numbers: np.ndarray,
    *,
    dtype: type[np.floating] | np.dtype = np.float64,
) -> sp.csr_array:
    """The Γ-point matrix ``Σ_T H(T)``: every image of a pair added into one block.

    This is an explicit image sum and **loses the lattice shifts**: the result is only good
    for Γ (or for Γ-only data such as the GEARS H example format). Use `bloch_matrix` for
    any other k and `to_csr_per_shift` to keep the real-space form.

    Returns:
        N × N CSR of ``dtype`` (float64 by default).
    """
    offsets = _offsets(bm, basis, numbers)
    N = int(offsets[-1])
    parts = [
        (rows.reshape(-1), cols.reshape(-1), np.asarray(blocks, dtype=dtype).reshape(-1))
        for rows, cols, blocks, _ in _iter_groups(bm, offsets)
    ]
    if not parts:
        return sp.csr_array((N, N), dtype=dtype)
    rows, cols, vals = (np.concatenate(x) for x in zip(*parts, strict=True))
    return sp.coo_array((vals, (rows, cols)), shape=(N, N)).tocsr()  # duplicates summed


def bloch_matrix(
    bm: BlockMatrix, basis: OrbitalBasis, numbers: np.ndarray, k: np.ndarray | list[float]
) -> sp.csr_array:
    """Bloch matrix ``H(k) = Σ_T exp(+2πi k·n) H(T)`` as complex128 CSR (N × N).

    Args:
        bm: real-space blocks with integer shifts ``n``.
        basis, numbers: give the orbital offsets.
        k: reduced coordinates ``[3]`` (fractions of the reciprocal lattice vectors).

    Hermitian whenever ``bm`` holds every partner row ``(j, i, −n)`` with the transposed
    block. Only meaningful for real-space blocks (not Γ-only, image-summed data).
    """
    k = np.asarray(k, dtype=np.float64).reshape(3)
    offsets = _offsets(bm, basis, numbers)
    N = int(offsets[-1])
    rows_l, cols_l, vals_l = [], [], []
    for rows, cols, blocks, shift in _iter_groups(bm, offsets):
        phase = np.exp(2j * np.pi * (shift @ k))  # [n]
        rows_l.append(rows.reshape(-1))
        cols_l.append(cols.reshape(-1))
        vals_l.append((blocks.astype(np.float64) * phase[:, None, None]).reshape(-1))
    if not rows_l:
        return sp.csr_array((N, N), dtype=np.complex128)
    return sp.coo_array(
        (np.concatenate(vals_l), (np.concatenate(rows_l), np.concatenate(cols_l))),
        shape=(N, N),
    ).tocsr()


def hamiltonian_at_k(
    sh: SparseHamiltonian, k: np.ndarray | list[float]
) -> tuple[sp.csr_array, sp.csr_array | None]:
    """``(H(k), S(k))`` of a `SparseHamiltonian` as complex128 CSR; ``S(k)`` None without S."""
    numbers = sh.structure.numbers
    Hk = bloch_matrix(sh.H, sh.basis, numbers, k)
    Sk = None if sh.S is None else bloch_matrix(sh.S, sh.basis, numbers, k)
    return Hk, Sk
