"""Readouts: node features -> on-site irreps, pair features -> hopping irreps, geometry -> S.

All readouts end in a linear map whose weights are indexed by species (on-site) or by ordered
species pair (hopping), into the universal layouts of `gears_h_core.model.layout`.
"""

from __future__ import annotations

from typing import Any

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp

from gears_h_core.model.interaction import gated, narrow


def _kind_radial_weights(
    n_kinds: int,
    pair_kind: jax.Array,  # [n_pairs]
    pair_radial: jax.Array,  # [n_pairs, n_radial]
    pair_envelope: jax.Array,  # [n_pairs]
    neurons: tuple[int, ...],
) -> jax.Array:
    """Radial MLP of (radial basis, species-pair embedding), ``[n_pairs, neurons[-1]]``.

    Called inside a readout's compact ``__call__``: the submodules belong to that readout.
    """
    kind_embedding = nn.Embed(n_kinds, 16, name="pair_embedding")(pair_kind)
    return e3nn.flax.MultiLayerPerceptron(neurons, act=jax.nn.silu, output_activation=False)(
        jnp.concatenate([pair_radial, kind_embedding * pair_envelope[:, None]], axis=-1)
    )


def _initializer(zero: bool) -> Any:
    """e3nn-jax's default N(0, 1) init, or zeros (a readout that starts as a zero
    correction to the analysed baseline)."""
    return (lambda: jax.nn.initializers.zeros) if zero else None


def indexed_linear(
    out_irreps: e3nn.Irreps,
    n_index: int,
    index: jax.Array,
    x: e3nn.IrrepsArray,
    name: str,
    zero_init: bool = False,
) -> e3nn.IrrepsArray:
    """Linear map with its own weights per ``index`` value (species pair), for many rows.

    Same function as ``e3nn.flax.Linear(num_indexed_weights=n_index)`` but without gathering
    one weight matrix per row (which, for thousands of pairs, materialises gigabytes): the
    input is spread into ``n_index`` one-hot masked copies and mapped by one shared linear
    layer, so the cost is one matrix product of width ``n_index * dim``. The √n factor keeps
    e3nn's fan-in normalisation of the initial weights.
    """
    onehot = jax.nn.one_hot(index, n_index, dtype=x.dtype) * jnp.sqrt(float(n_index))
    spread = e3nn.concatenate([x * onehot[:, k : k + 1] for k in range(n_index)]).regroup()
    return e3nn.flax.Linear(
        out_irreps,
        force_irreps_out=True,
        parameter_initializer=_initializer(zero_init),
        name=name,
    )(spread)


def _kind_output(
    out_irreps: e3nn.Irreps,
    n_kinds: int,
    pair_kind: jax.Array,
    x: e3nn.IrrepsArray,
    pair_envelope: jax.Array,
    zero_init: bool = False,
) -> e3nn.IrrepsArray:
    """Species-pair-indexed linear map to the universal layout, times the cutoff envelope."""
    out = indexed_linear(out_irreps, n_kinds, pair_kind, x, name="out", zero_init=zero_init)
    return out * pair_envelope[:, None]


class OnsiteReadout(nn.Module):
    """On-site H: one gated layer then a species-indexed linear map (``zero_init``: its
    weights start at zero, so the prediction starts at the per-species mean)."""

    hidden: e3nn.Irreps
    out_irreps: e3nn.Irreps
    n_species: int
    zero_init: bool = False

    @nn.compact
    def __call__(self, h: e3nn.IrrepsArray, species: jax.Array) -> e3nn.IrrepsArray:
        x = e3nn.gate(e3nn.flax.Linear(gated(self.hidden), force_irreps_out=True)(h))
        return e3nn.flax.Linear(
            self.out_irreps,
            num_indexed_weights=self.n_species,
            force_irreps_out=True,
            parameter_initializer=_initializer(self.zero_init),
        )(species, x)


