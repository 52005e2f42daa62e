"""Errors of predicted blocks against stored reference blocks (the data set's rows).

The MAE runs over every element of every block stored in the data set: all on-site blocks and
every row of ``ijD.npz``. Predicted rows are matched to stored rows by (i, j, shift); a stored
row the model does not predict (beyond its cutoff) counts with a predicted block of zeros.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from gears_h_core.graph.neighbors import pair_keys
from gears_h_core.types import BlockMatrix


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
