"""Loss in orbital-block space.

The change of basis block -> irreps is orthogonal, so the squared error of a block equals the
squared error of its irreps vector: the mean over used channels below *is* the mean squared
error over orbital-block elements (H in eV², S dimensionless), per term.

``error="absolute"`` takes the mean absolute error of the irreps vectors instead (H in eV).
It is not exactly the block-element MAE (an orthogonal change of basis keeps the 2-norm,
not the 1-norm), but it weights errors the same way the reported metric does: a squared
loss spends its gradient on the few largest errors (the default model's H errors have
RMSE ≈ 2.6 × MAE), an absolute loss on the many small elements that make up the MAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from gears_h_core.model.hamiltonian import HamiltonianIrreps
from training.data.batching import TargetBatch


@dataclass(frozen=True)
class LossWeights:
    onsite_h: float = 1.0
    hopping_h: float = 1.0
    onsite_s: float = 0.0
    hopping_s: float = 100.0
    error: Literal["squared", "absolute"] = "absolute"
    eigen_h: float = 0.0  # the eigenbasis H error (`training.eigen_basis`)
    eigen_max_orbitals: int = 1024


def loss_sums(
    out: HamiltonianIrreps, t: TargetBatch, error: str = "squared"
) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Per term: (sum of squared or absolute errors, number of elements) over the used
    channels. ``error`` is passed explicitly by the train and eval steps
    (`LossWeights.error`, "absolute" by default); this function's own default is the plain
    squared error."""

    def sums(pred: jax.Array, target: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
        d = pred - target
        e = jnp.abs(d) if error == "absolute" else d**2
        return jnp.sum(e * weight), jnp.sum(weight)

    out_sums = {
        "onsite_h": sums(out.onsite_h, t.onsite_h, t.onsite_weight),
        "hopping_h": sums(out.hopping_h, t.hopping_h, t.hopping_weight),
    }
    if out.onsite_s is not None and out.hopping_s is not None:
        out_sums["onsite_s"] = sums(
            out.onsite_s, t.onsite_s, t.onsite_weight * t.node_has_s[:, None]
        )
        out_sums["hopping_s"] = sums(
            out.hopping_s, t.hopping_s, t.hopping_weight * t.pair_has_s[:, None]
        )
    return out_sums


def mean_terms(sums: dict[str, tuple[jax.Array, jax.Array]]) -> dict[str, jax.Array]:
    """Mean error per term (squared: eV² for H; absolute: eV) from sums, summed over any
    leading axes first: the mean over the whole global batch, however it is split into
    shards."""
    return {k: jnp.sum(sq) / jnp.maximum(jnp.sum(n), 1.0) for k, (sq, n) in sums.items()}


def loss_terms(
    out: HamiltonianIrreps, t: TargetBatch, error: str = "squared"
) -> dict[str, jax.Array]:
    """Per-term mean (squared or absolute) errors of one (unsharded) batch."""
    return mean_terms(loss_sums(out, t, error))


def total_loss(terms: dict[str, jax.Array], weights: LossWeights) -> jax.Array:
    return sum(getattr(weights, k) * v for k, v in terms.items())  # type: ignore[return-value]
