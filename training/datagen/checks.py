"""The built-in checks, run on every written snapshot before it is published.

1. **Hermiticity** of what was cut (float64): on-site blocks symmetric, every row (i, j, n)
   has its partner (j, i, −n) holding the transpose.
2. **Read back** with the project's reader (`training.data.snapshot.read_snapshot`,
   validating), so the checks below see exactly what a user of the folder gets.
3. **S positive definite**: smallest eigenvalue of S(Γ) (and S(k_test)) from the stored
   float32 blocks.
4. **Eigenvalues**: the generalized problem assembled from the stored float32 blocks
   against the DFT code's own eigenvalues at Γ (and at the off-mesh ``k_test`` for
   periodic cells), for the states within a window around E_F / midgap; the float64 blocks
   against all of the code's states; and, where the code's own Bloch matrices are at hand,
   element by element.

Every number goes into ``meta.json`` → ``checks``; ``ok`` is False (and ``failed`` lists why)
when any required comparison exceeds its tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg as sla

from gears_h_core.types import SparseHamiltonian
from training.datagen.blocks import DFTBlocks
from training.datagen.config import CheckSettings

__all__ = ["dense_bloch", "run_checks", "symmetry_report"]


def dense_bloch(
    offsets: np.ndarray,
    onsite: list[np.ndarray],
    i: np.ndarray,
    j: np.ndarray,
    shift: np.ndarray,
    blocks: list[np.ndarray],
    k: np.ndarray | None,
) -> np.ndarray:
    """Dense ``X(k) = Σ_n exp(+2πi k·n) X(n)`` (float64 at Γ when ``k`` is None, else complex)."""
    n = int(offsets[-1])
    out = np.zeros((n, n), np.float64 if k is None else np.complex128)
    for a, b in enumerate(onsite):
        out[offsets[a] : offsets[a + 1], offsets[a] : offsets[a + 1]] += b
    phase = np.ones(len(i)) if k is None else np.exp(2j * np.pi * (shift.astype(np.float64) @ k))
    for r in range(len(i)):
        a, b = int(i[r]), int(j[r])
        out[offsets[a] : offsets[a + 1], offsets[b] : offsets[b + 1]] += phase[r] * blocks[r]
    return out


def symmetry_report(blocks: DFTBlocks) -> dict[str, Any]:
    """On-site symmetry and partner transposes of the float64 rows (H and S)."""
    key = {
        (int(a), int(b), *map(int, n)): r
        for r, (a, b, n) in enumerate(zip(blocks.i, blocks.j, blocks.shift, strict=True))
    }
    missing = 0
    dev_h = 0.0
    dev_s = 0.0
    self_rows = 0
    for r, (a, b, n) in enumerate(zip(blocks.i, blocks.j, blocks.shift, strict=True)):
        if a == b and not np.any(n):
            self_rows += 1
        q = key.get((int(b), int(a), *(-int(x) for x in n)))
        if q is None:
            missing += 1
            continue
        dev_h = max(dev_h, float(np.abs(blocks.hop_h[r] - blocks.hop_h[q].T).max(initial=0.0)))
        dev_s = max(dev_s, float(np.abs(blocks.hop_s[r] - blocks.hop_s[q].T).max(initial=0.0)))
    asym_h = max((float(np.abs(b - b.T).max()) for b in blocks.onsite_h), default=0.0)
    asym_s = max((float(np.abs(b - b.T).max()) for b in blocks.onsite_s), default=0.0)
    ok = missing == 0 and self_rows == 0 and max(dev_h, dev_s, asym_h, asym_s) <= 1e-10
    return {
        "onsite_max_asym_eV": asym_h,
        "onsite_max_asym_S": asym_s,
        "pair_transpose_max_dev_eV": dev_h,
        "pair_transpose_max_dev_S": dev_s,
        "rows_without_partner": missing,
        "self_rows": self_rows,
        "duplicate_rows": len(blocks.i) - len(key),
        "ok": bool(ok and len(key) == len(blocks.i)),
    }


def _compare(eps: np.ndarray, ref: np.ndarray, center: float, window: float) -> dict[str, Any]:
    """Max |Δε| over all of the code's states and over those within ±window of center (the
    highest state at or below and the lowest above the center always included)."""
    ref = np.sort(np.asarray(ref, np.float64))
    n = min(ref.size, eps.size)
    diff = np.abs(np.sort(eps)[:n] - ref[:n])
    inside = np.abs(ref[:n] - center) <= window
    below = np.flatnonzero(ref[:n] <= center)
    above = np.flatnonzero(ref[:n] > center)
    inside[below[-1:]] = True  # the states next to E_F / midgap always count
    inside[above[:1]] = True
    return {
        "all": float(diff.max()) if n else None,
        "window": float(diff[inside].max()) if inside.any() else None,
        "n_window": int(np.count_nonzero(inside)),
        "n": int(n),
    }


def _eig(h: np.ndarray, s: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(h) and not np.any(h.imag) and not np.any(np.asarray(s).imag):
        h, s = h.real, np.asarray(s).real
    return np.asarray(sla.eigh(h, s, eigvals_only=True), np.float64)


def _stored_matrices(sh: SparseHamiltonian, k: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """H and S at Γ (k None) or k as assembled from what the project's reader gives."""
    from gears_h_core.assemble.sparse import gamma_fold, hamiltonian_at_k

    if sh.S is None:
        raise ValueError("the folder has no overlap blocks")
    if k is None:
        numbers = sh.structure.numbers
        h = gamma_fold(sh.H, sh.basis, numbers).toarray()
        s = gamma_fold(sh.S, sh.basis, numbers).toarray()
        return h, s
    hk, sk = hamiltonian_at_k(sh, k)
    return hk.toarray(), sk.toarray()  # type: ignore[union-attr]  # S checked above


