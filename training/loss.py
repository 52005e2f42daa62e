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


def _mse(pred: jax.Array, target: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    sq = jnp.sum(((pred - target) ** 2) * weight)
    n = jnp.sum(weight)
    return sq / jnp.maximum(n, 1.0), n


def loss_terms(out: HamiltonianIrreps, t: TargetBatch) -> dict[str, jax.Array]:
    """Per-term mean squared errors (eV² for H)."""
    terms = {
        "onsite_h": _mse(out.onsite_h, t.onsite_h, t.onsite_weight)[0],
        "hopping_h": _mse(out.hopping_h, t.hopping_h, t.hopping_weight)[0],
    }
    if out.onsite_s is not None and out.hopping_s is not None:
        terms["onsite_s"] = _mse(out.onsite_s, t.onsite_s, t.onsite_weight * t.node_has_s[:, None])[
            0
        ]
        terms["hopping_s"] = _mse(
            out.hopping_s, t.hopping_s, t.hopping_weight * t.pair_has_s[:, None]
        )[0]
    return terms


def total_loss(terms: dict[str, jax.Array], weights: LossWeights) -> jax.Array:
    return sum(getattr(weights, k) * v for k, v in terms.items())  # type: ignore[return-value]
