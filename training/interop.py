"""``gears_h infer -o``: outputs for other tools (DeepH directories, sisl/TBtrans files).

`interop_kind` decides from ``--format`` and the output suffix: ``--format deeph`` writes one
DeepH directory per structure under ``-o DIR`` (`gears_h_core.io.deeph`), a ``.TSHS`` or
``.nc`` suffix writes a sisl Hamiltonian (`gears_h_core.io.sisl_export`; several structures
go to ``stem_{k:04d}.TSHS``). Anything else is left to `gears_h_core.io.exporters`
(msgpack, CSR ``.npz``, snapshot folders).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gears_h_core.io.wire import ModelInfo
from gears_h_core.types import SparseHamiltonian

__all__ = ["FORMATS", "interop_kind", "write_interop"]

FORMATS = ("auto", "deeph")


def interop_kind(out: Path, fmt: str) -> str | None:
    """``"deeph"``, ``"sisl"`` or None (an output of `gears_h_core.io.exporters`)."""
    from gears_h_core.io.sisl_export import SISL_SUFFIXES

    if fmt == "deeph":
        return "deeph"
    if fmt != "auto":
        raise ValueError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")
    return "sisl" if out.suffix.lower() in SISL_SUFFIXES else None


def write_interop(
    kind: str,
    results: Sequence[SparseHamiltonian],
    out: Path,
    model: ModelInfo,
    *,
    fermi_energy: float | None,
) -> tuple[list[Path], list[str]]:
    """Write ``results``; returns the paths written and notes for the user."""
    notes: list[str] = []
    if kind == "deeph":
        from gears_h_core.io.deeph import write_deeph_folders

        if fermi_energy is None:
            notes.append(
                "fermi_energy_eV unknown: wrote 0.0 to info.json (pass --fermi-energy; "
                "deepx-dock's find-fermi can determine it)"
            )
        meta = {"model": {"name": model.name, "version": model.version, "sha256": model.sha256}}
        paths = write_deeph_folders(
            results,
            out,
            fermi_energy=0.0 if fermi_energy is None else fermi_energy,
            meta=meta,
        )
        return paths, notes
    if kind == "sisl":
        from gears_h_core.io.sisl_export import write_sisl

        if len(results) == 1:
            targets = [out]
        else:
            targets = [
                out.with_name(f"{out.stem}_{k:04d}{out.suffix}") for k in range(len(results))
            ]
        return [write_sisl(sh, t) for sh, t in zip(results, targets, strict=True)], notes
    raise ValueError(f"unknown interoperability output {kind!r}")