def _point(
    name: str,
    sh: SparseHamiltonian,
    blocks: DFTBlocks,
    offsets: np.ndarray,
    k: np.ndarray | None,
    eps_code: np.ndarray,
    eps_scf: np.ndarray | None,
    h_code: np.ndarray | None,
    s_code: np.ndarray | None,
    settings: CheckSettings,
    window: float,
    require_scf: bool,
    failed: list[str],
) -> dict[str, Any]:
    """All comparisons at one k-point (Γ when ``k`` is None)."""
    tol = settings.eig_tol_eV
    center = blocks.reference.center
    out: dict[str, Any] = {"k": None if k is None else np.asarray(k).tolist()}

    h32, s32 = _stored_matrices(sh, k)
    s_min = float(np.linalg.eigvalsh(s32).min())
    out["S_min_eigenvalue"] = s_min
    if not s_min > 0.0:
        failed.append(f"{name}: S not positive definite (smallest eigenvalue {s_min:.3g})")
        return out
    eps32 = _eig(h32, s32)
    c = _compare(eps32, eps_code, center, window)
    out.update(f32_vs_code_window=c["window"], f32_vs_code_all=c["all"], n_window=c["n_window"])
    if c["window"] is None or c["window"] > tol:
        failed.append(
            f"{name}: stored-block eigenvalues differ from the code's by {c['window']} eV"
        )
    if eps_scf is not None:
        cs = _compare(eps32, eps_scf, center, window)
        out.update(f32_vs_scf_window=cs["window"], f32_vs_scf_all=cs["all"])
        if require_scf and (cs["window"] is None or cs["window"] > tol):
            failed.append(
                f"{name}: stored-block eigenvalues differ from the SCF's by {cs['window']} eV"
            )

    kk = None if k is None else np.asarray(k, np.float64)
    h64 = dense_bloch(offsets, blocks.onsite_h, blocks.i, blocks.j, blocks.shift, blocks.hop_h, kk)
    s64 = dense_bloch(offsets, blocks.onsite_s, blocks.i, blocks.j, blocks.shift, blocks.hop_s, kk)
    c64 = _compare(_eig(h64, s64), eps_code, center, window)
    out.update(f64_vs_code_all=c64["all"], f64_vs_code_window=c64["window"])
    if c64["all"] is None or c64["all"] > tol:
        failed.append(
            f"{name}: float64-block eigenvalues differ from the code's by {c64['all']} eV"
        )
    if h_code is not None and s_code is not None:
        dh = float(np.abs(h64 - h_code).max())
        ds = float(np.abs(s64 - s_code).max())
        out.update(f64_H_minus_code_H_max=dh, f64_S_minus_code_S_max=ds)
        out["f32_H_minus_code_H_max"] = float(np.abs(h32 - h_code).max())
        if dh > settings.matrix_tol_eV or ds > settings.matrix_tol_eV:
            failed.append(
                f"{name}: H/S assembled from the blocks differ from the code's own matrices "
                f"element-wise (H {dh:.3g} eV, S {ds:.3g})"
            )
    return out


