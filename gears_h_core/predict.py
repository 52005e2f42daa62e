"""Predictor: a model bundle plus one compiled function per padding bucket.

Reads top to bottom: structures -> neighbour graphs (the bundle's cutoffs) -> padded
`GraphBatch` in the smallest bucket that fits -> compiled network (one executable per bucket,
compiled ahead of time and counted) -> universal irreps -> orbital blocks -> one
`SparseHamiltonian` per structure. Hopping blocks are decoded for one pair of every partner
couple (i, j, n) / (j, i, −n) and mirrored, so H_ji(−T) = H_ij(T)ᵀ holds bit for bit.

A structure too large for the largest bucket is predicted in chunks (`predict_large`): its
graph is split into core atoms plus a halo (`gears_h_core.graph.chunking`), every chunk runs
in one bucket fitted to the chunks, and the outputs of the core atoms and their pairs are
assembled into full-structure arrays before the same decoding; the result equals the unsplit
prediction up to float32 round-off and stays sparse throughout.
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

from gears_h_core.export_cache import ExportCache
from gears_h_core.graph.chunking import Chunk, GraphChunker, fitted_bucket, pad_chunk
from gears_h_core.graph.neighbors import build_neighbor_graph, canonical_pair_mask
from gears_h_core.graph.padding import (
    BatchLayout,
    Bucket,
    BucketLadder,
    BucketOverflowError,
    GraphBatch,
    pad_graphs,
)
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

    def __init__(
        self,
        bundle: ModelBundle,
        ladder: BucketLadder | None = None,
        *,
        export_cache: ExportCache | None = None,
    ) -> None:
        """``export_cache``: keep each bucket's traced network on disk, so another process
        with the same code and bundle skips tracing (see `gears_h_core.export_cache`)."""
        self.bundle = bundle
        self.export_cache = export_cache
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
                if self.export_cache is None:
                    exe = jax.jit(self._apply).lower(self.params, spec, self.constants).compile()
                else:
                    exe = self._compile_exported(bucket, spec)
                self._compiled[bucket] = exe
                self.compile_count += 1
                loaded = (
                    ""
                    if self.export_cache is None
                    else (f", traced networks loaded from disk: {self.export_cache.hits}")
                )
                logger.info(
                    "compiled bucket %s (compilations: %d%s)",
                    bucket.to_dict(),
                    self.compile_count,
                    loaded,
                )
        return exe

    def _compile_exported(self, bucket: Bucket, spec: GraphBatch) -> Any:
        """Compile ``bucket`` through the export cache: flat arrays in and out, the output
        container rebuilt here (S present or not for every bucket alike)."""
        assert self.export_cache is not None
        leaves, treedef = jax.tree.flatten((self.params, spec, self.constants))

        def flat_apply(*flat: jax.Array) -> tuple[jax.Array, ...]:
            out = self._apply(*jax.tree.unflatten(treedef, flat))
            fields = (out.onsite_h, out.hopping_h, out.onsite_s, out.hopping_s)
            return tuple(x for x in fields if x is not None)

        b = self.bundle
        parts = (repr(b.config), repr(b.basis), repr(b.species), str(treedef))
        compiled = self.export_cache.lower(flat_apply, leaves, parts).compile()

        def run(params: Any, batch: GraphBatch, constants: ModelConstants) -> HamiltonianIrreps:
            outs = compiled(*jax.tree.leaves((params, batch, constants)))
            onsite_s, hopping_s = (outs[2], outs[3]) if len(outs) == 4 else (None, None)
            return HamiltonianIrreps(outs[0], outs[1], onsite_s, hopping_s)

        return run

    def warmup(self) -> int:
        """Compile every bucket of the ladder; returns the number of buckets."""
        for bucket in self.ladder.buckets:
            self.executable(bucket)
        return len(self.ladder.buckets)

    # -- prediction -------------------------------------------------------------------------
    def prepare(self, structures: Sequence[Structure]) -> _Prepared:
        return self.prepare_graphs([self.graph(s) for s in structures])

    def prepare_graphs(
        self, graphs: Sequence[NeighborGraph], bucket: Bucket | None = None
    ) -> _Prepared:
        """`prepare` for graphs built already (padded to ``bucket``, by default the smallest
        bucket of the ladder that fits)."""
        graphs = list(graphs)
        bucket = bucket if bucket is not None else self.ladder.select_for(graphs)
        batch, layout = pad_graphs(graphs, bucket)
        return _Prepared(graphs, batch, layout)

    def run(self, prepared: _Prepared) -> HamiltonianIrreps:
        exe = self.executable(prepared.layout.bucket)
        out = exe(self.params, prepared.batch, self.constants)
        return jax.device_get(out)

    def predict(
        self, structures: Sequence[Structure], *, overlap: bool = True
    ) -> list[SparseHamiltonian]:
        """H (and S when the model predicts it and ``overlap``) for every structure.

        A batch that does not fit the largest bucket is predicted structure by structure, and
        a structure that does not fit it alone is split into chunks (`predict_large`).
        """
        if not structures:
            return []
        return self.predict_graphs([self.graph(s) for s in structures], overlap=overlap)

    def predict_graphs(
        self, graphs: Sequence[NeighborGraph], *, overlap: bool = True
    ) -> list[SparseHamiltonian]:
        """`predict` for graphs built already (by `graph`)."""
        try:
            prepared = self.prepare_graphs(graphs)
        except BucketOverflowError:
            if len(graphs) == 1:
                return [self.predict_graph_chunked(graphs[0], overlap=overlap)]
            # too large together: one by one (each in chunks if it alone does not fit)
            return [r for g in graphs for r in self.predict_graphs([g], overlap=overlap)]
        return self.decode(prepared, self.run(prepared), overlap=overlap)

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

    # -- one large structure, in chunks -------------------------------------------------------
    def predict_large(
        self, structure: Structure, *, overlap: bool = True, budget: Bucket | None = None
    ) -> SparseHamiltonian:
        """H (and S) of one structure of any size, predicted in chunks.

        The graph is split into chunks (core atoms plus a halo of ``n_interactions`` edge
        hops, see `gears_h_core.graph.chunking`) whose edges and pairs fit ``budget``
        (default `chunk_budget`); all chunks are padded to one bucket fitted to them, stream
        through its compiled network, and the outputs of their core atoms and pairs are
        assembled into one sparse result, equal to the unsplit prediction up to float32
        round-off. Host memory grows with the number of pairs only.
        """
        return self.predict_graph_chunked(self.graph(structure), overlap=overlap, budget=budget)

    def chunk_budget(self) -> Bucket:
        """The default largest chunk: the edge and pair budgets of the ladder's largest bucket
        (what its memory was sized for), with room for the halo's nodes."""
        largest = self.ladder.largest
        return Bucket(
            n_nodes=max(largest.n_nodes, largest.n_edges),
            n_edges=largest.n_edges,
            n_pairs=largest.n_pairs,
            n_graphs=2,
        )

    def plan_chunks(
        self, graph: NeighborGraph, budget: Bucket | None = None
    ) -> tuple[list[Chunk], Bucket]:
        """The chunks of ``graph`` within ``budget`` (default `chunk_budget`) and the bucket
        they are all padded to (`gears_h_core.graph.chunking.fitted_bucket`)."""
        budget = budget if budget is not None else self.chunk_budget()
        chunker = GraphChunker(graph, self.bundle.config.n_interactions)
        chunks = list(chunker.split(budget))
        return chunks, fitted_bucket(chunks, budget)

    def predict_graph_chunked(
        self, graph: NeighborGraph, *, overlap: bool = True, budget: Bucket | None = None
    ) -> SparseHamiltonian:
        """`predict_large` for a graph built already: `plan_chunks`, `run_chunks`,
        `decode_assembled`."""
        chunks, bucket = self.plan_chunks(graph, budget)
        return self.decode_assembled(self.run_chunks(graph, chunks, bucket, overlap=overlap))

    def run_chunks(
        self, graph: NeighborGraph, chunks: list[Chunk], bucket: Bucket, *, overlap: bool = True
    ) -> AssembledIrreps:
        """Run ``chunks`` of ``graph`` (from `plan_chunks`) in ``bucket`` and assemble the
        outputs of their core atoms and owned canonical pairs.

        The list is emptied as the chunks are run (each is freed once assembled). Chunk k + 1
        is padded and dispatched before the outputs of chunk k are copied out, so host work
        overlaps the network where dispatch is asynchronous.
        """
        exe = self.executable(bucket)
        out = AssembledIrreps.create(
            graph,
            self.layout.onsite_irreps.dim,
            self.layout.hopping_irreps.dim,
            overlap and self.bundle.config.predict_overlap,
        )
        n_chunks = len(chunks)
        chunks.reverse()
        pending: tuple[Chunk, HamiltonianIrreps] | None = None
        while chunks:
            chunk = chunks.pop()
            result = exe(self.params, pad_chunk(chunk, bucket), self.constants)
            if pending is not None:
                out.add(*pending)
            pending = (chunk, result)
        if pending is not None:
            out.add(*pending)
        logger.info(
            "ran %d atoms, %d pairs in %d chunks of bucket %s",
            graph.n_atoms,
            graph.n_pairs,
            n_chunks,
            bucket.to_dict(),
        )
        return out

    def decode_assembled(self, out: AssembledIrreps) -> SparseHamiltonian:
        """Orbital blocks of assembled irreps (H first; its irreps are dropped before S is
        decoded, so ``out`` holds no arrays afterwards)."""
        graph = out.graph
        H = decode_blocks(self.layout, graph, out.onsite_h, out.hopping_h)
        out.onsite_h = out.hopping_h = np.zeros((0, 0), np.float32)
        S = None
        if out.onsite_s is not None and out.hopping_s is not None:
            S = decode_blocks(self.layout, graph, out.onsite_s, out.hopping_s)
            out.onsite_s = out.hopping_s = None
        return SparseHamiltonian(
            structure=graph.structure,
            basis=self.layout.basis.restricted_to(graph.structure.species),
            H=H,
            S=S,
        )


