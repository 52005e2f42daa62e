"""Atom-pair blocks <-> `BlockMatrix` (block-COO grouped by species / ordered species pair).

Rows are the plain tight-binding form of an operator: one on-site block per atom and one
hopping row ``(i, j, shift, block)`` per coupled pair, ``block = H_ij(T)`` with
``T = shift · cell`` (§2). `block_matrix_from_rows` groups them into dense float32 arrays
(one per element for on-site blocks, one per ordered species pair for hopping blocks);
`block_matrix_rows` and `onsite_blocks` give the rows back in a canonical order.

`lattice_shifts` recovers the integer shift ``n`` of each row from the stored vector
``D = r_j + T − r_i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.structure import Structure
from gears_h_core.types import BlockMatrix, HoppingGroup, OnsiteGroup

__all__ = [
    "SHIFT_TOLERANCE",
    "block_matrix_from_rows",
    "block_matrix_rows",
    "canonical_row_order",
    "lattice_shifts",
    "onsite_blocks",
]

SHIFT_TOLERANCE = 1e-4  # fractional coordinates (periodic axes) / Å (non-periodic part)


def canonical_row_order(i: np.ndarray, j: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Permutation sorting rows by ``(i, j, shift[:, 0], shift[:, 1], shift[:, 2])``.

    Args:
        i, j: int ``[n]``; shift: int ``[n, 3]``.

    Returns:
        int64 ``[n]``.
    """
    shift = np.asarray(shift).reshape(-1, 3)
    return np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], np.asarray(j), np.asarray(i)))


def _stack_blocks(
    blocks: Sequence[np.ndarray] | np.ndarray, rows: np.ndarray, shape: tuple[int, int], what: str
) -> np.ndarray:
    """Stack ``blocks[rows]`` into float32 ``[len(rows), *shape]``, checking every shape."""
    if isinstance(blocks, np.ndarray) and blocks.dtype != object and blocks.ndim == 3:
        if blocks.shape[1:] != shape:
            raise ValueError(f"{what}: blocks have shape {blocks.shape[1:]}, expected {shape}")
        return np.ascontiguousarray(blocks[rows], dtype=np.float32)
    picked = [np.asarray(blocks[int(r)], dtype=np.float32) for r in rows]
    bad = [k for k, b in enumerate(picked) if b.shape != shape]
    if bad:
        r = int(rows[bad[0]])
        raise ValueError(f"{what} {r}: block has shape {picked[bad[0]].shape}, expected {shape}")
    if not picked:
        return np.zeros((0, *shape), dtype=np.float32)
    return np.stack(picked)


def block_matrix_from_rows(
    numbers: np.ndarray,
    basis: OrbitalBasis,
    onsite: Sequence[np.ndarray] | np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    shift: np.ndarray,
    blocks: Sequence[np.ndarray] | np.ndarray,
) -> BlockMatrix:
    """Group on-site and hopping rows into a `BlockMatrix`.

    Args:
        numbers: atomic numbers, int ``[n_atoms]``.
        basis: orbital basis covering every element of ``numbers``.
        onsite: ``n_atoms`` blocks ``[n_orb_a, n_orb_a]`` in atom order (a sequence of 2-D
            arrays or one ``[n_atoms, n, n]`` array).
        i, j: int ``[n_pairs]``: home-cell atom and translated atom of every row.
        shift: int ``[n_pairs, 3]``: integer lattice shift of atom j.
        blocks: ``n_pairs`` blocks ``[n_orb_i, n_orb_j]`` (sequence or 3-D array).

    Returns:
        `BlockMatrix` with one `OnsiteGroup` per element (ascending Z, atoms ascending) and
        one `HoppingGroup` per ordered species pair present (ascending (z_i, z_j)), rows of
        each group in canonical order (i, j, shift). Blocks are float32.

    Raises:
        ValueError: inconsistent lengths, indices out of range or a block of the wrong shape
            (the message names the row).
    """
    numbers = np.asarray(numbers)
    n_atoms = int(numbers.shape[0])
    i = np.asarray(i, dtype=np.int64).reshape(-1)
    j = np.asarray(j, dtype=np.int64).reshape(-1)
    shift = np.asarray(shift).reshape(-1, 3)
    n_pairs = int(i.shape[0])
    if len(onsite) != n_atoms:
        raise ValueError(f"on-site blocks: {len(onsite)} given for {n_atoms} atoms")
    if j.shape[0] != n_pairs or shift.shape[0] != n_pairs or len(blocks) != n_pairs:
        raise ValueError(
            f"hopping rows: lengths differ (i {n_pairs}, j {j.shape[0]}, shift "
            f"{shift.shape[0]}, blocks {len(blocks)})"
        )
    bad = np.flatnonzero((i < 0) | (i >= n_atoms) | (j < 0) | (j >= n_atoms))
    if bad.size:
        r = int(bad[0])
        raise ValueError(f"row {r}: atom index ({i[r]}, {j[r]}) out of range for {n_atoms} atoms")
    if np.any(shift != np.round(shift)):
        raise ValueError("hopping rows: lattice shifts must be integers")
    shift = shift.astype(np.int32)

    onsite_groups = []
    for z in np.unique(numbers):
        atoms = np.flatnonzero(numbers == z)
        n = basis.n_orb(int(z))
        onsite_groups.append(
            OnsiteGroup(
                z=int(z),
                atoms=atoms.astype(np.int32),
                blocks=_stack_blocks(onsite, atoms, (n, n), "on-site block of atom"),
            )
        )

    order = canonical_row_order(i, j, shift)
    zi = numbers[i[order]].astype(np.int64)
    zj = numbers[j[order]].astype(np.int64)
    pair_key = zi * 256 + zj
    hopping_groups = []
    for key in np.unique(pair_key):
        rows = order[pair_key == key]  # stays in canonical order
        z_i, z_j = int(key) // 256, int(key) % 256
        hopping_groups.append(
            HoppingGroup(
                z_i=z_i,
                z_j=z_j,
                i=i[rows].astype(np.int32),
                j=j[rows].astype(np.int32),
                shift=shift[rows],
                blocks=_stack_blocks(
                    blocks, rows, (basis.n_orb(z_i), basis.n_orb(z_j)), "hopping row"
                ),
            )
        )
    return BlockMatrix(onsite=tuple(onsite_groups), hopping=tuple(hopping_groups))


