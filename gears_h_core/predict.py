"""Predictor: a model bundle plus one compiled function per padding bucket.

Reads top to bottom: structures -> neighbour graphs (the bundle's cutoffs) -> padded
`GraphBatch` in the smallest bucket that fits -> compiled network (one executable per bucket,
compiled ahead of time and counted) -> universal irreps -> orbital blocks -> one
`SparseHamiltonian` per structure. Hopping blocks are decoded for one pair of every partner
couple (i, j, n) / (j, i, −n) and mirrored, so H_ji(−T) = H_ij(T)ᵀ holds bit for bit.

A structure too large for the largest bucket is predicted in chunks (`predict_large`), in two
passes with the two halves of the network (`NodeStage`, `PairStage`): node chunks (core atoms
plus a halo of edge hops) give the node features and on-site outputs of all atoms, then pair
chunks (the pairs of some core atoms, no halo) give every directed pair's hopping outputs
from those features; each pass runs in one bucket fitted to its chunks. The outputs are
assembled into full-structure arrays, pairs averaged with their partners there, before the
same decoding; the result equals the unsplit prediction up to float32 round-off and stays
sparse throughout.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gears_h_core.export_cache import ExportCache
from gears_h_core.graph.chunking import Chunk, GraphChunker, Part, fitted_bucket, pad_chunk
from gears_h_core.graph.neighbors import (
    build_neighbor_graph,
    canonical_pair_mask,
    pair_partner_index,
)
from gears_h_core.graph.padding import (
    BatchLayout,
    Bucket,
    BucketLadder,
    BucketOverflowError,
    GraphBatch,
    pad_graphs,
)
from gears_h_core.host_memory import release_free_memory
from gears_h_core.io.bundle import ModelBundle
from gears_h_core.io.wire import ModelInfo
from gears_h_core.model.hamiltonian import (
    HamiltonianIrreps,
    HamiltonianModel,
    ModelConstants,
    NodeOutputs,
    NodeStage,
    PairOutputs,
    PairStage,
)
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


Stage = Literal["model", "nodes", "pairs"]


def _spare_cores() -> bool:
    """Whether this process may use more than 2 cores.

    XLA's CPU compiler keeps about 2 cores busy (measured: 6.1 s of CPU time in 3.4 s wall
    for the node network of the 1,712-atom WSe2-like benchmark). With 2 cores, tracing one
    network while compiling another does not shorten anything (measured, 3 runs each: cold
    `infer` 21-24 s either way) and the second compilation's working set adds to the peak
    memory, so networks are then prepared one after the other.
    """
    return _usable_cores() > 2


def compile_workers() -> int:
    """Threads that compile buckets at once: 2, and up to 4 where cores allow (a quarter of
    them). XLA's compiler keeps about 2 cores busy per compilation (see `_spare_cores`), so
    on a 16-core GPU host 4 of a server's warm-up buckets compile at once; more would mostly
    add the working sets of concurrent compilations to the peak memory."""
    return max(2, min(4, _usable_cores() // 4))


def _usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, eq=False)
class StructureIrreps:
    """One structure's network output (universal irreps), not yet decoded to blocks.

    Attributes:
        graph: the structure's neighbour graph.
        onsite_h, hopping_h: ``[n_atoms, onsite_dim]``, ``[n_pairs, hopping_dim]``.
        onsite_s, hopping_s: the same for S, or None (not predicted or not wanted).
    """

    graph: NeighborGraph
    onsite_h: np.ndarray
    hopping_h: np.ndarray
    onsite_s: np.ndarray | None
    hopping_s: np.ndarray | None


@dataclass(frozen=True, eq=False)
class _Prepared:
    graphs: list[NeighborGraph]
    batch: GraphBatch
    layout: BatchLayout


class Predictor:
    """Predict H (and S) for structures with a loaded bundle.

    Thread-safe for concurrent `predict` calls (tracing is serialised; XLA compiles in two
    worker threads, see `compile_async`).
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
        fields = {
            f: getattr(self.model, f)
            for f in ("config", "n_species", "onsite_irreps", "hopping_irreps")
        }
        self.stages: dict[Stage, HamiltonianModel | NodeStage | PairStage] = {
            "model": self.model,
            "nodes": NodeStage(**fields),
            "pairs": PairStage(**fields),
        }
        self.feature_dim = self.model.feature_irreps.dim
        self._compiled: dict[tuple[Stage, Bucket], Future[Any]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._trace_lock = threading.Lock()  # one trace at a time
        self._lock = threading.Lock()  # guards _compiled, _pool, compile_count
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
    def _apply(self, stage: Stage, params: Any, *args: Any) -> Any:
        return self.stages[stage].apply(params, *args)

    def _spec(self, stage: Stage, bucket: Bucket) -> tuple[Any, ...]:
        """Abstract arguments after ``params`` of ``stage`` for ``bucket``."""
        if stage == "pairs":
            dim = self.feature_dim
            features = jax.ShapeDtypeStruct((bucket.n_nodes, dim), jnp.float32)
            return (features, batch_spec(bucket), self.constants)
        return (batch_spec(bucket), self.constants)

    def executable(self, bucket: Bucket, stage: Stage = "model") -> Any:
        """The compiled network (``stage``: the whole model, or its node or pair half) for
        ``bucket`` (compiled on first use, then cached)."""
        return self.compile_async(bucket, stage).result()

    def compile_async(self, bucket: Bucket, stage: Stage = "model") -> Future[Any]:
        """Start compiling `executable` ``(bucket, stage)``; returns its future.

        The network is traced here, in the calling thread (tracing is Python and holds the
        GIL), and handed to XLA in a worker thread (XLA releases the GIL), whose freed heap
        is given back afterwards (`gears_h_core.host_memory`). A caller that needs several
        executables may ask for all of them first, so that tracing the next overlaps
        compiling the previous and compiling overlaps running those that are ready
        (`run_chunks` does where more than 2 cores are available). A failed compilation is
        forgotten, so the next request retries it.
        """
        key = (stage, bucket)
        with self._lock:  # the hot path: never waits for another bucket's trace
            future = self._compiled.get(key)
        if future is not None:
            return future
        with self._trace_lock:
            with self._lock:  # traced by another thread while this one waited?
                future = self._compiled.get(key)
            if future is not None:
                return future
            lowered, wrap = self._lower(stage, self._spec(stage, bucket))
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        compile_workers(), thread_name_prefix="gears_h-compile"
                    )
                future = self._pool.submit(self._compile, key, lowered, wrap)
                self._compiled[key] = future
        return future

    def _compile(self, key: tuple[Stage, Bucket], lowered: Any, wrap: Any) -> Any:
        try:
            exe = wrap(lowered.compile())
        except BaseException:
            with self._lock:
                self._compiled.pop(key, None)
            raise
        finally:
            # the worker thread's malloc arena keeps XLA's working set otherwise
            release_free_memory()
        with self._lock:
            self.compile_count += 1
            count = self.compile_count
        loaded = (
            ""
            if self.export_cache is None
            else f", traced networks loaded from disk: {self.export_cache.hits}"
        )
        logger.info(
            "compiled %s bucket %s (compilations: %d%s)", key[0], key[1].to_dict(), count, loaded
        )
        return exe

    def _lower(self, stage: Stage, spec: tuple[Any, ...]) -> tuple[Any, Any]:
        """The lowered network of ``stage`` for the abstract arguments ``spec`` and the
        function that turns its compiled form into ``(params, *args) -> output``.

        Through the export cache, flat arrays go in and out and the output container is
        rebuilt here (its S fields present or not for every bucket alike, as the model
        predicts S or not).
        """
        if self.export_cache is None:
            apply = functools.partial(self._apply, stage)
            return jax.jit(apply).lower(self.params, *spec), lambda compiled: compiled
        leaves, treedef = jax.tree.flatten((self.params, *spec))
        container = {"model": HamiltonianIrreps, "nodes": NodeOutputs, "pairs": PairOutputs}[stage]
        names = [f.name for f in dataclasses.fields(container)]
        with_s = self.bundle.config.predict_overlap
        present = [n for n in names if with_s or not n.endswith("_s")]

        def flat_apply(*flat: jax.Array) -> tuple[jax.Array, ...]:
            out = self._apply(stage, *jax.tree.unflatten(treedef, flat))
            return tuple(getattr(out, n) for n in present)

        b = self.bundle
        parts = (stage, repr(b.config), repr(b.basis), repr(b.species), str(treedef))
        lowered = self.export_cache.lower(flat_apply, leaves, parts)

        def wrap(compiled: Any) -> Any:
            def run(params: Any, *args: Any) -> Any:
                outs = compiled(*jax.tree.leaves((params, *args)))
                values = dict.fromkeys(names) | dict(zip(present, outs, strict=True))
                return container(**values)

            return run

        return lowered, wrap

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

    def split(
        self, prepared: _Prepared, out: HamiltonianIrreps, *, overlap: bool | Sequence[bool] = True
    ) -> list[StructureIrreps]:
        """Every structure's share of a batch's output (views; S dropped where not wanted).

        ``overlap``: one flag for all structures or one per structure.
        """
        flags = [overlap] * len(prepared.graphs) if isinstance(overlap, bool) else list(overlap)
        has_s = out.onsite_s is not None and out.hopping_s is not None
        onsite_h, hopping_h = np.asarray(out.onsite_h), np.asarray(out.hopping_h)
        onsite_s = np.asarray(out.onsite_s) if has_s else None
        hopping_s = np.asarray(out.hopping_s) if has_s else None
        shares = []
        for g, (graph, want_s) in enumerate(zip(prepared.graphs, flags, strict=True)):
            nodes = prepared.layout.node_slice(g)
            pairs = prepared.layout.pair_slice(g)
            s_wanted = want_s and onsite_s is not None and hopping_s is not None
            shares.append(
                StructureIrreps(
                    graph=graph,
                    onsite_h=onsite_h[nodes],
                    hopping_h=hopping_h[pairs],
                    onsite_s=onsite_s[nodes] if s_wanted else None,
                    hopping_s=hopping_s[pairs] if s_wanted else None,
                )
            )
        return shares

    def decode_one(self, share: StructureIrreps) -> SparseHamiltonian:
        """Orbital blocks of one structure's irreps (thread-safe; the service runs it in the
        request's thread, off the device worker)."""
        graph = share.graph
        H = decode_blocks(self.layout, graph, share.onsite_h, share.hopping_h)
        S = None
        if share.onsite_s is not None and share.hopping_s is not None:
            S = decode_blocks(self.layout, graph, share.onsite_s, share.hopping_s)
        return SparseHamiltonian(
            structure=graph.structure,
            basis=self.layout.basis.restricted_to(graph.structure.species),
            H=H,
            S=S,
        )

    def decode(
        self, prepared: _Prepared, out: HamiltonianIrreps, *, overlap: bool = True
    ) -> list[SparseHamiltonian]:
        return [self.decode_one(share) for share in self.split(prepared, out, overlap=overlap)]

    # -- one large structure, in chunks -------------------------------------------------------
    def predict_large(
        self, structure: Structure, *, overlap: bool = True, budget: Bucket | None = None
    ) -> SparseHamiltonian:
        """H (and S) of one structure of any size, predicted in chunks.

        The graph is split into node chunks (core atoms plus a halo of ``n_interactions``
        edge hops) and pair chunks (the pairs of some core atoms) that fit ``budget`` (default
        `chunk_budget`), see `gears_h_core.graph.chunking`. Node chunks run through the node
        half of the network, pair chunks through its pair half with the node features
        gathered from the first pass; their outputs are assembled into one sparse result,
        equal to the unsplit prediction up to float32 round-off. Host memory grows with the
        number of pairs only.
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

    def plan_chunks(self, graph: NeighborGraph, budget: Bucket | None = None) -> ChunkPlan:
        """The node and pair chunks of ``graph`` within ``budget`` (default `chunk_budget`)
        and the buckets they are padded to (`gears_h_core.graph.chunking.fitted_bucket`)."""
        budget = budget if budget is not None else self.chunk_budget()
        chunker = GraphChunker(graph, self.bundle.config.n_interactions)
        nodes = list(chunker.split(budget, "nodes"))
        pairs = list(chunker.split(budget, "pairs"))
        return ChunkPlan(
            nodes=nodes,
            node_bucket=fitted_bucket(nodes, budget),
            pairs=pairs,
            pair_bucket=fitted_bucket(pairs, budget),
        )

    def predict_graph_chunked(
        self, graph: NeighborGraph, *, overlap: bool = True, budget: Bucket | None = None
    ) -> SparseHamiltonian:
        """`predict_large` for a graph built already: `plan_chunks`, `run_chunks`,
        `decode_assembled`."""
        plan = self.plan_chunks(graph, budget)
        return self.decode_assembled(self.run_chunks(graph, plan, overlap=overlap))

    def warm_chunks(self, plan: ChunkPlan) -> None:
        """Compile both buckets of ``plan`` and run each once on its first chunk (XLA's
        buffers allocated), so that `run_chunks` afterwards times only the network."""
        nodes, pairs = plan.node_bucket, plan.pair_bucket
        out = self.executable(nodes, "nodes")(
            self.params, pad_chunk(plan.nodes[0], nodes), self.constants
        )
        jax.block_until_ready(out)
        features = np.zeros((pairs.n_nodes, self.feature_dim), np.float32)
        out = self.executable(pairs, "pairs")(
            self.params, features, pad_chunk(plan.pairs[0], pairs), self.constants
        )
        jax.block_until_ready(out)

    def run_chunks(
        self, graph: NeighborGraph, plan: ChunkPlan, *, overlap: bool = True
    ) -> AssembledIrreps:
        """Run the chunks of ``plan`` (from `plan_chunks` for ``graph``): node chunks first,
        then pair chunks fed with the assembled node features; returns the outputs of every
        atom and canonical pair.

        The plan's lists are emptied as the chunks are run (each is freed once assembled).
        Chunk k + 1 is padded and dispatched before the outputs of chunk k are copied out, so
        host work overlaps the network where dispatch is asynchronous.
        """
        out = AssembledIrreps.create(
            graph,
            self.layout,
            self.feature_dim,
            overlap and self.bundle.config.predict_overlap,
        )
        n_node_chunks, n_pair_chunks = len(plan.nodes), len(plan.pairs)
        self.compile_async(plan.node_bucket, "nodes")
        if _spare_cores():
            # trace the pair network while the node network compiles, compile it while the
            # node chunks run
            self.compile_async(plan.pair_bucket, "pairs")
        self._stream("nodes", plan.nodes, plan.node_bucket, out)
        self._stream("pairs", plan.pairs, plan.pair_bucket, out)
        out.features = np.zeros((0, 0), np.float32)
        logger.info(
            "ran %d atoms in %d node chunks of bucket %s, %d pairs in %d pair chunks of bucket %s",
            graph.n_atoms,
            n_node_chunks,
            plan.node_bucket.to_dict(),
            graph.n_pairs,
            n_pair_chunks,
            plan.pair_bucket.to_dict(),
        )
        return out

    def _stream(
        self, stage: Part, chunks: list[Chunk], bucket: Bucket, out: AssembledIrreps
    ) -> None:
        exe = self.executable(bucket, stage)
        chunks.reverse()
        pending: tuple[Chunk, Any] | None = None
        while chunks:
            chunk = chunks.pop()
            batch = pad_chunk(chunk, bucket)
            if stage == "nodes":
                result = exe(self.params, batch, self.constants)
            else:
                features = np.zeros((bucket.n_nodes, out.features.shape[1]), np.float32)
                features[: chunk.atoms.shape[0]] = out.features[chunk.atoms]
                result = exe(self.params, features, batch, self.constants)
            if pending is not None:
                out.add(*pending)
            pending = (chunk, result)
        if pending is not None:
            out.add(*pending)

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
class ChunkPlan:
    """How one large structure is run: node chunks and pair chunks, each padded to one bucket.

    Attributes:
        nodes: node chunks (cores partition the atoms; halo of edge hops; no pairs).
        node_bucket: the bucket every node chunk is padded to.
        pairs: pair chunks (every directed pair in exactly one; no edges).
        pair_bucket: the bucket every pair chunk is padded to.
    """

    nodes: list[Chunk]
    node_bucket: Bucket
    pairs: list[Chunk]
    pair_bucket: Bucket


@dataclass(eq=False)
class AssembledIrreps:
    """Network outputs of one structure assembled from its chunks (float32, host).

    Attributes:
        graph: the structure with its **canonical** hopping pairs only (in the order of the
            full graph; no edges): all that `decode_blocks` reads.
        features: ``[n_atoms, feature_dim]`` node features from the node chunks (read by the
            pair chunks; emptied once they ran).
        onsite_h, onsite_s: ``[n_atoms, onsite_dim]`` (S arrays None without S).
        hopping_h, hopping_s: ``[n_canonical_pairs, hopping_dim]``: the mean of every
            canonical pair's output and its partner's transposed output, as in
            `HamiltonianModel` (each half added when its pair chunk is assembled).
        canonical_row: int64 ``[n_pairs]`` row of every full-graph pair in the hopping
            arrays, −1 for the non-canonical ones (decoded as their partner's mirror).
        partner_row: int64 ``[n_pairs]`` hopping row of every full-graph pair's partner.
        partner_kind: ``[n_pairs]`` species-pair index of every full-graph pair's partner.
        transpose_index, transpose_sign: `OutputLayout.hopping_transpose`.
    """

    graph: NeighborGraph
    features: np.ndarray
    onsite_h: np.ndarray
    hopping_h: np.ndarray
    onsite_s: np.ndarray | None
    hopping_s: np.ndarray | None
    canonical_row: np.ndarray
    partner_row: np.ndarray
    partner_kind: np.ndarray
    transpose_index: np.ndarray
    transpose_sign: np.ndarray

    @classmethod
    def create(
        cls, graph: NeighborGraph, layout: OutputLayout, feature_dim: int, with_s: bool
    ) -> AssembledIrreps:
        canon = canonical_pair_mask(graph.pair_i, graph.pair_j, graph.pair_shift)  # [n_pairs]
        n_canon = int(canon.sum())
        canonical_row = np.full(graph.n_pairs, -1, dtype=np.int64)
        canonical_row[canon] = np.arange(n_canon)
        partner = pair_partner_index(graph.pair_i, graph.pair_j, graph.pair_shift)
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
        index, sign = layout.hopping_transpose
        onsite_dim, hopping_dim = layout.onsite_irreps.dim, layout.hopping_irreps.dim

        def z(n: int, d: int) -> np.ndarray:
            return np.zeros((n, d), dtype=np.float32)

        return cls(
            graph=canonical,
            features=z(graph.n_atoms, feature_dim),
            onsite_h=z(graph.n_atoms, onsite_dim),
            hopping_h=z(n_canon, hopping_dim),
            onsite_s=z(graph.n_atoms, onsite_dim) if with_s else None,
            hopping_s=z(n_canon, hopping_dim) if with_s else None,
            canonical_row=canonical_row,
            partner_row=canonical_row[partner],
            partner_kind=layout.pair_kinds(graph.structure.numbers, graph.pair_j, graph.pair_i),
            transpose_index=index,
            transpose_sign=sign,
        )

    def add(self, chunk: Chunk, out: NodeOutputs | PairOutputs) -> None:
        """Copy a node chunk's core outputs, or add a pair chunk's halves of the hopping
        outputs."""
        if isinstance(out, NodeOutputs):
            local = chunk.core
            atoms = chunk.atoms[local]
            self.features[atoms] = np.asarray(out.features)[local]
            self.onsite_h[atoms] = np.asarray(out.onsite_h)[local]
            if self.onsite_s is not None:
                self.onsite_s[atoms] = np.asarray(out.onsite_s)[local]
            return
        n = chunk.pairs.shape[0]
        self._add_halves(self.hopping_h, chunk.pairs, np.asarray(out.hopping_h)[:n])
        if self.hopping_s is not None:
            self._add_halves(self.hopping_s, chunk.pairs, np.asarray(out.hopping_s)[:n])

    def _add_halves(self, target: np.ndarray, rows: np.ndarray, x: np.ndarray) -> None:
        """``target[c] = ½ (x_c + Pᵀ x_partner(c))`` built from both sides: a canonical
        pair adds ½ x, a non-canonical one ½ of its transposed output to its partner's row
        (halving is exact in float32, so this is the network's ``½ (x + xt)``)."""
        dst = self.canonical_row[rows]
        direct = dst >= 0
        target[dst[direct]] += 0.5 * x[direct]
        mirror = ~direct
        r = rows[mirror]
        kind = self.partner_kind[r]
        xt = self.transpose_sign[kind] * np.take_along_axis(
            x[mirror], self.transpose_index[kind], axis=1
        )
        target[self.partner_row[r]] += 0.5 * xt


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

    Every canonical pair gives two rows: its block B, decoded once, for ``(i, j, n)`` and Bᵀ
    for its partner ``(j, i, −n)`` (so H_ji(−T) = H_ij(T)ᵀ holds bit for bit); one sort by
    (species pair, i, j, n) puts all rows in their place. Blocks are decoded a slice of rows
    at a time straight into that place, so the temporaries stay small next to the result.
    The arithmetic of a block depends only on its own row of irreps (one matrix product per
    species pair and slice, within this structure), never on other structures of a batch.

    Args:
        onsite: ``[n_atoms, onsite_dim]``; hopping: ``[n_pairs, hopping_dim]`` in the order of
            ``graph``'s pairs.
    """
    numbers = graph.structure.numbers
    species = graph.structure.species  # sorted
    rank = np.searchsorted(species, numbers)  # species rank of every atom
    order_atoms = np.argsort(rank, kind="stable")
    atom_bounds = np.searchsorted(rank[order_atoms], np.arange(len(species) + 1))
    onsite_groups = []
    for s, z in enumerate(species):
        atoms = order_atoms[atom_bounds[s] : atom_bounds[s + 1]].astype(np.int32)
        onsite_groups.append(
            OnsiteGroup(z=z, atoms=atoms, blocks=layout.decode_onsite(z, onsite, atoms))
        )
    canon = np.flatnonzero(canonical_pair_mask(graph.pair_i, graph.pair_j, graph.pair_shift))
    n_canon = canon.shape[0]
    ci, cj = graph.pair_i[canon], graph.pair_j[canon]  # [n_canonical]
    cs = graph.pair_shift[canon]  # [n_canonical, 3]
    # rows [0, n_canon): (i, j, n) as stored; rows [n_canon, 2 n_canon): partners (j, i, −n)
    i = np.concatenate([ci, cj]).astype(np.int32)
    j = np.concatenate([cj, ci]).astype(np.int32)
    sh = np.concatenate([cs, -cs]).astype(np.int32)
    n_sp = len(species)
    kind = rank[i] * n_sp + rank[j]  # the group (ordered species pair) of every row
    order = np.lexsort((sh[:, 2], sh[:, 1], sh[:, 0], j, i, kind))
    bounds = np.searchsorted(kind[order], np.arange(n_sp * n_sp + 1))
    place = np.empty(2 * n_canon, np.int64)  # every row's position in its sorted group
    place[order] = np.arange(2 * n_canon) - bounds[kind[order]]
    blocks = {
        k: np.empty(
            (
                bounds[k + 1] - bounds[k],
                layout.basis.n_orb(species[k // n_sp]),
                layout.basis.n_orb(species[k % n_sp]),
            ),
            np.float32,
        )
        for k in range(n_sp * n_sp)
        if bounds[k + 1] > bounds[k]
    }
    # each canonical row is decoded once: B into its group, Bᵀ into its partner's
    by_kind = np.argsort(kind[:n_canon], kind="stable")
    kind_bounds = np.searchsorted(kind[:n_canon][by_kind], np.arange(n_sp * n_sp + 1))
    for k in range(n_sp * n_sp):
        rows = by_kind[kind_bounds[k] : kind_bounds[k + 1]]
        a, b = species[k // n_sp], species[k % n_sp]
        partner = (k % n_sp) * n_sp + k // n_sp
        for r in range(0, rows.shape[0], _DECODE_ROWS):
            c = rows[r : r + _DECODE_ROWS]
            blk = layout.decode_hopping(a, b, hopping, canon[c])
            blocks[k][place[c]] = blk
            blocks[partner][place[c + n_canon]] = np.swapaxes(blk, 1, 2)
    groups = []
    for k, group_blocks in blocks.items():
        sel = order[bounds[k] : bounds[k + 1]]
        groups.append(
            HoppingGroup(
                z_i=species[k // n_sp],
                z_j=species[k % n_sp],
                i=i[sel],
                j=j[sel],
                shift=sh[sel],
                blocks=group_blocks,
            )
        )
    return BlockMatrix(onsite=tuple(onsite_groups), hopping=tuple(groups))
