"""Neighbour lists with integer lattice shifts (vesin), and the `NeighborGraph` of a structure.

Convention (the one of the data sets, ``shared/data/README.md`` §2.1): a row ``(i, j, n)``
couples atom ``i`` in the home cell with atom ``j`` translated by the lattice vector
``T = n · cell``; its vector is ``D = r_j + n · cell − r_i`` (Å, float64, computed here from
the positions, never taken from the neighbour-list library). Shifts are zero along
non-periodic axes. Lists are *full* (both directions present), never contain the self pair
``(i, i, 0)``, keep periodic self-images ``(i, i, n ≠ 0)`` and keep several images of the same
``(i, j)`` as distinct rows. Rows are sorted lexicographically by ``(i, j, n_0, n_1, n_2)``.

Hopping pairs and their partners: the row ``(j, i, −n)`` is the *partner* of ``(i, j, n)``
(``H_ji(−T) = H_ij(T)ᵀ``). `canonical_pair_mask` picks one row of every partner couple and
`pair_partner_index` maps every row to its partner.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import vesin

from gears_h_core.structure import Structure
from gears_h_core.types import NeighborGraph

PairCutoff = float | Mapping[tuple[int, int], float]


def _check_cutoff(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name}: cutoff must be a positive finite number, got {value!r}")
    return value


def _safe_box(structure: Structure, cutoff: float) -> np.ndarray:
    """A well-conditioned box for vesin: the periodic cell vectors as given, every
    non-periodic vector replaced by an orthonormal complement of the periodic span, scaled to
    cover the extent of the atoms (the non-periodic vectors of a structure may be zero,
    arbitrary or tilted; they never enter a shift).

    Returns:
        float64 ``[3, 3]``, lattice vectors as rows.
    """
    cell, pbc = structure.cell, structure.pbc
    periodic = cell[pbc]  # [n_periodic, 3]
    box = np.zeros((3, 3))
    if periodic.shape[0]:
        _, sing, vt = np.linalg.svd(periodic)
        scale = max(1.0, float(sing.max()))
        if sing.min() <= 1e-8 * scale:
            axes = "".join("xyz"[k] for k in np.flatnonzero(pbc))
            raise ValueError(f"cell: singular along periodic axes ({axes})")
        complement = vt[periodic.shape[0] :]  # [3 - n_periodic, 3], orthonormal
    else:
        complement = np.eye(3)
    extent = float(np.ptp(structure.positions, axis=0).max()) if structure.n_atoms else 0.0
    length = max(1.0, extent + cutoff)
    box[pbc] = periodic
    box[~pbc] = complement * length
    if np.linalg.det(box) < 0.0 and (~pbc).any():
        box[np.flatnonzero(~pbc)[0]] *= -1.0
    return box


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros(0, np.int32),
        np.zeros(0, np.int32),
        np.zeros((0, 3), np.int32),
        np.zeros(0, np.float64),
    )


def _sort_rows(i: np.ndarray, j: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Permutation sorting rows by ``(i, j, n_0, n_1, n_2)``, ``[n]``."""
    return np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], j, i))


def _pairs_with_vectors(
    structure: Structure, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, shift, vec)`` within ``cutoff``, sorted, self pair removed; vec float64."""
    if structure.n_atoms == 0:
        i, j, shift, _ = _empty()
        return i, j, shift, np.zeros((0, 3))
    positions = np.ascontiguousarray(structure.positions, dtype=np.float64)
    box = _safe_box(structure, cutoff)
    nl = vesin.NeighborList(cutoff=cutoff, full_list=True)
    i_raw, j_raw, s_raw = nl.compute(
        positions, box, periodic=[bool(p) for p in structure.pbc], quantities="ijS"
    )
    i = np.asarray(i_raw, dtype=np.int64)
    j = np.asarray(j_raw, dtype=np.int64)
    shift = np.asarray(s_raw, dtype=np.int64).reshape(-1, 3)
    if np.any(shift[:, ~structure.pbc] != 0):
        raise RuntimeError("neighbour list returned a shift along a non-periodic axis")
    # D = r_j + n·cell − r_i in float64; only the periodic rows of the cell ever contribute.
    vec = positions[j] + shift.astype(np.float64) @ structure.cell - positions[i]  # [n, 3]
    keep = ~((i == j) & np.all(shift == 0, axis=1))
    keep &= np.linalg.norm(vec, axis=1) <= cutoff  # guard against last-ulp disagreements
    i, j, shift, vec = i[keep], j[keep], shift[keep], vec[keep]
    order = _sort_rows(i, j, shift)
    return (
        i[order].astype(np.int32),
        j[order].astype(np.int32),
        shift[order].astype(np.int32),
        vec[order],
    )


def neighbor_pairs(
    structure: Structure, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full directed neighbour list of ``structure`` within ``cutoff`` (Å).

    Works for periodic, partly periodic (slabs, any height along the non-periodic axis, zero
    non-periodic cell vectors allowed) and non-periodic structures (zero or dummy cell),
    including cells much smaller than the cutoff (many images).

    Returns:
        ``(i, j, shift, dist)``: int32 ``[n]``, int32 ``[n]``, int32 ``[n, 3]`` (zero along
        non-periodic axes), float64 ``[n]`` with ``dist = |r_j + shift · cell − r_i|``.
        Excludes ``(i, i, 0)``; keeps periodic self-images and multiple images of one pair.
        Rows are sorted by ``(i, j, shift)``.
    """
    cutoff = _check_cutoff("cutoff", cutoff)
    i, j, shift, vec = _pairs_with_vectors(structure, cutoff)
    return i, j, shift, np.linalg.norm(vec, axis=1)