@dataclass(eq=False)
class AssembledIrreps:
    """Network outputs of one structure assembled from its chunks (float32, host).

    Attributes:
        graph: the structure with its **canonical** hopping pairs only (in the order of the
            full graph; no edges): all that `decode_blocks` reads.
        onsite_h, onsite_s: ``[n_atoms, onsite_dim]`` (S arrays None without S).
        hopping_h, hopping_s: ``[n_canonical_pairs, hopping_dim]``.
        canonical_row: int64 ``[n_pairs]`` row of every full-graph pair in the hopping
            arrays, −1 for the non-canonical ones (decoded as their partner's mirror).
    """

    graph: NeighborGraph
    onsite_h: np.ndarray
    hopping_h: np.ndarray
    onsite_s: np.ndarray | None
    hopping_s: np.ndarray | None
    canonical_row: np.ndarray

    @classmethod
    def create(
        cls, graph: NeighborGraph, onsite_dim: int, hopping_dim: int, with_s: bool
    ) -> AssembledIrreps:
        canon = canonical_pair_mask(graph.pair_i, graph.pair_j, graph.pair_shift)  # [n_pairs]
        n_canon = int(canon.sum())
        canonical_row = np.full(graph.n_pairs, -1, dtype=np.int64)
        canonical_row[canon] = np.arange(n_canon)
        canonical = NeighborGraph(
            structure=graph.structure,
            edge_i=graph.edge_i[:0],
            edge_j=graph.edge_j[:0],
            edge_shift=graph.edge_shift[:0],
            edge_vec=graph.edge_vec[:0],
            pair_i=graph.pair_i[canon],
            pair_j=graph.pair_j[canon],
            pair_shift=graph.pair_shift[canon],
            pair_vec=graph.pair_vec[canon],
        )

        def z(n: int, d: int) -> np.ndarray:
            return np.zeros((n, d), dtype=np.float32)

        return cls(
            graph=canonical,
            onsite_h=z(graph.n_atoms, onsite_dim),
            hopping_h=z(n_canon, hopping_dim),
            onsite_s=z(graph.n_atoms, onsite_dim) if with_s else None,
            hopping_s=z(n_canon, hopping_dim) if with_s else None,
            canonical_row=canonical_row,
        )

    def add(self, chunk: Chunk, out: HamiltonianIrreps) -> None:
        """Copy the outputs of ``chunk``'s core atoms and owned canonical pairs."""
        rows = self.canonical_row[chunk.pairs[chunk.owned]]  # [n_owned], −1: not canonical
        keep = rows >= 0
        src, dst = chunk.owned[keep], rows[keep]
        atoms = chunk.atoms[chunk.core]
        self.onsite_h[atoms] = np.asarray(out.onsite_h)[chunk.core]
        self.hopping_h[dst] = np.asarray(out.hopping_h)[src]
        if self.onsite_s is not None and self.hopping_s is not None:
            self.onsite_s[atoms] = np.asarray(out.onsite_s)[chunk.core]
            self.hopping_s[dst] = np.asarray(out.hopping_s)[src]


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


