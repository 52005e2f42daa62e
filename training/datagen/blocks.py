"""What a generator hands to the writer: float64 blocks of one structure plus the DFT code's
own eigenvalues and matrices to check them against.

Both generators (`training.datagen.pyscf_run`, `training.datagen.gpaw_run`) return a
`DFTBlocks`; the writer (`training.datagen.writer`) stores the blocks as float32, reads the
folder back and runs the checks (`training.datagen.checks`) against `CodeReference`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["CodeReference", "DFTBlocks", "DatagenError"]


class DatagenError(ValueError):
    """A user-facing failure of one structure (bad input, SCF not converged): one line."""


@dataclass(frozen=True, eq=False)
class CodeReference:
    """The DFT code's own results, computed without the stored blocks (eV).

    Attributes:
        eps_gamma: the code's eigenvalues at Γ, ascending ``[n_bands]`` (GPAW: its own
            diagonalisation of H(Γ), S(Γ) with the converged potential; PySCF: ``mo_energy``
            of the converged SCF).
        eps_gamma_scf: GPAW: eigenvalues of the last SCF step at Γ when Γ is an SCF k-point;
            PySCF: PySCF's solver on the stored (pre-conversion) F and S. None if unavailable.
        k_test: off-mesh k (reduced) ``[3]`` or None (no periodic axis).
        eps_ktest: the code's eigenvalues at ``k_test`` or None.
        center: E_F (periodic) or midgap (molecules), the centre of the check window.
        homo, lumo: molecules only.
        H_gamma, S_gamma, H_ktest, S_ktest: the code's own Bloch matrices in our orbital
            order (``[N, N]``) for element-wise checks, or None.
    """

    eps_gamma: np.ndarray
    eps_gamma_scf: np.ndarray | None
    k_test: np.ndarray | None
    eps_ktest: np.ndarray | None
    center: float
    homo: float | None = None
    lumo: float | None = None
    H_gamma: np.ndarray | None = None
    S_gamma: np.ndarray | None = None
    H_ktest: np.ndarray | None = None
    S_ktest: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class DFTBlocks:
    """Real-space blocks of one structure (float64, our orbital order) and their provenance.

    Attributes:
        atoms: the structure exactly as the DFT code used it (positions, cell, pbc).
        shells: atomic number -> shell angular momenta in basis order.
        onsite_h, onsite_s: per atom ``[n_orb_a, n_orb_a]``.
        i, j: int64 ``[n_pairs]``; shift: int64 ``[n_pairs, 3]``.
        hop_h, hop_s: per row ``[n_orb_i, n_orb_j]``; row (j, i, −n) holds the transpose.
        reference: what the checks compare with.
        meta: provenance and settings for ``meta.json`` (code, version, settings, energy, …).
        cost: wall/CPU seconds of the stages so far.
        extra_checks: generator-specific checks already evaluated (each a dict with ``ok``).
    """

    atoms: Atoms
    shells: dict[int, tuple[int, ...]]
    onsite_h: list[np.ndarray]
    onsite_s: list[np.ndarray]
    i: np.ndarray
    j: np.ndarray
    shift: np.ndarray
    hop_h: list[np.ndarray]
    hop_s: list[np.ndarray]
    reference: CodeReference
    meta: dict[str, Any]
    cost: dict[str, float]
    extra_checks: dict[str, dict[str, Any]] = field(default_factory=dict)