def _pair_cutoff_table(pair_cutoff: PairCutoff) -> tuple[np.ndarray | float, float]:
    """A scalar cutoff, or a ``[119, 119]`` symmetric table (``-inf`` where a species pair
    gets no hopping pairs), and the largest cutoff."""
    if not isinstance(pair_cutoff, Mapping):
        value = _check_cutoff("pair_cutoff", pair_cutoff)
        return value, value
    table = np.full((119, 119), -np.inf)
    for key, value in pair_cutoff.items():
        try:
            za, zb = (int(z) for z in key)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"pair_cutoff: key {key!r} is not a pair of atomic numbers") from exc
        if not (1 <= za <= 118 and 1 <= zb <= 118):
            raise ValueError(f"pair_cutoff: key {key!r} has an invalid atomic number")
        rc = _check_cutoff(f"pair_cutoff[{key!r}]", value)
        lo, hi = min(za, zb), max(za, zb)
        if np.isfinite(table[lo, hi]) and table[lo, hi] != rc:
            raise ValueError(f"pair_cutoff: species pair ({lo}, {hi}) given twice")
        table[lo, hi] = table[hi, lo] = rc
    largest = float(table.max())
    return table, largest


def build_neighbor_graph(
    structure: Structure, edge_cutoff: float, pair_cutoff: PairCutoff
) -> NeighborGraph:
    """Interaction edges and hopping pairs of ``structure``.

    Args:
        structure: a validated structure.
        edge_cutoff: cutoff (Å) of the message-passing edges.
        pair_cutoff: cutoff (Å) of the hopping pairs, either one number for all species or a
            mapping from an unordered species pair ``(min(Z), max(Z))`` to its cutoff (keys in
            either order are accepted). A species pair **absent from the mapping gets no
            hopping pairs** (its blocks are treated as zero).

    One neighbour list is computed at the largest cutoff and filtered (vectorised).
    Both lists follow the conventions of this module (full, sorted, no self pair).
    """
    edge_cutoff = _check_cutoff("edge_cutoff", edge_cutoff)
    table, pair_max = _pair_cutoff_table(pair_cutoff)
    i, j, shift, vec = _pairs_with_vectors(structure, max(edge_cutoff, pair_max))
    dist = np.linalg.norm(vec, axis=1)  # [n]
    edge = dist <= edge_cutoff
    if isinstance(table, np.ndarray):
        z = structure.numbers
        pair = dist <= table[z[i], z[j]]
    else:
        pair = dist <= table
    return NeighborGraph(
        structure=structure,
        edge_i=i[edge],
        edge_j=j[edge],
        edge_shift=shift[edge],
        edge_vec=vec[edge],
        pair_i=i[pair],
        pair_j=j[pair],
        pair_shift=shift[pair],
        pair_vec=vec[pair],
    )


