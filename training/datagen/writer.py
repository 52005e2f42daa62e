"""Write one snapshot folder atomically: temporary folder -> checks -> rename.

The files are those of ``shared/data/README.md`` §2 with the pickle-free block layout of
`gears_h_core.io.exporters` (``hblocks_flat`` / ``sblocks_flat``: every block's float32
elements in C order, shapes from ``orbital_ells.json``), which the project's reader loads
like the pickled object arrays; plus ``ref_eigenvalues.npz`` and ``meta.json``.

Everything is written into ``OUTDIR/.{name}.tmp-*`` first; the checks
(`training.datagen.checks`) run on that folder; then it is renamed to ``OUTDIR/{name}``
(checks passed) or ``OUTDIR/.bad/{name}`` (a check failed; hidden from dataset readers,
kept for inspection). On any error the temporary folder is removed: no partial folder is
ever left under a snapshot name.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gears_h_core import __version__ as gears_h_version
from gears_h_core.assemble.blocks import block_matrix_from_rows
from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.io.exporters import snapshot_files
from gears_h_core.structure import Structure, StructureError
from gears_h_core.types import SparseHamiltonian
from training.datagen.blocks import DatagenError, DFTBlocks
from training.datagen.checks import run_checks
from training.datagen.config import CheckSettings

__all__ = ["BAD_DIR", "SnapshotOutcome", "is_finished", "write_snapshot"]

BAD_DIR = ".bad"
META_FILE = "meta.json"
REF_FILE = "ref_eigenvalues.npz"


@dataclass(frozen=True)
class SnapshotOutcome:
    """Where a snapshot went and whether its checks passed."""

    name: str
    path: Path
    ok: bool
    failed: tuple[str, ...]
    summary: str


def is_finished(folder: Path) -> bool:
    """A published snapshot of ours: ``meta.json`` with ``checks.ok`` true."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and bool(meta.get("checks", {}).get("ok", False))


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # plain numeric arrays: no pickle
    return buf.getvalue()


def _reference_file(blocks: DFTBlocks) -> bytes:
    ref = blocks.reference
    arrays: dict[str, np.ndarray] = {"eps_gamma": np.asarray(ref.eps_gamma, np.float64)}
    if ref.eps_gamma_scf is not None:
        arrays["eps_gamma_scf"] = np.asarray(ref.eps_gamma_scf, np.float64)
    if ref.k_test is not None and ref.eps_ktest is not None:
        arrays["eps_ktest"] = np.asarray(ref.eps_ktest, np.float64)
        arrays["k_test"] = np.asarray(ref.k_test, np.float64)
    arrays["e_fermi"] = np.asarray(ref.center, np.float64)
    if ref.homo is not None:
        arrays["homo"] = np.asarray(ref.homo, np.float64)
    if ref.lumo is not None:
        arrays["lumo"] = np.asarray(ref.lumo, np.float64)
    return _npz(**arrays)


def _sparse(blocks: DFTBlocks) -> SparseHamiltonian:
    try:
        structure = Structure.from_ase(blocks.atoms)
    except StructureError as exc:
        raise DatagenError(f"structure: {exc}") from exc
    basis = OrbitalBasis(blocks.shells)
    numbers = structure.numbers

    def bm(onsite: list[np.ndarray], hop: list[np.ndarray]):  # -> BlockMatrix
        return block_matrix_from_rows(
            numbers,
            basis,
            [np.asarray(b, np.float32) for b in onsite],
            blocks.i,
            blocks.j,
            blocks.shift,
            [np.asarray(b, np.float32) for b in hop],
        )

    return SparseHamiltonian(
        structure=structure,
        basis=basis,
        H=bm(blocks.onsite_h, blocks.hop_h),
        S=bm(blocks.onsite_s, blocks.hop_s),
    )


def _summary(name: str, checks: dict[str, Any], n_rows: int) -> str:
    parts = [f"{n_rows} rows"]
    for point in ("gamma", "k_test"):
        c = checks.get(point, {})
        if c.get("f32_vs_code_window") is not None:
            parts.append(f"{point} Δε {c['f32_vs_code_window']:.1e} eV")
    if checks.get("S_min_eigenvalue_gamma") is not None:
        parts.append(f"min eig S {checks['S_min_eigenvalue_gamma']:.1e}")
    return f"{name}: " + ", ".join(parts)


def write_snapshot(
    blocks: DFTBlocks,
    outdir: Path,
    name: str,
    *,
    settings: dict[str, Any],
    provenance: dict[str, Any],
    check_settings: CheckSettings,
    default_window: float,
    threads: int,
    started: float,
) -> SnapshotOutcome:
    """Write, check and publish one snapshot.

    Args:
        blocks: the generator's output.
        outdir: the dataset folder (created if needed).
        name: the snapshot folder name.
        settings: the resolved generator settings (recorded in meta.json).
        provenance: ``input`` (file, frame), ``geometry`` and ``seed`` (sampling record).
        check_settings: tolerances; default_window: window (eV) when not set there.
        threads: threads the DFT code used (recorded).
        started: ``time.perf_counter()`` at the start of this structure (total wall time).

    Returns:
        `SnapshotOutcome` (path under ``outdir`` or ``outdir/.bad``).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=outdir))
    try:
        sh = _sparse(blocks)
        files = snapshot_files(sh, {})
        files.pop(META_FILE, None)
        files[REF_FILE] = _reference_file(blocks)
        for fname, data in files.items():
            (tmp / fname).write_bytes(data)

        t0, c0 = time.perf_counter(), time.process_time()
        checks = run_checks(tmp, blocks, check_settings, default_window)
        check_wall, check_cpu = time.perf_counter() - t0, time.process_time() - c0

        n_basis = int(sh.basis.orbital_offsets(sh.structure.numbers)[-1])
        meta: dict[str, Any] = {
            **blocks.meta,
            "units": {"H": "eV", "S": "dimensionless", "D": "Angstrom", "positions": "Angstrom"},
            "n_atoms": len(blocks.atoms),
            "n_basis": n_basis,
            "n_offdiag_rows": len(blocks.i),
            "geometry": provenance.get("geometry"),
            "seed": provenance.get("seed"),
            "input": provenance.get("input"),
            "generator": {"name": "gears_h datagen", "version": gears_h_version},
            "settings": settings,
            "cost": {
                **blocks.cost,
                "threads": threads,
                "check_wall_s": check_wall,
                "check_cpu_s": check_cpu,
                "total_wall_s": time.perf_counter() - started,
            },
            "checks": checks,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, allow_nan=True) + "\n")
        os.chmod(tmp, 0o755)
        if checks["ok"]:
            target = outdir / name
        else:
            (outdir / BAD_DIR).mkdir(exist_ok=True)
            target = outdir / BAD_DIR / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SnapshotOutcome(
        name=name,
        path=target,
        ok=bool(checks["ok"]),
        failed=tuple(checks.get("failed", ())),
        summary=_summary(name, checks, len(blocks.i)),
    )
