"""Settings of the two generators and of the built-in checks: strict pydantic models.

A YAML file given with ``--config`` holds the keys of one of these models (unknown keys are
an error); command-line flags override it. The resolved settings of every snapshot are
recorded in its ``meta.json``, so a snapshot can be reproduced from that file alone.

Defaults follow the shipped data sets (``shared/data/README.md`` §4): tight SCF convergence,
because a loose SCF alone moves H by ~0.1–0.2 meV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "CheckSettings",
    "GPAWSettings",
    "PySCFSettings",
    "load_settings",
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckSettings(_Strict):
    """What the built-in checks accept (shared by both generators)."""

    eig_tol_eV: float = Field(
        default=1e-4,
        gt=0,
        description="largest allowed |ε(stored blocks) − ε(DFT code)|, eV, for the states "
        "within window_eV of E_F (molecules: of midgap); also the float64 blocks for all states",
    )
    window_eV: float | None = Field(
        default=None,
        gt=0,
        description="energy window around E_F / midgap for the float32 comparison (eV); "
        "default 5 (GPAW) or 10 (PySCF, whose core levels sit at −500 eV and round to ~2e-4 eV "
        "in float32)",
    )
    matrix_tol_eV: float = Field(
        default=1e-4,
        gt=0,
        description="GPAW: largest allowed element deviation of H(k) (eV) and S(k) "
        "(dimensionless, same number) assembled from the float64 blocks from GPAW's own "
        "H(k), S(k) at Γ and k_test",
    )


class PySCFSettings(_Strict):
    """PySCF restricted Kohn–Sham (or Hartree–Fock) for molecules."""

    xc: str = Field(default="PBE", description="any PySCF functional name; 'HF' runs RHF")
    basis: str = Field(default="def2-svp", description="any PySCF basis name (spherical)")
    charge: int = Field(default=0, description="total charge")
    conv_tol_Ha: float = Field(default=1e-12, gt=0, description="SCF energy convergence (Ha)")
    max_cycle: int = Field(default=100, ge=1, description="largest number of SCF iterations")
    grids_level: int = Field(default=3, ge=0, le=9, description="DFT integration grid level")
    box_A: float = Field(
        default=24.0,
        gt=0,
        description="cubic box written to atoms.extxyz around the molecule (Å; grown to "
        "extent + 10 Å for large molecules); only for cell-based neighbour lists",
    )
    checks: CheckSettings = Field(default_factory=CheckSettings)


class GPAWSettings(_Strict):
    """GPAW LCAO (PAW setups) for periodic cells (or molecules in a box)."""

    xc: str = Field(default="PBE", description="GPAW functional name")
    basis: str = Field(
        default="dzp", description="GPAW LCAO basis, e.g. dzp or sz(dzp) (a subset of dzp)"
    )
    h: float = Field(default=0.2, gt=0, description="real-space grid spacing (Å)")
    kpts: tuple[int, int, int] = Field(
        default=(1, 1, 1), description="Γ-centred SCF k-mesh; 1 along non-periodic axes"
    )
    smearing_eV: float = Field(default=0.01, ge=0, description="Fermi–Dirac width (eV)")
    convergence: dict[str, float] = Field(
        default_factory=lambda: {"density": 1e-5, "energy": 1e-6},
        description="GPAW SCF convergence criteria (tight by default)",
    )
    maxiter: int = Field(default=333, ge=1, description="largest number of SCF iterations")
    charge: float = Field(default=0.0, description="total charge")
    threshold_H_eV: float = Field(
        default=1e-6, ge=0, description="keep a block if max|H| ≥ this (eV) ..."
    )
    threshold_S: float = Field(default=1e-6, ge=0, description="... or max|S| ≥ this")
    fourier_mesh: tuple[int, int, int] | None = Field(
        default=None,
        description="Γ-centred k-mesh whose H(k), S(k) are Fourier transformed; default: the "
        "smallest alias-free mesh for the basis range (1 along non-periodic axes)",
    )
    k_test: tuple[float, float, float] = Field(
        default=(0.137, 0.291, 0.0),
        description="off-mesh k (reduced) of the eigenvalue check; non-periodic components "
        "are set to 0",
    )
    checks: CheckSettings = Field(default_factory=CheckSettings)

    @field_validator("kpts", "fourier_mesh")
    @classmethod
    def _positive(cls, v: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if v is not None and any(n < 1 for n in v):
            raise ValueError(f"every entry must be ≥ 1, got {list(v)}")
        return v


def load_settings(
    kind: type[PySCFSettings] | type[GPAWSettings],
    path: str | Path | None,
    overrides: dict[str, Any],
) -> PySCFSettings | GPAWSettings:
    """Settings from an optional YAML file plus command-line overrides (None = not given).

    Raises:
        ValueError: one line naming the file and the offending key.
    """
    import yaml

    data: dict[str, Any] = {}
    where = "command line"
    if path is not None:
        p = Path(path)
        where = str(p)
        try:
            loaded = yaml.safe_load(p.read_text())
        except OSError as exc:
            raise ValueError(f"{p}: cannot read ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{p}: expected a mapping of settings")
        data = dict(loaded or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{where}: {errors}") from exc
