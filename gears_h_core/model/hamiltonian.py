"""The equivariant Hamiltonian network: GraphBatch -> HamiltonianIrreps.

Reads top to bottom:

1. species embedding -> node features h⁰ (scalars);
2. ``n_interactions`` message-passing layers over the interaction edges; the features of
   *every* layer are concatenated for the readouts, so each layer's messages matter;
3. on-site readout (species-indexed) and hopping readout (species-pair-indexed) in the
   universal irreps layout, scaled/shifted by per-species(-pair), per-channel statistics;
   with ``onsite_field_basis > 0`` the on-site output adds a crystal-field term (a sum over
   neighbours of two-centre functions, fitted by least squares before training);
   with ``two_centre_basis > 0`` the hopping output is a two-centre term (fitted by least
   squares before training, `gears_h_core.model.two_centre`) plus the network's correction;
4. overlap: a two-centre function of the pair geometry (the form of an overlap integral of
   atom-centred orbitals, exact for PySCF's Gaussian basis) plus, with
   ``overlap_correction``, a network correction for the three-centre projector terms of
   GPAW's PAW overlap (~5.6e-5 MAE on h-BN without it); on-site S is a per-species
   constant (an atom's own orbitals overlap the same way in every structure) plus, with
   ``onsite_overlap_field``, a least-squares crystal field for the neighbours' PAW
   projector terms;
5. symmetrisation: hopping outputs are averaged with their partner's transposed output and
   on-site outputs with their own transpose, so hermiticity holds by construction and the
   result does not depend on atom order.

Steps 1-3a/4a/5a run on nodes, 3b/4b on pairs. `NodeStage` and `PairStage` are the two halves
of `HamiltonianModel` with its parameters, for structures predicted in pieces
(`gears_h_core.predict`): node features for all atoms first, then hopping outputs pair chunk by
pair chunk, symmetrised on the host.
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
from gears_h_core.model.irreps_ops import Linear
from gears_h_core.model.layout import OutputLayout, pair_kind
from gears_h_core.model.radial import envelope, radial_basis
from gears_h_core.model.readout import HoppingReadout, OnsiteReadout, OverlapReadout
from gears_h_core.model.scale_shift import Statistics
from gears_h_core.model.two_centre import (
    HOPPING_TERM,
    ONSITE_FIELD_TERM,
    ONSITE_S_FIELD_TERM,
    OVERLAP_TERM,
    TwoCentre,
    TwoCentreLayout,
)


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
        onsite_mask: float ``[n_species, onsite_dim]``, 1 on the channels a species' blocks
            use.
    """

    species_table: jax.Array
    stats: Statistics
    onsite_transpose_index: jax.Array
    onsite_transpose_sign: jax.Array
    hopping_transpose_index: jax.Array
    hopping_transpose_sign: jax.Array
    onsite_mask: jax.Array

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
            onsite_mask=jnp.asarray(layout.onsite_mask, jnp.float32),
        )


def _transposed(x: jax.Array, kind: jax.Array, index: jax.Array, sign: jax.Array) -> jax.Array:
    """Irreps of the transposed blocks: ``sign[kind] * x[:, index[kind]]`` row by row."""
    return sign[kind] * jnp.take_along_axis(x, index[kind], axis=1)


