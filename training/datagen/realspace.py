"""Bloch matrices on a Γ-centred k-mesh -> real-space atom-pair blocks H_ij(T), S_ij(T).

Convention (SPEC §2, data README §3): ``X(k) = Σ_n exp(+2πi k·n) X(n)`` with ``X(n)`` the
block of atom i (home cell) with atom j translated by ``T = n·cell``. On an ``N0×N1×N2``
Γ-centred mesh the inverse transform

    X_mesh(m) = (1/N_k) Σ_k exp(−2πi k·m) X(k) = Σ_L X(m + N∘L)

returns the sum of all images ``n ≡ m (mod N)``: the mesh *aliases* images N cells apart.
A block is non-zero only within the interaction range of its pair, so when no two images of
one class lie within range (the mesh is *alias-free*), the class holds a single image: the
one nearest to atom i, to which the block is assigned. `alias_free_mesh` picks the
smallest such mesh, `alias_check` verifies every stored row.

Partner rows are exact: the transform is symmetrised, ``X(m) ← (X(m) + X(−m)ᵀ)/2``, and
only one row of each partner pair is cut from it; the other is its transpose, so
``H_ji(−T) = H_ij(T)ᵀ`` holds bit for bit.

Everything here is numpy; the GPAW driver (`training.datagen.gpaw_run`) supplies the
matrices and is the only part that needs GPAW.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RealSpaceRows",
    "alias_check",
    "alias_free_mesh",
    "mesh_kpoints",
    "realspace_rows",
]


@dataclass(frozen=True, eq=False)
class RealSpaceRows:
    """Real-space blocks cut from the mesh transform (float64).

    Attributes:
        onsite_h, onsite_s: per atom ``[n_orb_a, n_orb_a]``.
        i, j: int64 ``[n_pairs]``; shift: int64 ``[n_pairs, 3]`` (integer lattice shift n).
        hop_h, hop_s: per row ``[n_orb_i, n_orb_j]``.
        max_imag: largest |Im X(m)| over all shifts (H in eV, S), relative to max |X|.
        dropped_max_h, dropped_max_s: largest element of the blocks dropped by the threshold.
        half_mesh_self_rows: self-image rows (i, i, m ≡ −m ≠ 0) above the threshold: they
            cannot be assigned (images n and −n are equally near); must be 0.
    """

    onsite_h: list[np.ndarray]
    onsite_s: list[np.ndarray]
    i: np.ndarray
    j: np.ndarray
    shift: np.ndarray
    hop_h: list[np.ndarray]
    hop_s: list[np.ndarray]
    max_imag: float
    dropped_max_h: float
    dropped_max_s: float
    half_mesh_self_rows: int


def _plane_spacings(cell: np.ndarray) -> np.ndarray:
    """Distance between adjacent lattice planes of each axis, 1/|b_a| (Å) ``[3]``."""
    return 1.0 / np.linalg.norm(np.linalg.inv(np.asarray(cell, np.float64)).T, axis=1)


def alias_free_mesh(cell: np.ndarray, pbc: np.ndarray, interaction_range: float) -> tuple[int, ...]:
    """Smallest Γ-centred mesh with ``N_a · spacing_a > 2 · range`` on every periodic axis.

    Then any image other than the nearest one of an in-range block lies farther than the
    range (|N∘L·cell| ≥ N_a · spacing_a for L_a ≠ 0), so no block collects two images.

    Args:
        cell: lattice vectors as rows (Å), full rank.
        pbc: bool ``[3]``.
        interaction_range: largest distance at which a block can be non-zero (Å).

    Returns:
        ``(N0, N1, N2)``, 1 along non-periodic axes.
    """
    spacing = _plane_spacings(cell)
    return tuple(
        int(np.floor(2.0 * interaction_range / spacing[a])) + 1 if pbc[a] else 1 for a in range(3)
    )


def mesh_kpoints(mesh: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """Reduced k-points of a Γ-centred mesh in C order of ``(a0, a1, a2)``, ``k = a / N``
    folded into [−½, ½). Returns float64 ``[N0·N1·N2, 3]``; the first is Γ."""
    n = np.asarray(mesh, dtype=np.int64)
    idx = np.stack(np.meshgrid(*(np.arange(x) for x in n), indexing="ij"), -1).reshape(-1, 3)
    k = idx / n
    return np.where(k >= 0.5, k - 1.0, k)


def _atom_block_max(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """max |x| per atom-pair block: ``[..., N, N]`` -> ``[..., n_atoms, n_atoms]``."""
    a = np.abs(x)
    a = np.maximum.reduceat(a, offsets[:-1], axis=-2)
    return np.maximum.reduceat(a, offsets[:-1], axis=-1)


def realspace_rows(
    Hk: np.ndarray,
    Sk: np.ndarray,
    mesh: tuple[int, ...],
    kpts: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    offsets: np.ndarray,
    threshold_h: float,
    threshold_s: float,
) -> RealSpaceRows:
    """Fourier transform mesh Bloch matrices and cut the kept blocks.

    Args:
        Hk, Sk: ``[N_k, N, N]`` (complex or real) on the mesh, in any order of ``kpts``.
        mesh: ``(N0, N1, N2)``.
        kpts: reduced k-points ``[N_k, 3]`` of ``Hk``/``Sk``: all points ``a / N`` of the mesh.
        positions: ``[n_atoms, 3]`` Å, as used by the DFT code; cell: rows, Å; pbc ``[3]``.
        offsets: first orbital of every atom plus the total, ``[n_atoms + 1]``.
        threshold_h, threshold_s: keep a block if max|H| ≥ threshold_h or max|S| ≥
            threshold_s (both directions of a pair are kept or dropped together).

    Returns:
        `RealSpaceRows`; rows in canonical order of their generation (i, j, shift).
    """
    mesh_arr = np.asarray(mesh, dtype=np.int64)
    n_k = int(np.prod(mesh_arr))
    if Hk.shape[0] != n_k or Sk.shape[0] != n_k or kpts.shape != (n_k, 3):
        raise ValueError(f"need all {n_k} k-points of the {tuple(mesh)} mesh, got {Hk.shape[0]}")
    idx = np.mod(np.rint(np.asarray(kpts) * mesh_arr), mesh_arr).astype(np.int64)
    if np.abs(np.asarray(kpts) * mesh_arr - np.rint(np.asarray(kpts) * mesh_arr)).max() > 1e-8:
        raise ValueError("k-points are not on the mesh")
    flat = np.ravel_multi_index(idx.T, tuple(mesh_arr))
    if np.unique(flat).size != n_k:
        raise ValueError("k-points do not cover the mesh")
    n_orb = int(offsets[-1])

    def transform(xk: np.ndarray) -> tuple[np.ndarray, float]:
        grid = np.empty((*mesh_arr, n_orb, n_orb), dtype=np.complex128)
        grid.reshape(n_k, n_orb, n_orb)[flat] = xk
        xm = np.fft.fftn(grid, axes=(0, 1, 2)) / n_k  # X(m) = (1/N_k) Σ_k e^{−2πi k·m} X(k)
        scale = max(float(np.abs(xm).max()), 1e-300)
        imag = float(np.abs(xm.imag).max()) / scale
        real = xm.real
        # X(m) <- (X(m) + X(−m)ᵀ)/2: exact partner transposes
        neg = real[tuple(np.ix_(*[(-np.arange(x)) % x for x in mesh_arr]))]
        sym = 0.5 * (real + np.swapaxes(neg, -1, -2))
        return sym.reshape(n_k, n_orb, n_orb), imag

    h_m, imag_h = transform(np.asarray(Hk))
    s_m, imag_s = transform(np.asarray(Sk))
    m_all = np.stack(np.unravel_index(np.arange(n_k), tuple(mesh_arr)), -1)  # [n_k, 3]
    neg_flat = np.ravel_multi_index(((-m_all) % mesh_arr).T, tuple(mesh_arr))

    n_atoms = offsets.size - 1
    bmax_h = _atom_block_max(h_m, offsets)  # [n_k, n_atoms, n_atoms]
    bmax_s = _atom_block_max(s_m, offsets)
    keep = (bmax_h >= threshold_h) | (bmax_s >= threshold_s)

    pos = np.asarray(positions, np.float64)
    cell = np.asarray(cell, np.float64)
    per = np.asarray(pbc, bool)
    L_range = [range(-2, 2) if per[a] and mesh_arr[a] > 1 else range(1) for a in range(3)]
    L_cand = np.array(list(itertools.product(*L_range)), dtype=np.int64)  # [n_L, 3]
    d = pos[None, :, :] - pos[:, None, :]  # [i, j, 3]: r_j − r_i

    sl = [slice(int(offsets[a]), int(offsets[a + 1])) for a in range(n_atoms)]
    onsite_h = [h_m[0][sl[a], sl[a]].copy() for a in range(n_atoms)]
    onsite_s = [s_m[0][sl[a], sl[a]].copy() for a in range(n_atoms)]
    rows_i: list[int] = []
    rows_j: list[int] = []
    rows_n: list[np.ndarray] = []
    hop_h: list[np.ndarray] = []
    hop_s: list[np.ndarray] = []
    dropped_h = 0.0
    dropped_s = 0.0
    half_self = 0
    iu, ju = np.triu_indices(n_atoms)  # one direction of every pair: i ≤ j
    d_u = d[iu, ju]  # [n_u, 3]
    for q in range(n_k):
        m = m_all[q]
        # i == j: only one of the classes m, −m (the other is its transpose); never m = 0
        # (on-site) and never m ≡ −m ≠ 0 (images n and −n equally near: unassignable)
        self_ok = q < int(neg_flat[q])
        half = q == int(neg_flat[q]) and q != 0
        valid = (iu != ju) | self_ok
        k_q = keep[q, iu, ju]
        lost = valid & ~k_q
        if lost.any():
            dropped_h = max(dropped_h, float(bmax_h[q, iu[lost], ju[lost]].max()))
            dropped_s = max(dropped_s, float(bmax_s[q, iu[lost], ju[lost]].max()))
        if half:
            half_self += int(np.count_nonzero(k_q & (iu == ju)))
        sel = np.flatnonzero(valid & k_q)
        if sel.size == 0:
            continue
        cand = m[None, :] + L_cand * mesh_arr[None, :]  # [n_L, 3]
        dist = np.linalg.norm(d_u[sel][:, None, :] + (cand @ cell)[None, :, :], axis=2)
        best = cand[np.argmin(dist, axis=1)]  # [n_sel, 3]: nearest image of the class
        for r, n in zip(sel.tolist(), best, strict=True):
            i, j = int(iu[r]), int(ju[r])
            bh = h_m[q][sl[i], sl[j]].copy()
            bs = s_m[q][sl[i], sl[j]].copy()
            rows_i += [i, j]
            rows_j += [j, i]
            rows_n += [n, -n]
            hop_h += [bh, bh.T.copy()]
            hop_s += [bs, bs.T.copy()]
    shift = np.array(rows_n, dtype=np.int64).reshape(-1, 3)
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], rows_j, rows_i))
    return RealSpaceRows(
        onsite_h=onsite_h,
        onsite_s=onsite_s,
        i=np.asarray(rows_i, np.int64)[order],
        j=np.asarray(rows_j, np.int64)[order],
        shift=shift[order],
        hop_h=[hop_h[int(r)] for r in order],
        hop_s=[hop_s[int(r)] for r in order],
        max_imag=max(imag_h, imag_s),
        dropped_max_h=dropped_h,
        dropped_max_s=dropped_s,
        half_mesh_self_rows=half_self,
    )


def alias_check(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    mesh: tuple[int, ...],
    i: np.ndarray,
    j: np.ndarray,
    shift: np.ndarray,
    reach: np.ndarray,
    extra: float,
) -> dict[str, float | int | bool]:
    """Is every stored row the only image of its mesh class within interaction range?

    A block (i, j, T) can be non-zero only for ``|D| < reach_i + reach_j + extra`` (basis
    cutoffs, plus twice the largest PAW projector radius for the projector term of H). The
    row is alias-free when every other image ``D + N∘L·cell`` (L ≠ 0) lies beyond that.

    Returns:
        ``{"ok", "rows_aliased", "min_margin_A", "mesh"}`` with the margin = smallest
        (alias distance − range) over all rows (positive when alias-free).
    """
    mesh_arr = np.asarray(mesh, dtype=np.int64)
    per = np.asarray(pbc, bool)
    pos = np.asarray(positions, np.float64)
    cell = np.asarray(cell, np.float64)
    D = pos[j] + shift.astype(np.float64) @ cell - pos[i]  # [P, 3]
    rng = [range(-2, 3) if per[a] and mesh_arr[a] > 1 else range(1) for a in range(3)]
    L = np.array([x for x in itertools.product(*rng) if any(x)], dtype=np.int64).reshape(-1, 3)
    limit = reach[i] + reach[j] + extra  # [P]
    if L.size == 0 or D.shape[0] == 0:
        return {"ok": True, "rows_aliased": 0, "min_margin_A": None, "mesh": mesh_arr.tolist()}
    alias = D[:, None, :] + ((L * mesh_arr[None, :]) @ cell)[None, :, :]  # [P, n_L, 3]
    dmin = np.linalg.norm(alias, axis=2).min(axis=1)
    margin = dmin - limit
    bad = int(np.count_nonzero(margin <= 0))
    return {
        "ok": bad == 0,
        "rows_aliased": bad,
        "min_margin_A": float(margin.min()),
        "mesh": mesh_arr.tolist(),
    }