class HoppingReadout(nn.Module):
    """Hopping H of a directed pair (i, j, T) from h_i, h_j and the pair vector.

    Features: projections of h_i and h_j, their element-wise tensor product (three-centre
    environment), h_i ⊗ Y(r̂) and the bare Y(r̂) (two-centre part), all weighted per irrep by
    a radial MLP of |r| (with the species pair's own cutoff) and the species-pair embedding;
    then a gated layer and a species-pair-indexed linear map, times the cutoff envelope
    (``zero_init``: that map starts at zero, a zero correction to a two-centre baseline).
    """

    hidden: e3nn.Irreps
    out_irreps: e3nn.Irreps
    n_species_pairs: int
    radial_hidden: int
    zero_init: bool = False

    @nn.compact
    def __call__(
        self,
        h: e3nn.IrrepsArray,  # [n_nodes, node irreps]
        pair_i: jax.Array,  # [n_pairs]
        pair_j: jax.Array,  # [n_pairs]
        pair_kind: jax.Array,  # [n_pairs] ordered species-pair index
        pair_sh: e3nn.IrrepsArray,  # [n_pairs, sh]
        pair_radial: jax.Array,  # [n_pairs, n_radial], zero beyond cutoff and on padding
        pair_envelope: jax.Array,  # [n_pairs]
    ) -> e3nn.IrrepsArray:
        # linear maps (no biases) commute with gathering rows: apply them once per node
        node_i = e3nn.flax.Linear(self.hidden, force_irreps_out=True, name="proj_i")(h)
        node_j = e3nn.flax.Linear(self.hidden, force_irreps_out=True, name="proj_j")(h)
        a = e3nn.flax.Linear(self.hidden, force_irreps_out=True, name="bilinear_i")(node_i)
        b = e3nn.flax.Linear(self.hidden, force_irreps_out=True, name="bilinear_j")(node_j)
        proj_sh = e3nn.flax.Linear(narrow(self.hidden), force_irreps_out=True, name="proj_sh")
        features = e3nn.concatenate(
            [
                node_i[pair_i],
                node_j[pair_j],
                e3nn.elementwise_tensor_product(a[pair_i], b[pair_j], filter_ir_out=self.hidden),
                e3nn.tensor_product(
                    proj_sh(node_i)[pair_i] + proj_sh(node_j)[pair_j],
                    pair_sh,
                    filter_ir_out=self.hidden,
                ),
                pair_sh,
            ]
        ).regroup()
        weights = _kind_radial_weights(
            self.n_species_pairs,
            pair_kind,
            pair_radial,
            pair_envelope,
            (self.radial_hidden, self.radial_hidden, features.irreps.num_irreps),
        )
        x = features * weights
        x = e3nn.gate(e3nn.flax.Linear(gated(self.hidden), force_irreps_out=True, name="mix")(x))
        return _kind_output(
            self.out_irreps, self.n_species_pairs, pair_kind, x, pair_envelope, self.zero_init
        )


class OverlapReadout(nn.Module):
    """Two-centre overlap S_ij(r): Σ_L f_L,kind(|r|) Y_L(r̂), exact form of a two-centre integral.

    Depends on the pair geometry and species only (no message passing).
    """

    out_irreps: e3nn.Irreps
    n_species_pairs: int
    channels: int
    radial_hidden: int

    @nn.compact
    def __call__(
        self,
        pair_kind: jax.Array,
        pair_sh: e3nn.IrrepsArray,
        pair_radial: jax.Array,
        pair_envelope: jax.Array,
    ) -> e3nn.IrrepsArray:
        radial = _kind_radial_weights(
            self.n_species_pairs,
            pair_kind,
            pair_radial,
            pair_envelope,
            (self.radial_hidden, self.radial_hidden, self.channels * pair_sh.irreps.num_irreps),
        )
        # channels copies of every harmonic, each with its own radial function
        tiled = e3nn.concatenate([pair_sh] * self.channels).regroup()
        return _kind_output(
            self.out_irreps, self.n_species_pairs, pair_kind, tiled * radial, pair_envelope
        )