class _Network(nn.Module):
    """Fields and the two stages shared by `HamiltonianModel`, `NodeStage` and `PairStage`.

    The stages create their submodules inline under fixed names, so the three modules share
    one parameter tree: parameters trained with `HamiltonianModel` apply to the stages as they
    are (each stage reads the part it needs).
    """

    config: ModelConfig
    n_species: int
    onsite_irreps: e3nn.Irreps
    hopping_irreps: e3nn.Irreps

    @property
    def feature_irreps(self) -> e3nn.Irreps:
        """Irreps of the node features the readouts see (every layer, concatenated)."""
        cfg = self.config
        return e3nn.Irreps("+".join([cfg.node_irreps] * cfg.n_interactions)).regroup()

    def _species(self, numbers: jax.Array, constants: ModelConstants) -> jax.Array:
        return constants.species_table[numbers]

    def _nodes(
        self, batch: GraphBatch, constants: ModelConstants
    ) -> tuple[e3nn.IrrepsArray, jax.Array, jax.Array | None]:
        """Steps 1-3 on the nodes: features of every layer and the symmetrised on-site H
        (and S). Reads the node and edge fields of ``batch`` only."""
        cfg = self.config
        node_irreps = e3nn.Irreps(cfg.node_irreps)
        stats = constants.stats
        species = self._species(batch.numbers, constants)  # [n_nodes]

        # 1. embedding
        embedding = nn.Embed(self.n_species, cfg.species_embedding, name="species_embedding")(
            species
        )
        h = Linear(node_irreps, name="embedding_linear")(
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
        assert h_all.irreps == self.feature_irreps, (h_all.irreps, self.feature_irreps)

        # 3a. on-site H; with the two-centre baseline the readout starts as a zero correction
        # to the per-species on-site means (the analysed statistics)
        node_mask = batch.node_mask[:, None]
        onsite = OnsiteReadout(
            node_irreps,
            self.onsite_irreps,
            self.n_species,
            zero_init=cfg.two_centre_basis > 0,
            name="onsite",
        )(h_all, species).array
        s_field = cfg.has_onsite_s_field
        fields = (
            self._onsite_fields(
                batch,
                species,
                edge_sh,
                edge_r,
                (ONSITE_FIELD_TERM, ONSITE_S_FIELD_TERM)[: 1 + s_field],
            )
            if cfg.onsite_field_basis > 0
            else []
        )
        if fields:
            onsite = onsite + fields[0]
        onsite = (onsite * stats.onsite_scale[species] + stats.onsite_shift[species]) * node_mask

        # 4a. on-site S: a per-species constant (an atom's own orbitals), plus with
        # ``onsite_overlap_field`` the PAW projector terms of its neighbours
        onsite_s = None
        if cfg.predict_overlap:
            onsite_s = stats.overlap_onsite[species]
            if s_field:  # unscaled, so masked here to the channels in use
                onsite_s = onsite_s + fields[1] * constants.onsite_mask[species]
            onsite_s = onsite_s * node_mask

        # 5a. symmetrise
        def sym_onsite(x: jax.Array) -> jax.Array:
            xt = _transposed(
                x, species, constants.onsite_transpose_index, constants.onsite_transpose_sign
            )
            return 0.5 * (x + xt)

        return h_all, sym_onsite(onsite), None if onsite_s is None else sym_onsite(onsite_s)

    def _onsite_fields(
        self,
        batch: GraphBatch,
        species: jax.Array,
        edge_sh: e3nn.IrrepsArray,
        edge_r: jax.Array,
        names: tuple[str, ...],
    ) -> list[jax.Array]:
        """On-site crystal fields (steps 3a, 4a): for each name, a sum over the interaction
        neighbours j of atom i of a two-centre function of r_ij in the on-site layout
        (unscaled), ``[n_nodes, dim]``; one geometry, one coefficient set per name.

        Each neighbour's potential acting on i's own orbitals, ⟨φ_i|V_j|φ_i'⟩, is such a
        function of r_ij (``onsite_field``, added to the on-site H), and so is a PAW
        projector term of the overlap, Σ ⟨φ_i|p̃^j⟩ ΔS^j ⟨p̃^j|φ_i'⟩ (``onsite_s_field``).
        The coefficients are least-squares fitted before training
        (`training.onsite_field_fit`); the on-site readout learns the rest of H.
        """
        cfg = self.config
        kind = pair_kind(species, batch.edge_i, batch.edge_j, self.n_species)
        basis = radial_basis(edge_r, cfg.edge_cutoff, cfg.onsite_field_basis)
        basis = basis * batch.edge_mask[:, None]
        tc = TwoCentreLayout.create(self.onsite_irreps)
        harmonics = (
            edge_sh.array[:, : (tc.lmax + 1) ** 2]
            if cfg.sh_lmax >= tc.lmax
            else tc.harmonics(batch.edge_vec)
        )
        out = []
        for name in names:
            per_edge = TwoCentre(
                self.onsite_irreps, self.n_species**2, cfg.onsite_field_basis, name=name
            )(kind, basis, harmonics)
            out.append(jax.ops.segment_sum(per_edge, batch.edge_i, num_segments=species.shape[0]))
        return out

    def _pairs(
        self, h_all: e3nn.IrrepsArray, batch: GraphBatch, constants: ModelConstants
    ) -> tuple[jax.Array, jax.Array | None]:
        """Steps 3-4 on the pairs: hopping H (and S) of every directed pair *before* the
        partner symmetrisation. Reads ``h_all`` and the node and pair fields of ``batch``."""
        cfg = self.config
        n_kinds = self.n_species**2
        stats = constants.stats
        species = self._species(batch.numbers, constants)
        kind = pair_kind(species, batch.pair_i, batch.pair_j, self.n_species)  # [n_pairs]

        # 3b. hopping H: network (a zero correction at first when there is a baseline) plus
        # the two-centre baseline
        pair_mask = batch.pair_mask[:, None]
        pair_sh, pair_r = edge_features(batch.pair_vec, cfg.sh_lmax)
        cutoff = stats.pair_cutoff[kind]
        pair_radial = radial_basis(pair_r, cutoff, cfg.n_radial) * pair_mask
        pair_env = envelope(pair_r / cutoff) * batch.pair_mask
        two_centre_s = cfg.predict_overlap and cfg.two_centre_basis > 0
        hopping, overlap_correction = HoppingReadout(
            e3nn.Irreps(cfg.pair_irreps),
            self.hopping_irreps,
            n_kinds,
            cfg.radial_hidden,
            zero_init=cfg.two_centre_basis > 0,
            overlap_head=two_centre_s and cfg.overlap_correction,
            name="hopping",
        )(h_all, batch.pair_i, batch.pair_j, kind, pair_sh, pair_radial, pair_env)
        hopping = hopping.array
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

            hopping = hopping + two_centre(HOPPING_TERM)
        hopping = hopping * stats.hopping_scale[kind] * pair_mask

        # 4b. hopping S: a two-centre function of the pair geometry (the form of an overlap
        # integral), plus the network's correction (PAW projector terms) when configured
        hopping_s = None
        if two_centre_s:
            hopping_s = two_centre(OVERLAP_TERM)
            if overlap_correction is not None:
                hopping_s = hopping_s + overlap_correction.array
        elif cfg.predict_overlap:
            hopping_s = OverlapReadout(
                self.hopping_irreps,
                n_kinds,
                cfg.overlap_channels,
                cfg.radial_hidden,
                name="overlap",
            )(kind, pair_sh, pair_radial, pair_env).array
        if hopping_s is not None:
            hopping_s = hopping_s * stats.overlap_scale[kind] * pair_mask
        return hopping, hopping_s


class HamiltonianModel(_Network):
    """E(3)-equivariant network predicting H (and S) blocks as universal irreps."""

    @nn.compact
    def __call__(self, batch: GraphBatch, constants: ModelConstants) -> HamiltonianIrreps:
        h_all, onsite_h, onsite_s = self._nodes(batch, constants)
        hopping_h, hopping_s = self._pairs(h_all, batch, constants)

        # 5b. symmetrise the pairs with their partners
        species = self._species(batch.numbers, constants)
        kind = pair_kind(species, batch.pair_i, batch.pair_j, self.n_species)

        def sym_hopping(x: jax.Array) -> jax.Array:
            xt = _transposed(
                x[batch.pair_partner],
                kind,
                constants.hopping_transpose_index,
                constants.hopping_transpose_sign,
            )
            return 0.5 * (x + xt)

        return HamiltonianIrreps(
            onsite_h=onsite_h,
            hopping_h=sym_hopping(hopping_h),
            onsite_s=onsite_s,
            hopping_s=None if hopping_s is None else sym_hopping(hopping_s),
        )


@struct.dataclass
class NodeOutputs:
    """What `NodeStage` gives per node.

    Attributes:
        features: ``[n_nodes, feature_irreps.dim]`` node features of every layer (the input
            of the pair readouts).
        onsite_h: ``[n_nodes, onsite_dim]`` (eV), symmetrised.
        onsite_s: ``[n_nodes, onsite_dim]`` or None.
    """

    features: jax.Array
    onsite_h: jax.Array
    onsite_s: jax.Array | None


@struct.dataclass
class PairOutputs:
    """What `PairStage` gives per directed pair, *before* partner symmetrisation (the caller
    averages each pair with its partner's transposed row, as `HamiltonianModel` does).

    Attributes:
        hopping_h: ``[n_pairs, hopping_dim]`` (eV).
        hopping_s: ``[n_pairs, hopping_dim]`` or None.
    """

    hopping_h: jax.Array
    hopping_s: jax.Array | None


class NodeStage(_Network):
    """The node half of `HamiltonianModel` (same parameters): message passing and on-site
    outputs. Reads the node and edge fields of the batch; its pair fields may be empty."""

    @nn.compact
    def __call__(self, batch: GraphBatch, constants: ModelConstants) -> NodeOutputs:
        h_all, onsite_h, onsite_s = self._nodes(batch, constants)
        return NodeOutputs(features=h_all.array, onsite_h=onsite_h, onsite_s=onsite_s)


class PairStage(_Network):
    """The pair half of `HamiltonianModel` (same parameters): hopping outputs of every pair
    from node features computed by `NodeStage`. Reads the node and pair fields of the batch;
    its edge fields may be empty. Outputs are not symmetrised (see `PairOutputs`)."""

    @nn.compact
    def __call__(
        self, features: jax.Array, batch: GraphBatch, constants: ModelConstants
    ) -> PairOutputs:
        h_all = e3nn.IrrepsArray(self.feature_irreps, features)
        hopping_h, hopping_s = self._pairs(h_all, batch, constants)
        return PairOutputs(hopping_h=hopping_h, hopping_s=hopping_s)