def block_matrix_rows(
    bm: BlockMatrix,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Hopping rows of ``bm`` in canonical order (sorted by i, j, shift).

    Returns:
        ``(i, j, shift, blocks)``: int32 ``[n_pairs]``, int32 ``[n_pairs]``,
        int32 ``[n_pairs, 3]`` and a list of float32 ``[n_orb_i, n_orb_j]`` blocks.
    """
    if not bm.hopping:
        return (
            np.zeros(0, np.int32),
            np.zeros(0, np.int32),
            np.zeros((0, 3), np.int32),
            [],
        )
    i = np.concatenate([g.i for g in bm.hopping]).astype(np.int32)
    j = np.concatenate([g.j for g in bm.hopping]).astype(np.int32)
    shift = np.concatenate([g.shift for g in bm.hopping]).astype(np.int32).reshape(-1, 3)
    flat = [blk for g in bm.hopping for blk in g.blocks]
    order = canonical_row_order(i, j, shift)
    return i[order], j[order], shift[order], [flat[int(r)] for r in order]


def onsite_blocks(bm: BlockMatrix, n_atoms: int) -> list[np.ndarray]:
    """On-site blocks in atom order: a list of ``n_atoms`` float32 ``[n_orb_a, n_orb_a]``.

    Raises:
        ValueError: an atom has no on-site block, or two.
    """
    out: list[np.ndarray | None] = [None] * n_atoms
    for g in bm.onsite:
        for a, blk in zip(g.atoms, g.blocks, strict=True):
            a = int(a)
            if not 0 <= a < n_atoms:
                raise ValueError(f"on-site block for atom {a}, but only {n_atoms} atoms")
            if out[a] is not None:
                raise ValueError(f"atom {a}: more than one on-site block")
            out[a] = blk
    missing = [a for a, blk in enumerate(out) if blk is None]
    if missing:
        raise ValueError(f"atom {missing[0]}: no on-site block")
    return [blk for blk in out if blk is not None]


def lattice_shifts(
    structure: Structure,
    i: np.ndarray,
    j: np.ndarray,
    D: np.ndarray,
    *,
    tol: float = SHIFT_TOLERANCE,
) -> np.ndarray:
    """Integer lattice shifts n of rows given by their vectors ``D = r_j + n·cell − r_i``.

    ``T = D − (r_j − r_i)`` is decomposed on the periodic cell vectors (least squares, which
    is the exact inverse ``T · cell⁻¹`` restricted to the periodic axes); along
    non-periodic axes n is 0 and the part of T outside the periodic lattice must vanish.

    Args:
        structure: positions, cell and pbc.
        i, j: int ``[n]``; D: float ``[n, 3]`` (Å).
        tol: largest allowed distance of n from an integer vector (fractional units) and
            largest non-periodic remainder (Å).

    Returns:
        int32 ``[n, 3]`` (zero on non-periodic axes).

    Raises:
        ValueError: naming the first row whose shift is not an integer vector or that has a
            component along a non-periodic axis.
    """
    i = np.asarray(i, dtype=np.int64).reshape(-1)
    j = np.asarray(j, dtype=np.int64).reshape(-1)
    D = np.asarray(D, dtype=np.float64).reshape(-1, 3)
    pos = structure.positions
    T = D - (pos[j] - pos[i])  # [n, 3]
    pbc = np.asarray(structure.pbc, dtype=bool)
    n = np.zeros(T.shape, dtype=np.float64)
    remainder = T
    if pbc.any():
        periodic = structure.cell[pbc]  # [k, 3]
        coeff = T @ np.linalg.pinv(periodic)  # [n, k]
        n[:, pbc] = coeff
        remainder = T - coeff @ periodic
    rounded = np.round(n)
    frac_err = np.abs(n - rounded).max(axis=1) if n.size else np.zeros(0)
    rest = np.linalg.norm(remainder, axis=1)
    bad = np.flatnonzero((frac_err > tol) | (rest > tol) | ~np.isfinite(frac_err + rest))
    if bad.size:
        r = int(bad[0])
        if rest[r] > tol or not np.isfinite(rest[r]):
            axes = "".join("xyz"[k] for k in np.flatnonzero(~pbc)) or "none"
            reason = (
                f"D − (r_j − r_i) = {np.round(T[r], 6).tolist()} Å has a part of "
                f"{rest[r]:.3g} Å outside the periodic lattice (non-periodic axes: {axes})"
            )
        else:
            reason = (
                f"n = (D − (r_j − r_i))·cell⁻¹ = {np.round(n[r], 6).tolist()} is not an "
                f"integer vector (off by {frac_err[r]:.3g})"
            )
        raise ValueError(f"row {r} (i={i[r]}, j={j[r]}): {reason}")
    return rounded.astype(np.int32)
