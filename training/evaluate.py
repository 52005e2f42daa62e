"""Errors of predicted blocks against stored reference blocks (the data set's rows).

The MAE runs over every element of every block stored in the data set: all on-site blocks and
every row of ``ijD.npz``. Predicted rows are matched to stored rows by (i, j, shift); a stored
row the model does not predict (beyond its cutoff) counts with a predicted block of zeros.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gears_h_core.assemble.bands import band_energies, shared_subspace_eigvalsh
from gears_h_core.graph.neighbors import pair_keys
from gears_h_core.types import BlockMatrix, SparseHamiltonian
from training.data.snapshot import LabeledStructure


@dataclass
class ErrorAccumulator:
    """Running sums of absolute/squared errors, split on-site / hopping and per species pair."""

    n_onsite: int = 0
    n_hopping: int = 0
    abs_onsite: float = 0.0
    abs_hopping: float = 0.0
    sq_total: float = 0.0
    max_abs: float = 0.0
    per_pair: dict[str, list[float]] = field(default_factory=dict)  # key -> [abs sum, count]

    def _add_pair(self, key: str, err: np.ndarray) -> None:
        acc = self.per_pair.setdefault(key, [0.0, 0.0])
        acc[0] += float(np.abs(err).sum())
        acc[1] += float(err.size)

    def add(self, pred: BlockMatrix, ref: BlockMatrix, n_atoms: int) -> None:
        pred_on = {g.z: (g.atoms, g.blocks) for g in pred.onsite}
        for g in ref.onsite:
            atoms, blocks = pred_on.get(g.z, (np.zeros(0, np.int32), None))
            lookup = {int(a): k for k, a in enumerate(atoms)}
            p = (
                np.stack([blocks[lookup[int(a)]] for a in g.atoms])
                if blocks is not None and all(int(a) in lookup for a in g.atoms)
                else np.zeros_like(g.blocks)
            )
            err = p.astype(np.float64) - g.blocks.astype(np.float64)
            self.n_onsite += err.size
            self.abs_onsite += float(np.abs(err).sum())
            self.sq_total += float((err**2).sum())
            self.max_abs = max(self.max_abs, float(np.abs(err).max(initial=0.0)))
            self._add_pair(f"{g.z}-{g.z} onsite", err)
        pred_hop = {(g.z_i, g.z_j): g for g in pred.hopping}
        for g in ref.hopping:
            pg = pred_hop.get((g.z_i, g.z_j))
            p = np.zeros_like(g.blocks, dtype=np.float64)
            if pg is not None and len(pg.i):
                pk = pair_keys(n_atoms, pg.i, pg.j, pg.shift)
                order = np.argsort(pk)
                rk = pair_keys(n_atoms, g.i, g.j, g.shift)
                pos = np.minimum(np.searchsorted(pk[order], rk), len(pk) - 1)
                found = pk[order][pos] == rk
                p[found] = pg.blocks[order[pos[found]]]
            err = p - g.blocks.astype(np.float64)
            self.n_hopping += err.size
            self.abs_hopping += float(np.abs(err).sum())
            self.sq_total += float((err**2).sum())
            self.max_abs = max(self.max_abs, float(np.abs(err).max(initial=0.0)))
            a, b = sorted((g.z_i, g.z_j))
            self._add_pair(f"{a}-{b} hopping", err)

    def summary(self, scale: float = 1.0) -> dict[str, float]:
        """MAE/RMSE/max, multiplied by ``scale`` (1000 for meV)."""
        n = max(self.n_onsite + self.n_hopping, 1)
        return {
            "mae": scale * (self.abs_onsite + self.abs_hopping) / n,
            "rmse": scale * float(np.sqrt(self.sq_total / n)),
            "max": scale * self.max_abs,
            "onsite_mae": scale * self.abs_onsite / max(self.n_onsite, 1),
            "hopping_mae": scale * self.abs_hopping / max(self.n_hopping, 1),
        }

    def per_pair_mae(self, scale: float = 1.0) -> dict[str, float]:
        return {k: scale * v[0] / max(v[1], 1.0) for k, v in sorted(self.per_pair.items())}


def accumulate(pairs: Iterable[tuple[BlockMatrix, BlockMatrix, int]]) -> ErrorAccumulator:
    acc = ErrorAccumulator()
    for pred, ref, n in pairs:
        acc.add(pred, ref, n)
    return acc


#: states compared in the eigenvalue error: within this window of the stored Fermi level (eV)
EIGEN_WINDOW_EV = 2.0


def window_states(ref_eps: np.ndarray, ref: Any) -> np.ndarray:
    """The compared states: within ±2 eV of E_F; for molecules (HOMO and LUMO stored, E_F
    the midgap, where a ±2 eV window around it can be empty: butanol's gap is ~6 eV) the
    frontier states from 2 eV below HOMO to 2 eV above LUMO."""
    if ref.homo is not None and ref.lumo is not None:
        return (ref_eps >= ref.homo - EIGEN_WINDOW_EV) & (ref_eps <= ref.lumo + EIGEN_WINDOW_EV)
    return np.abs(ref_eps - ref.e_fermi) <= EIGEN_WINDOW_EV


def eigenvalue_errors(
    pred: SparseHamiltonian,
    labeled: LabeledStructure,
    overlap_threshold: float | None = None,
    projection: list[np.ndarray] | None = None,
) -> np.ndarray:
    """|ε_pred − ε_DFT| (eV) of the states within ±2 eV of E_F, at Γ and the stored k point.

    For molecules (HOMO and LUMO stored, E_F the midgap) the window is [HOMO − 2 eV,
    LUMO + 2 eV], since ±2 eV around the midgap of a wide-gap molecule holds no state.

    The predicted problem uses the predicted H and S (the DFT S when the model has no S);
    the first ``len(eps)`` eigenvalues are compared, as in ``shared/data/README.md`` §2.5.
    Γ-only data sets and snapshots without reference eigenvalues give an empty array.

    With ``overlap_threshold``, both problems are solved in the subspace of the reference
    S(k) eigenvectors above it (`shared_subspace_eigvalsh`): errors are then against the
    DFT H, S in that subspace, and ``projection`` (if given) collects how far those projected
    DFT levels are from the stored ones (|ε_proj − ε_DFT| of the same window, eV).
    """
    ref = labeled.reference
    if ref is None or ref.e_fermi is None or labeled.gamma_only:
        return np.zeros(0)
    if pred.S is None and labeled.hamiltonian.S is not None:
        pred = SparseHamiltonian(pred.structure, pred.basis, pred.H, labeled.hamiltonian.S)
    points = [(np.zeros(3), ref.eps_gamma)]
    if ref.k_test is not None and ref.eps_ktest is not None:
        points.append((np.asarray(ref.k_test), ref.eps_ktest))
    points = [(k, eps) for k, eps in points if eps is not None]
    if not points:
        return np.zeros(0)
    # the code path of `gears_h bands`; OverlapNotPositiveDefiniteError (a LinAlgError) when
    # the predicted S(k) is not positive definite
    if overlap_threshold is None:
        bands = band_energies(pred, np.stack([k for k, _ in points]), solver="dense")
        solved = [(row, eps) for (_, eps), row in zip(points, bands.eigenvalues, strict=True)]
    else:
        solved = []
        for k, eps in points:
            mine, theirs, _ = shared_subspace_eigvalsh(
                pred, labeled.hamiltonian, k, overlap_threshold
            )
            n = min(len(theirs), len(eps))
            if projection is not None:
                sel = window_states(eps[:n], ref)
                projection.append(np.abs(theirs[:n] - eps[:n])[sel])
            solved.append((mine, theirs))
    errors = []
    for row, eps in solved:
        eig = row[: len(eps)]
        ref_eps = eps[: len(eig)]
        window = window_states(ref_eps, ref)
        errors.append(np.abs(eig - eps[: len(eig)])[window])
    return np.concatenate(errors) if errors else np.zeros(0)


def evaluate_predictions(
    pairs: Sequence[tuple[SparseHamiltonian, LabeledStructure]],
    *,
    overlap_threshold: float | None = None,
) -> dict[str, Any]:
    """The ``gears_h evaluate --json`` document for predictions and their references.

    H errors in meV over every element of every stored block; S errors dimensionless (None
    when the data or the model have no S); eigenvalue MAE in meV within ±2 eV of E_F (None
    without reference eigenvalues). Snapshots whose predicted S(k) is not positive definite
    (an untrained model) have no eigenvalues: they are listed under ``eigenvalues.failed``.
    """
    acc_h, acc_s = ErrorAccumulator(), ErrorAccumulator()
    eig_errors: list[np.ndarray] = []
    eig_failed: list[str] = []
    projection: list[np.ndarray] = []
    for pred, labeled in pairs:
        ref = labeled.hamiltonian
        n = ref.structure.n_atoms
        acc_h.add(pred.H, ref.H, n)
        if pred.S is not None and ref.S is not None:
            acc_s.add(pred.S, ref.S, n)
        try:
            eig_errors.append(eigenvalue_errors(pred, labeled, overlap_threshold, projection))
        except np.linalg.LinAlgError:
            eig_failed.append(labeled.name)  # predicted S not positive definite
    h = acc_h.summary(1000.0)
    s = acc_s.summary() if acc_s.n_onsite + acc_s.n_hopping else None
    eig = np.concatenate(eig_errors) if eig_errors else np.zeros(0)
    per_pair: dict[str, dict[str, float]] = {
        key: {"H_mae_meV": value} for key, value in acc_h.per_pair_mae(1000.0).items()
    }
    for key, value in acc_s.per_pair_mae().items():
        per_pair.setdefault(key, {})["S_mae"] = value
    return {
        "n_structures": len(pairs),
        "H": {
            "mae_meV": h["mae"],
            "rmse_meV": h["rmse"],
            "max_meV": h["max"],
            "onsite_mae_meV": h["onsite_mae"],
            "hopping_mae_meV": h["hopping_mae"],
        },
        "S": None if s is None else {"mae": s["mae"], "max": s["max"]},
        "eigenvalues": None
        if eig.size == 0 and not eig_failed
        else {
            "mae_meV_within_2eV_of_ef": 1000.0 * float(eig.mean()) if eig.size else None,
            "max_meV_within_2eV_of_ef": 1000.0 * float(eig.max()) if eig.size else None,
            "n_states": int(eig.size),
            "failed": eig_failed,
            **(
                {}
                if overlap_threshold is None
                else {
                    "overlap_threshold": overlap_threshold,
                    "projection_mae_meV": 1000.0 * float(np.concatenate(projection).mean())
                    if projection and np.concatenate(projection).size
                    else None,
                }
            ),
        },
        "per_species_pair": per_pair,
    }
