"""Pure step factories: jitted train and eval steps (the loop only orchestrates).

Data parallelism: a step takes batches with a leading *shard* axis ``[n_shards, ...]``; the
loss is the mean over shards of each shard's loss. With the shard axis laid out over a
``jax.sharding.Mesh`` axis ``"data"``, XLA runs one shard per device and all-reduces the
gradients; with one device the same program runs the shards in sequence, so one step on
several devices equals one step on one device for the same global batch. Each loss term is
the mean over the whole global batch (squared-error sums and element counts are summed over
shards before dividing), so the split into shards does not change the loss either.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import optax

from gears_h_core.graph.padding import GraphBatch
from gears_h_core.model.hamiltonian import HamiltonianModel, ModelConstants
from training.data.batching import TargetBatch
from training.eigen_basis import EigenTables, eigen_sums
from training.loss import LossWeights, loss_sums, mean_terms, total_loss
from training.state import TrainState

Metrics = dict[str, jax.Array]


def _sharded_loss(
    model: HamiltonianModel,
    weights: LossWeights,
    eigen: EigenTables | None,
    params: Any,
    batch: GraphBatch,
    targets: TargetBatch,
    constants: ModelConstants,
) -> tuple[jax.Array, Metrics]:
    def one(b: GraphBatch, t: TargetBatch) -> dict[str, tuple[jax.Array, jax.Array]]:
        out = model.apply(params, b, constants)
        sums = loss_sums(out, t, weights.error)
        if eigen is not None:
            sums["eigen_h"] = eigen_sums(out, b, t, eigen, weights.error)
        return sums

    metrics = mean_terms(jax.vmap(one)(batch, targets))
    loss = total_loss(metrics, weights)
    metrics["loss"] = loss
    return loss, metrics


def make_train_step(
    model: HamiltonianModel,
    tx: optax.GradientTransformation,
    weights: LossWeights,
    ema_decay: float,
    eigen: EigenTables | None = None,
) -> Callable[[TrainState, GraphBatch, TargetBatch, ModelConstants], tuple[TrainState, Metrics]]:
    """A jitted ``(state, batch, targets, constants) -> (state, metrics)``; donates the state.
    With ``eigen`` (and targets that carry eigenvectors) the loss has the eigenbasis term."""

    @partial(jax.jit, donate_argnums=0)
    def train_step(
        state: TrainState, batch: GraphBatch, targets: TargetBatch, constants: ModelConstants
    ) -> tuple[TrainState, Metrics]:
        grad_fn = jax.value_and_grad(partial(_sharded_loss, model, weights, eigen), has_aux=True)
        (_, metrics), grads = grad_fn(state.params, batch, targets, constants)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(
            lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params
        )
        metrics["grad_norm"] = optax.global_norm(grads)
        return TrainState(state.step + 1, params, ema, opt_state), metrics

    return train_step


def make_eval_step(
    model: HamiltonianModel, weights: LossWeights, eigen: EigenTables | None = None
) -> Callable[[Any, GraphBatch, TargetBatch, ModelConstants], Metrics]:
    @jax.jit
    def eval_step(
        params: Any, batch: GraphBatch, targets: TargetBatch, constants: ModelConstants
    ) -> Metrics:
        return _sharded_loss(model, weights, eigen, params, batch, targets, constants)[1]

    return eval_step
