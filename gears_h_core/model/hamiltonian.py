"""The equivariant Hamiltonian network: GraphBatch -> HamiltonianIrreps.

Reads top to bottom:

1. species embedding -> node features h⁰ (scalars);
2. ``n_interactions`` message-passing layers over the interaction edges; the features of
   *every* layer are concatenated for the readouts, so each layer's messages matter;
3. on-site readout (species-indexed) and hopping readout (species-pair-indexed) in the
   universal irreps layout, scaled/shifted by per-species(-pair), per-channel statistics;
   with ``two_centre_basis > 0`` the hopping output is a two-centre term (fitted by least
   squares before training, `gears_h_core.model.two_centre`) plus the network's correction;
4. overlap: a two-centre function of the pair geometry (the exact form of an overlap
   integral); on-site S is a per-species constant (an atom's own orbitals overlap the same
   way in every structure);
5. symmetrisation: hopping outputs are averaged with their partner's transposed output and
   on-site outputs with their own transpose, so hermiticity holds by construction and the
   result does not depend on atom order.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from gears_h_core.graph.padding import GraphBatch
from gears_h_core.model.config import ModelConfig
from gears_h_core.model.interaction import Interaction, edge_features
from gears_h_core.model.layout import OutputLayout
from gears_h_core.model.radial import envelope, radial_basis
from gears_h_core.model.readout import HoppingReadout, OnsiteReadout, OverlapReadout
from gears_h_core.model.scale_shift import Statistics
from gears_h_core.model.two_centre import TwoCentre, TwoCentreLayout


@struct.dataclass
class HamiltonianIrreps:
    """Network output in the universal layouts (see `gears_h_core.model.layout`).

    Attributes:
        onsite_h: ``[n_nodes, onsite_dim]`` (eV).
        hopping_h: ``[n_pairs, hopping_dim]`` (eV).
        onsite_s: ``[n_nodes, onsite_dim]`` or None.
        hopping_s: ``[n_pairs, hopping_dim]`` or None.
    """

    onsite_h: jax.Array
    hopping_h: jax.Array
    onsite_s: jax.Array | None
    hopping_s: jax.Array | None


@struct.dataclass
class ModelConstants:
    """Device constants the network is applied with (not trained).

    Attributes:
        species_table: atomic number -> species index, int32 ``[119]`` (0 for unknown).
        stats: per-species(-pair) scale/shift and hopping cutoffs.
        onsite_transpose_index, onsite_transpose_sign: ``[n_species, onsite_dim]``.
        hopping_transpose_index, hopping_transpose_sign: ``[n_species**2, hopping_dim]``.
    """

    species_table: jax.Array
    stats: Statistics
    onsite_transpose_index: jax.Array
    onsite_transpose_sign: jax.Array
    hopping_transpose_index: jax.Array
    hopping_transpose_sign: jax.Array

    @classmethod
    def create(cls, layout: OutputLayout, stats: Statistics) -> ModelConstants:
        on_idx, on_sign = layout.onsite_transpose
        hop_idx, hop_sign = layout.hopping_transpose
        return cls(
            species_table=jnp.asarray(layout.species_table),
            stats=jax.tree.map(jnp.asarray, stats),
            onsite_transpose_index=jnp.asarray(on_idx),
            onsite_transpose_sign=jnp.asarray(on_sign),
            hopping_transpose_index=jnp.asarray(hop_idx),
            hopping_transpose_sign=jnp.asarray(hop_sign),
        )


def _transposed(x: jax.Array, kind: jax.Array, index: jax.Array, sign: jax.Array) -> jax.Array:
    """Irreps of the transposed blocks: ``sign[kind] * x[:, index[kind]]`` row by row."""
    return sign[kind] * jnp.take_along_axis(x, index[kind], axis=1)


class HamiltonianModel(nn.Module):
    """E(3)-equivariant network predicting H (and S) blocks as universal irreps."""

    config: ModelConfig
    n_species: int
    onsite_irreps: e3nn.Irreps
    hopping_irreps: e3nn.Irreps

    @nn.compact
    def __call__(self, batch: GraphBatch, constants: ModelConstants) -> HamiltonianIrreps:
        cfg = self.config
        n_kinds = self.n_species**2
        node_irreps = e3nn.Irreps(cfg.node_irreps)
        stats = constants.stats

        species = constants.species_table[batch.numbers]  # [n_nodes]
        kind = species[batch.pair_i] * self.n_species + species[batch.pair_j]  # [n_pairs]

        # 1. embedding
        embedding = nn.Embed(self.n_species, cfg.species_embedding, name="species_embedding")(
            species
        )
        h = e3nn.flax.Linear(node_irreps, force_irreps_out=True, name="embedding_linear")(
            e3nn.IrrepsArray(f"{cfg.species_embedding}x0e", embedding)
        )

        # 2. message passing
        edge_sh, edge_r = edge_features(batch.edge_vec, cfg.sh_lmax)
        edge_radial = radial_basis(edge_r, cfg.edge_cutoff, cfg.n_radial)
        edge_radial = edge_radial * batch.edge_mask[:, None]
        layers = []
        for t in range(cfg.n_interactions):
            h = Interaction(
                irreps=node_irreps,
                n_species=self.n_species,
                radial_hidden=cfg.radial_hidden,
                avg_num_neighbors=cfg.avg_num_neighbors,
                name=f"interaction_{t}",
            )(h, species, batch.edge_i, batch.edge_j, edge_sh, edge_radial)
            layers.append(h)
        h_all = e3nn.concatenate(layers).regroup()

        # 3. H readouts
        node_mask = batch.node_mask[:, None]
        pair_mask = batch.pair_mask[:, None]
        # with the two-centre baseline, both readouts start as zero corrections to it and to
        # the per-species on-site means (the analysed statistics)
        baseline = cfg.two_centre_basis > 0
        onsite = OnsiteReadout(
            node_irreps, self.onsite_irreps, self.n_species, zero_init=baseline, name="onsite"
        )(h_all, species).array
        onsite = (onsite * stats.onsite_scale[species] + stats.onsite_shift[species]) * node_mask

        pair_sh, pair_r = edge_features(batch.pair_vec, cfg.sh_lmax)
        cutoff = stats.pair_cutoff[kind]
        pair_radial = radial_basis(pair_r, cutoff, cfg.n_radial) * pair_mask
        pair_env = envelope(pair_r / cutoff) * batch.pair_mask
        hopping = HoppingReadout(
            e3nn.Irreps(cfg.pair_irreps),
            self.hopping_irreps,
            n_kinds,
            cfg.radial_hidden,
            zero_init=baseline,
            name="hopping",
        )(h_all, batch.pair_i, batch.pair_j, kind, pair_sh, pair_radial, pair_env).array
        if cfg.two_centre_basis > 0:
            tc_basis = radial_basis(pair_r, cutoff, cfg.two_centre_basis) * pair_mask
            tc = TwoCentreLayout.create(self.hopping_irreps)
            # the pair harmonics up to the layout's l: the hopping readout's, when they reach that far
            tc_sh = (
                pair_sh.array[:, : (tc.lmax + 1) ** 2]
                if cfg.sh_lmax >= tc.lmax
                else tc.harmonics(batch.pair_vec)
            )

            def two_centre(name: str) -> jax.Array:
                return TwoCentre(self.hopping_irreps, n_kinds, cfg.two_centre_basis, name=name)(
                    kind, tc_basis, tc_sh
                )

            hopping = hopping + two_centre("hopping_two_centre")
        hopping = hopping * stats.hopping_scale[kind] * pair_mask

        # 4. S
        onsite_s = hopping_s = None
        if cfg.predict_overlap and cfg.two_centre_basis > 0:
            onsite_s = stats.overlap_onsite[species] * node_mask
            hopping_s = two_centre("overlap_two_centre")
            hopping_s = hopping_s * stats.overlap_scale[kind] * pair_mask
        elif cfg.predict_overlap:
            onsite_s = stats.overlap_onsite[species] * node_mask
            hopping_s = OverlapReadout(
                self.hopping_irreps,
                n_kinds,
                cfg.overlap_channels,
                cfg.radial_hidden,
                name="overlap",
            )(kind, pair_sh, pair_radial, pair_env).array
            hopping_s = hopping_s * stats.overlap_scale[kind] * pair_mask

        # 5. symmetrise
        def sym_onsite(x: jax.Array) -> jax.Array:
            xt = _transposed(
                x, species, constants.onsite_transpose_index, constants.onsite_transpose_sign
            )
            return 0.5 * (x + xt)

        def sym_hopping(x: jax.Array) -> jax.Array:
            xt = _transposed(
                x[batch.pair_partner],
                kind,
                constants.hopping_transpose_index,
                constants.hopping_transpose_sign,
            )
            return 0.5 * (x + xt)

        return HamiltonianIrreps(
            onsite_h=sym_onsite(onsite),
            hopping_h=sym_hopping(hopping),
            onsite_s=None if onsite_s is None else sym_onsite(onsite_s),
            hopping_s=None if hopping_s is None else sym_hopping(hopping_s),
        )
