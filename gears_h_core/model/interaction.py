"""Equivariant message passing: one interaction layer."""

from __future__ import annotations

import math

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp

from gears_h_core.model.irreps_ops import Linear, scale_irreps, tensor_product


def gated(irreps: e3nn.Irreps) -> e3nn.Irreps:
    """Irreps of a linear layer's output that `e3nn.gate` turns into ``irreps``.

    Scalars first, then one gate scalar per non-scalar irrep, then the non-scalars.
    """
    scalars = e3nn.Irreps([(m, ir) for m, ir in irreps if ir.l == 0])
    nonscalars = e3nn.Irreps([(m, ir) for m, ir in irreps if ir.l > 0])
    return scalars + e3nn.Irreps(f"{nonscalars.num_irreps}x0e") + nonscalars


def narrow(irreps: e3nn.Irreps, factor: int = 4) -> e3nn.Irreps:
    """``irreps`` with every multiplicity divided by ``factor`` (at least 1).

    Tensor products with spherical harmonics multiply the feature count by the number of
    coupling paths; projecting onto a narrow copy first keeps the pair features (and the
    linear map after them, the main cost per pair) small.
    """
    return e3nn.Irreps([(max(1, mul // factor), ir) for mul, ir in irreps])


class Interaction(nn.Module):
    """h_i <- gate(W_1 h_i[species] + W_2 Σ_j R(r_ij) ⊙ (h_j ⊗ Y(r̂_ij)) / sqrt(avg_neighbors)) + h_i.

    The message normaliser is a fixed constant from the data analysis, never a batch
    statistic, so a structure gives the same result alone or in any padded batch.
    """

    irreps: e3nn.Irreps
    n_species: int
    radial_hidden: int
    avg_num_neighbors: float

    @nn.compact
    def __call__(
        self,
        h: e3nn.IrrepsArray,  # [n_nodes, irreps]
        species: jax.Array,  # [n_nodes] int
        edge_i: jax.Array,  # [n_edges] receivers
        edge_j: jax.Array,  # [n_edges] senders
        edge_sh: e3nn.IrrepsArray,  # [n_edges, sh]
        edge_radial: jax.Array,  # [n_edges, n_radial] (zero on padded edges)
    ) -> e3nn.IrrepsArray:
        n_nodes = h.shape[0]
        h_j = h[edge_j]
        h_narrow = Linear(narrow(self.irreps, 2), name="proj_sh")(h)[edge_j]
        messages = e3nn.concatenate(
            [
                h_j.filter(keep=self.irreps),
                tensor_product(h_narrow, edge_sh, self.irreps),
            ]
        ).regroup()
        weights = e3nn.flax.MultiLayerPerceptron(
            (self.radial_hidden, messages.irreps.num_irreps),
            act=jax.nn.silu,
            output_activation=False,
        )(edge_radial)
        messages = scale_irreps(messages, weights)
        aggregated = e3nn.scatter_sum(messages, dst=edge_i, output_size=n_nodes)
        aggregated = aggregated / math.sqrt(self.avg_num_neighbors)
        update = Linear(gated(self.irreps), name="message_linear")(aggregated)
        update = update + e3nn.flax.Linear(
            gated(self.irreps),
            num_indexed_weights=self.n_species,
            force_irreps_out=True,
            name="self_linear",
        )(species, h)
        out = e3nn.gate(update)
        if h.irreps == out.irreps:
            return out + h
        return out + Linear(out.irreps, name="residual")(h)


def edge_features(vectors: jax.Array, sh_lmax: int) -> tuple[e3nn.IrrepsArray, jax.Array]:
    """Spherical harmonics of unit vectors (component-normalised) and lengths."""
    from gears_h_core.model.radial import safe_norm

    r = safe_norm(vectors)
    safe_vectors = jnp.where(r[:, None] > 0, vectors, jnp.array([0.0, 0.0, 1.0]))
    sh = e3nn.spherical_harmonics(
        e3nn.Irreps.spherical_harmonics(sh_lmax),
        safe_vectors,
        normalize=True,
        normalization="component",
    )
    return sh, r
