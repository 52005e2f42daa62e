"""Loss in orbital-block space.

The change of basis block -> irreps is orthogonal, so the squared error of a block equals the
squared error of its irreps vector: the mean over used channels below *is* the mean squared
error over orbital-block elements (H in eV², S dimensionless), per term.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _sums(pred: jax.Array, target: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.sum(((pred - target) ** 2) * weight), jnp.sum(weight)


def loss_sums(out: HamiltonianIrreps, t: TargetBatch) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Per term: (sum of squared errors, number of elements) over the used channels."""
    sums = {
        "onsite_h": _sums(out.onsite_h, t.onsite_h, t.onsite_weight),
        "hopping_h": _sums(out.hopping_h, t.hopping_h, t.hopping_weight),
    }
    if out.onsite_s is not None and out.hopping_s is not None:
        sums["onsite_s"] = _sums(out.onsite_s, t.onsite_s, t.onsite_weight * t.node_has_s[:, None])
        sums["hopping_s"] = _sums(
            out.hopping_s, t.hopping_s, t.hopping_weight * t.pair_has_s[:, None]
        )
    return sums


def mean_terms(sums: dict[str, tuple[jax.Array, jax.Array]]) -> dict[str, jax.Array]:
    """Mean squared error per term (eV² for H) from sums, summed over any leading axes first:
    the mean over the whole global batch, however it is split into shards."""
    return {k: jnp.sum(sq) / jnp.maximum(jnp.sum(n), 1.0) for k, (sq, n) in sums.items()}


def loss_terms(out: HamiltonianIrreps, t: TargetBatch) -> dict[str, jax.Array]:
    """Per-term mean squared errors of one (unsharded) batch."""
    return mean_terms(loss_sums(out, t))


def total_loss(terms: dict[str, jax.Array], weights: LossWeights) -> jax.Array:
    return sum(getattr(weights, k) * v for k, v in terms.items())  # type: ignore[return-value]