_DECODE_ROWS = 8192  # pairs decoded at a time (bounds the temporaries of decode_blocks)


def decode_blocks(
    layout: OutputLayout, graph: NeighborGraph, onsite: np.ndarray, hopping: np.ndarray
) -> BlockMatrix:
    """Universal irreps of one structure -> `BlockMatrix` (canonical pairs decoded, mirrored).

    Blocks are decoded a slice of rows at a time straight into their sorted place, so the
    temporaries stay small next to the result.

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
    canon = np.flatnonzero(canonical_pair_mask(graph.pair_i, graph.pair_j, graph.pair_shift))
    ci, cj = graph.pair_i[canon], graph.pair_j[canon]  # [n_canonical]
    cs = graph.pair_shift[canon]  # [n_canonical, 3]
    zi, zj = numbers[ci], numbers[cj]
    groups = []
    species = graph.structure.species
    for a in species:
        for b in species:
            direct = np.flatnonzero((zi == a) & (zj == b))  # rows decoded as (i, j, n)
            mirror = np.flatnonzero((zi == b) & (zj == a))  # rows decoded as (j, i, −n)
            n_direct = direct.shape[0]
            n = n_direct + mirror.shape[0]
            if n == 0:
                continue
            i = np.concatenate([ci[direct], cj[mirror]]).astype(np.int32)
            j = np.concatenate([cj[direct], ci[mirror]]).astype(np.int32)
            sh = np.concatenate([cs[direct], -cs[mirror]]).astype(np.int32)
            order = np.lexsort((sh[:, 2], sh[:, 1], sh[:, 0], j, i))
            place = np.empty(n, dtype=np.int64)  # sorted position of every unsorted row
            place[order] = np.arange(n)
            blocks = np.empty((n, layout.basis.n_orb(a), layout.basis.n_orb(b)), np.float32)
            for lo in range(0, n, _DECODE_ROWS):
                hi = min(lo + _DECODE_ROWS, n)
                if lo < n_direct:  # direct rows in [lo, min(hi, n_direct))
                    top = min(hi, n_direct)
                    x = hopping[canon[direct[lo:top]]]
                    blocks[place[lo:top]] = layout.decode_hopping(a, b, x)
                if hi > n_direct:  # mirrored rows in [max(lo, n_direct), hi)
                    bottom = max(lo, n_direct)
                    x = hopping[canon[mirror[bottom - n_direct : hi - n_direct]]]
                    blocks[place[bottom:hi]] = np.swapaxes(layout.decode_hopping(b, a, x), 1, 2)
            groups.append(
                HoppingGroup(z_i=a, z_j=b, i=i[order], j=j[order], shift=sh[order], blocks=blocks)
            )
    return BlockMatrix(onsite=tuple(onsite_groups), hopping=tuple(groups))