def _as_rows(
    i: np.ndarray, j: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i = np.asarray(i, dtype=np.int64).reshape(-1)
    j = np.asarray(j, dtype=np.int64).reshape(-1)
    shift = np.asarray(shift, dtype=np.int64).reshape(-1, 3)
    if not (i.shape[0] == j.shape[0] == shift.shape[0]):
        raise ValueError(
            f"i, j, shift: inconsistent lengths {i.shape[0]}, {j.shape[0]}, {shift.shape[0]}"
        )
    return i, j, shift


def canonical_pair_mask(i: np.ndarray, j: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """True for exactly one row of every partner couple ``(i, j, n)`` / ``(j, i, −n)``.

    A row is canonical when ``i < j``, or ``i == j`` and ``n`` is lexicographically positive
    (its first non-zero component is > 0). The self pair ``(i, i, 0)`` is never canonical.

    Args:
        i, j: int ``[n]``; shift: int ``[n, 3]``.

    Returns:
        bool ``[n]``.
    """
    i, j, shift = _as_rows(i, j, shift)
    nonzero = shift != 0  # [n, 3]
    first = np.argmax(nonzero, axis=1)  # first non-zero component (0 when all zero)
    lead = np.take_along_axis(shift, first[:, None], axis=1)[:, 0]
    return (i < j) | ((i == j) & (lead > 0))


def pair_partner_index(i: np.ndarray, j: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """For every row ``(i, j, n)`` the index of its partner row ``(j, i, −n)``.

    The result is an involution (``p[p] == arange(n)``); the self pair would be its own partner.

    Args:
        i, j: int ``[n]``; shift: int ``[n, 3]``.

    Returns:
        int64 ``[n]``.

    Raises:
        ValueError: a row has no partner (the message names the first such row) or a row
            occurs twice.
    """
    i, j, shift = _as_rows(i, j, shift)
    n = i.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    # fast path: one int64 key per row, one sort; the general path below names bad rows and
    # covers shifts beyond ±127 and structures too large for the key
    n_atoms = int(max(i.max(), j.max())) + 1
    if n_atoms < _MAX_KEY_ATOMS and np.all(np.abs(shift) < _SHIFT_BASE // 2):
        row = pair_keys(n_atoms, i, j, shift)
        wanted = pair_keys(n_atoms, j, i, -shift)
        order = np.argsort(row)
        sorted_keys = row[order]
        pos = np.minimum(np.searchsorted(sorted_keys, wanted), n - 1)
        if np.array_equal(sorted_keys[pos], wanted) and np.all(np.diff(sorted_keys) > 0):
            return order[pos].astype(np.int64)
    keys = np.column_stack([i, j, shift])  # [n, 5]
    partner_keys = np.column_stack([j, i, -shift])  # [n, 5]
    _, inverse = np.unique(np.concatenate([keys, partner_keys]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    row_id, partner_id = inverse[:n], inverse[n:]
    order = np.argsort(row_id, kind="stable")
    sorted_ids = row_id[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size:
        k = int(order[dup[0] + 1])
        raise ValueError(f"row {k} (i={i[k]}, j={j[k]}, shift={shift[k].tolist()}) occurs twice")
    pos = np.minimum(np.searchsorted(sorted_ids, partner_id), n - 1)
    found = sorted_ids[pos] == partner_id
    if not np.all(found):
        k = int(np.flatnonzero(~found)[0])
        raise ValueError(
            f"row {k} (i={i[k]}, j={j[k]}, shift={shift[k].tolist()}) has no partner "
            f"(i={j[k]}, j={i[k]}, shift={(-shift[k]).tolist()})"
        )
    return order[pos]


_SHIFT_BASE = 256
#: (i·n_atoms + j)·256³ stays below 2⁶³ for fewer atoms than this
_MAX_KEY_ATOMS = 500_000


def pair_keys(n_atoms: int, i: np.ndarray, j: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Unique int64 key per (i, j, shift) row (shift components in −128..127).

    Keys of rows from different lists of the same structure are comparable, so rows can be
    matched with ``np.searchsorted`` instead of a Python dict.
    """
    s = np.asarray(shift, np.int64) + _SHIFT_BASE // 2
    if np.any((s < 0) | (s >= _SHIFT_BASE)):
        raise ValueError("lattice shift out of the supported range −128..127")
    ij = np.asarray(i, np.int64) * n_atoms + np.asarray(j, np.int64)
    return ((ij * _SHIFT_BASE + s[:, 0]) * _SHIFT_BASE + s[:, 1]) * _SHIFT_BASE + s[:, 2]


def pair_cutoff_to_json(pair_cutoff: Mapping[tuple[int, int], float]) -> dict[str, float]:
    """``{(a, b): rc}`` -> ``{"a-b": rc}`` with a <= b (JSON object keys)."""
    return {f"{min(a, b)}-{max(a, b)}": float(rc) for (a, b), rc in pair_cutoff.items()}


def pair_cutoff_from_json(data: Mapping[str, float]) -> dict[tuple[int, int], float]:
    """Inverse of `pair_cutoff_to_json`."""
    out: dict[tuple[int, int], float] = {}
    for key, rc in data.items():
        a, b = (int(x) for x in key.split("-"))
        out[(a, b)] = float(rc)
    return out
