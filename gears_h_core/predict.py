"""Predictor: a model bundle plus one compiled function per padding bucket.

Reads top to bottom: structures -> neighbour graphs (the bundle's cutoffs) -> padded
`GraphBatch` in the smallest bucket that fits -> compiled network (one executable per bucket,
compiled ahead of time and counted) -> universal irreps -> orbital blocks -> one
`SparseHamiltonian` per structure. Hopping blocks are decoded for one pair of every partner
couple (i, j, n) / (j, i, −n) and mirrored, so H_ji(−T) = H_ij(T)ᵀ holds bit for bit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gears_h_core.graph.neighbors import build_neighbor_graph, canonical_pair_mask
from gears_h_core.graph.padding import BatchLayout, Bucket, BucketLadder, GraphBatch, pad_graphs
from gears_h_core.io.bundle import ModelBundle
from gears_h_core.io.wire import ModelInfo
from gears_h_core.model.hamiltonian import HamiltonianIrreps, HamiltonianModel, ModelConstants
from gears_h_core.model.layout import OutputLayout
from gears_h_core.model.scale_shift import Statistics
from gears_h_core.structure import Structure, StructureError
from gears_h_core.types import (
    BlockMatrix,
    HoppingGroup,
    NeighborGraph,
    OnsiteGroup,
    SparseHamiltonian,
)

logger = logging.getLogger(__name__)


class UnknownSpeciesError(StructureError):
    """A structure contains an element the model was not trained on."""


def build_model(bundle: ModelBundle) -> tuple[HamiltonianModel, OutputLayout]:
    layout = OutputLayout.create(bundle.basis, bundle.species)
    model = HamiltonianModel(
        config=bundle.config,
        n_species=layout.n_species,
        onsite_irreps=layout.onsite_irreps,
        hopping_irreps=layout.hopping_irreps,
    )
    return model, layout


def params_to_flat(params: Any) -> dict[str, np.ndarray]:
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    return {k: np.asarray(v) for k, v in flat.items()}


def params_from_flat(flat: dict[str, np.ndarray]) -> Any:
    return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")


@dataclass(frozen=True, eq=False)
class _Prepared:
    graphs: list[NeighborGraph]
    batch: GraphBatch
    layout: BatchLayout


class Predictor:
    """Predict H (and S) for structures with a loaded bundle.

    Thread-safe for concurrent `predict` calls (compilation is serialised).
    """

    def __init__(self, bundle: ModelBundle, ladder: BucketLadder | None = None) -> None:
        self.bundle = bundle
        self.model, self.layout = build_model(bundle)
        self.ladder = ladder if ladder is not None else BucketLadder.from_dict(bundle.ladder)
        stats = Statistics.from_numpy(bundle.statistics)
        self.constants = jax.device_put(ModelConstants.create(self.layout, stats))
        self.params = jax.device_put(params_from_flat(bundle.params))
        self._compiled: dict[Bucket, Any] = {}
        self._lock = threading.Lock()
        self.compile_count = 0

    @property
    def model_info(self) -> ModelInfo:
        """Name, version and parameter sha256 of the bundle (the ``model`` of wire results)."""
        b = self.bundle
        return ModelInfo(name=b.name, version=b.version, sha256=b.sha256)

    # -- graphs ------------------------------------------------------------------------------
    def check_species(self, structure: Structure) -> None:
        unknown = sorted(set(structure.species) - set(self.bundle.species))
        if unknown:
            a = int(np.flatnonzero(np.isin(structure.numbers, unknown))[0])
            raise UnknownSpeciesError(
                f"atom {a}: element {unknown[0]} is not known to model {self.bundle.name!r} "
                f"(knows {list(self.bundle.species)})"
            )

    def graph(self, structure: Structure) -> NeighborGraph:
        self.check_species(structure)
        return build_neighbor_graph(
            structure, self.bundle.config.edge_cutoff, self.bundle.pair_cutoff
        )

    # -- compilation ---------------------------------------------------------------------
    def _apply(
        self, params: Any, batch: GraphBatch, constants: ModelConstants
    ) -> HamiltonianIrreps:
        return self.model.apply(params, batch, constants)

    def executable(self, bucket: Bucket) -> Any:
        """The compiled network for ``bucket`` (compiled on first use, then cached)."""
        exe = self._compiled.get(bucket)
        if exe is not None:
            return exe
        with self._lock:
            exe = self._compiled.get(bucket)
            if exe is None:
                spec = batch_spec(bucket)
                exe = jax.jit(self._apply).lower(self.params, spec, self.constants).compile()
                self._compiled[bucket] = exe
                self.compile_count += 1
                logger.info(
                    "compiled bucket %s (compilations: %d)", bucket.to_dict(), self.compile_count
                )
        return exe

    def warmup(self) -> int:
        """Compile every bucket of the ladder; returns the number of buckets."""
        for bucket in self.ladder.buckets:
            self.executable(bucket)
        return len(self.ladder.buckets)

    # -- prediction -------------------------------------------------------------------------
    def prepare(self, structures: Sequence[Structure]) -> _Prepared:
        graphs = [self.graph(s) for s in structures]
        bucket = self.ladder.select_for(graphs)
        batch, layout = pad_graphs(graphs, bucket)
        return _Prepared(graphs, batch, layout)

    def run(self, prepared: _Prepared) -> HamiltonianIrreps:
        exe = self.executable(prepared.layout.bucket)
        out = exe(self.params, prepared.batch, self.constants)
        return jax.device_get(out)

    def predict(
        self, structures: Sequence[Structure], *, overlap: bool = True
    ) -> list[SparseHamiltonian]:
        """H (and S when the model predicts it and ``overlap``) for every structure."""
        if not structures:
            return []
        prepared = self.prepare(structures)
        out = self.run(prepared)
        return self.decode(prepared, out, overlap=overlap)

    def decode(
        self, prepared: _Prepared, out: HamiltonianIrreps, *, overlap: bool = True
    ) -> list[SparseHamiltonian]:
        results = []
        for g, graph in enumerate(prepared.graphs):
            nodes = prepared.layout.node_slice(g)
            pairs = prepared.layout.pair_slice(g)
            H = decode_blocks(
                self.layout,
                graph,
                np.asarray(out.onsite_h)[nodes],
                np.asarray(out.hopping_h)[pairs],
            )
            S = None
            if overlap and out.onsite_s is not None and out.hopping_s is not None:
                S = decode_blocks(
                    self.layout,
                    graph,
                    np.asarray(out.onsite_s)[nodes],
                    np.asarray(out.hopping_s)[pairs],
                )
            results.append(
                SparseHamiltonian(
                    structure=graph.structure,
                    basis=self.layout.basis.restricted_to(graph.structure.species),
                    H=H,
                    S=S,
                )
            )
        return results


def batch_spec(bucket: Bucket) -> GraphBatch:
    """Abstract `GraphBatch` of a bucket (for ahead-of-time compilation)."""

    def s(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype)

    n, e, p, g = bucket.n_nodes, bucket.n_edges, bucket.n_pairs, bucket.n_graphs
    fields = {
        "numbers": s((n,), jnp.int32),
        "node_mask": s((n,), jnp.bool_),
        "node_graph": s((n,), jnp.int32),
        "edge_i": s((e,), jnp.int32),
        "edge_j": s((e,), jnp.int32),
        "edge_vec": s((e, 3), jnp.float32),
        "edge_mask": s((e,), jnp.bool_),
        "pair_i": s((p,), jnp.int32),
        "pair_j": s((p,), jnp.int32),
        "pair_vec": s((p, 3), jnp.float32),
        "pair_mask": s((p,), jnp.bool_),
        "pair_partner": s((p,), jnp.int32),
        "graph_mask": s((g,), jnp.bool_),
    }
    return GraphBatch(**fields)


def decode_blocks(
    layout: OutputLayout, graph: NeighborGraph, onsite: np.ndarray, hopping: np.ndarray
) -> BlockMatrix:
    """Universal irreps of one structure -> `BlockMatrix` (canonical pairs decoded, mirrored).

    Args:
        onsite: ``[n_atoms, onsite_dim]``; hopping: ``[n_pairs, hopping_dim]`` in the order of
            ``graph``'s pairs.
    """
    numbers = graph.structure.numbers
    onsite_groups = []
    for z in graph.structure.species:
        atoms = np.flatnonzero(numbers == z).astype(np.int32)
        onsite_groups.append(
            OnsiteGroup(z=z, atoms=atoms, blocks=layout.decode_onsite(z, onsite[atoms]))
        )
    canon = canonical_pair_mask(graph.pair_i, graph.pair_j, graph.pair_shift)
    ci, cj = graph.pair_i[canon], graph.pair_j[canon]
    cs = graph.pair_shift[canon]
    cx = hopping[canon]
    zi, zj = numbers[ci], numbers[cj]
    groups = []
    species = graph.structure.species
    for a in species:
        for b in species:
            parts_i, parts_j, parts_s, parts_b = [], [], [], []
            direct = (zi == a) & (zj == b)
            if direct.any():
                parts_i.append(ci[direct])
                parts_j.append(cj[direct])
                parts_s.append(cs[direct])
                parts_b.append(layout.decode_hopping(a, b, cx[direct]))
            mirror = (zi == b) & (zj == a)
            if mirror.any():
                parts_i.append(cj[mirror])
                parts_j.append(ci[mirror])
                parts_s.append(-cs[mirror])
                parts_b.append(np.swapaxes(layout.decode_hopping(b, a, cx[mirror]), 1, 2))
            if not parts_i:
                continue
            i = np.concatenate(parts_i).astype(np.int32)
            j = np.concatenate(parts_j).astype(np.int32)
            sh = np.concatenate(parts_s).astype(np.int32)
            blocks = np.ascontiguousarray(np.concatenate(parts_b))
            order = np.lexsort((sh[:, 2], sh[:, 1], sh[:, 0], j, i))
            groups.append(
                HoppingGroup(
                    z_i=a, z_j=b, i=i[order], j=j[order], shift=sh[order], blocks=blocks[order]
                )
            )
    return BlockMatrix(onsite=tuple(onsite_groups), hopping=tuple(groups))
