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
from gears_h_core.model.irreps_ops import (
    Linear,
    elementwise_tensor_product,
    gate_parts,
    regrouped_copy_index,
    tensor_product,
)


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


def _kind_output(
    out_irreps: e3nn.Irreps,
    n_kinds: int,
    pair_kind: jax.Array,
    x: e3nn.IrrepsArray | list[e3nn.IrrepsArray],
    pair_envelope: jax.Array,
    scale: jax.Array | None = None,
    zero_init: bool = False,
    name: str = "out",
) -> e3nn.IrrepsArray:
    """Species-pair-indexed linear map to the universal layout (own weights per ordered
    species pair), times the cutoff envelope."""
    out = Linear(
        out_irreps, n_index=n_kinds, parameter_initializer=_initializer(zero_init), name=name
    )(x, scale, pair_kind)
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
        x = e3nn.gate(Linear(gated(self.hidden))(h))
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

    With ``overlap_head`` a second such map of the same gated features (its own weights,
    always starting at zero) gives a correction to the two-centre overlap: the three-centre
    projector terms of a PAW overlap. Returns ``(hopping H, S correction or None)``.
    """

    hidden: e3nn.Irreps
    out_irreps: e3nn.Irreps
    n_species_pairs: int
    radial_hidden: int
    zero_init: bool = False
    overlap_head: bool = False

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
    ) -> tuple[e3nn.IrrepsArray, e3nn.IrrepsArray | None]:
        # linear maps (no biases) commute with gathering rows: apply them once per node
        node_i = Linear(self.hidden, name="proj_i")(h)
        node_j = Linear(self.hidden, name="proj_j")(h)
        a = Linear(self.hidden, name="bilinear_i")(node_i)
        b = Linear(self.hidden, name="bilinear_j")(node_j)
        proj_sh = Linear(narrow(self.hidden), name="proj_sh")
        parts = [
            node_i[pair_i],
            node_j[pair_j],
            elementwise_tensor_product(a[pair_i], b[pair_j], self.hidden),
            tensor_product(proj_sh(node_i)[pair_i] + proj_sh(node_j)[pair_j], pair_sh, self.hidden),
            pair_sh,
        ]
        # one radial weight per irrep copy of the regrouped features (the order the
        # weights were defined in), reordered to the parts' order
        irreps = sum((p.irreps for p in parts), e3nn.Irreps(""))
        weights = _kind_radial_weights(
            self.n_species_pairs,
            pair_kind,
            pair_radial,
            pair_envelope,
            (self.radial_hidden, self.radial_hidden, irreps.num_irreps),
        )[:, regrouped_copy_index(irreps)]
        # mix(concatenate(parts) * weights), gated, then the species-pair-indexed output map
        x = Linear(gated(self.hidden), name="mix")(parts, weights)
        gate_in, gates = gate_parts(x)

        def output(zero_init: bool, name: str) -> e3nn.IrrepsArray:
            return _kind_output(
                self.out_irreps,
                self.n_species_pairs,
                pair_kind,
                gate_in,
                pair_envelope,
                gates,
                zero_init,
                name,
            )

        overlap = output(True, "overlap_out") if self.overlap_head else None
        return output(self.zero_init, "out"), overlap


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
            self.out_irreps,
            self.n_species_pairs,
            pair_kind,
            tiled,
            pair_envelope,
            radial,
        )