def run_checks(
    folder: Path, blocks: DFTBlocks, settings: CheckSettings, default_window: float
) -> dict[str, Any]:
    """Run every check on the written (not yet published) ``folder``.

    Args:
        folder: the snapshot folder as written (without meta.json is fine).
        blocks: the float64 blocks and the code's reference.
        settings: tolerances.
        default_window: window (eV) when ``settings.window_eV`` is None.

    Returns:
        The ``checks`` record for meta.json, with ``ok`` and (when not ok) ``failed``.
    """
    from training.data.snapshot import DatasetError, read_snapshot

    failed: list[str] = []
    window = settings.window_eV if settings.window_eV is not None else default_window
    checks: dict[str, Any] = {
        "tolerance_eV": settings.eig_tol_eV,
        "matrix_tolerance": settings.matrix_tol_eV,
        "window_eV": window,
        "window_center_eV": blocks.reference.center,
    }
    sym = symmetry_report(blocks)
    checks["symmetry"] = sym
    if not sym["ok"]:
        failed.append("symmetry: rows without transposed partner or asymmetric on-site blocks")
    for name, extra in blocks.extra_checks.items():
        checks[name] = extra
        if not extra.get("ok", False):
            failed.append(f"{name}: {extra}")
    sizes = [sum(2 * ell + 1 for ell in blocks.shells[int(z)]) for z in blocks.atoms.numbers]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ref = blocks.reference
    require_scf = blocks.meta.get("code") == "PySCF"  # PySCF: compare with mo_energy too
    try:
        sh = read_snapshot(folder, validate=True).hamiltonian
        checks["gamma"] = _point(
            "gamma",
            sh,
            blocks,
            offsets,
            None,
            ref.eps_gamma,
            ref.eps_gamma_scf,
            ref.H_gamma,
            ref.S_gamma,
            settings,
            window,
            require_scf,
            failed,
        )
        if ref.k_test is not None and ref.eps_ktest is not None:
            checks["k_test"] = _point(
                "k_test",
                sh,
                blocks,
                offsets,
                ref.k_test,
                ref.eps_ktest,
                None,
                ref.H_ktest,
                ref.S_ktest,
                settings,
                window,
                False,
                failed,
            )
    except DatasetError as exc:
        checks["read_back"] = {"ok": False, "error": str(exc)}
        failed.append(f"read back: {exc}")
    else:
        checks["read_back"] = {"ok": True}
    s_min = [checks[p]["S_min_eigenvalue"] for p in ("gamma", "k_test") if p in checks]
    checks["S_positive_definite"] = bool(s_min) and all(x > 0 for x in s_min)
    checks["S_min_eigenvalue_gamma"] = checks.get("gamma", {}).get("S_min_eigenvalue")
    checks["ok"] = not failed
    if failed:
        checks["failed"] = failed
    return checks
