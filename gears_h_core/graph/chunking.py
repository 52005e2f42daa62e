"""Split the graph of one large structure into chunks that fit a padding bucket.

A large structure is predicted in two passes (`gears_h_core.predict`), each over chunks whose
*core* atoms partition the structure:

* **node chunks** give the node features (every layer) and on-site outputs of their core
  atoms. The features after ``T = n_interactions`` message-passing layers depend on the nodes
  up to ``T`` edge hops away, so a node chunk holds a **halo**: nodes are collected level by
  level (level ``d`` = ``d`` hops from the core, ``d ≤ T``) and the chunk keeps every
  interaction edge whose *receiver* is on a level ``d < T``. A node on level ``d`` then has
  exact features up to layer ``T − d`` (by induction: its incoming edges are all present and
  its neighbours lie on levels ``≤ d + 1``), so the core (``d = 0``) is exact in every layer.
  Nodes on level ``T`` only send their embedding. A node chunk has no pairs.
* **pair chunks** hold every hopping pair ``(i, j, n)`` with ``i`` in the core and, as nodes,
  the core and those pairs' ``j`` (their features come from the node pass): no halo and no
  edges, and every directed pair is in exactly one pair chunk. Partner symmetrisation
  (``H_ji(−T) = H_ij(T)ᵀ``) happens when the outputs are assembled.

Pair readouts cost most of the network, and without a halo each pair is evaluated once.

Chunks are sub-graphs of the full graph: node identity is the atom index modulo the lattice,
so periodic images need no special care, and edge/pair vectors are taken from the full graph
(no neighbour search per chunk). Only the summation order of messages can differ from the
unsplit prediction (float32 round-off).

Core sets are chosen by recursive coordinate bisection (longest axis first), which keeps them
compact and their halos small; the core size adapts until every chunk fits the bucket.
Everything is vectorised per chunk (no Python loop over atoms, edges or pairs).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from gears_h_core.graph.padding import (
    Bucket,
    BucketOverflowError,
    GraphBatch,
    padded_index,
    padded_mask,
    padded_vectors,
)
from gears_h_core.structure import Structure
from gears_h_core.types import NeighborGraph

Part = Literal["nodes", "pairs"]


@dataclass(frozen=True, eq=False)
class Chunk:
    """One sub-problem of a large structure (indices into the full graph are int64).

    Attributes:
        graph: the chunk as a `NeighborGraph` with chunk-local node indices; its
            ``structure`` holds the chunk's atoms (numbers, positions; the full cell and pbc).
            A node chunk has no pairs, a pair chunk no edges.
        atoms: ``[n_chunk_atoms]`` full-structure index of every chunk node (sorted).
        pairs: ``[n_chunk_pairs]`` full-graph row of every chunk pair (sorted); all of them
            have a core atom as ``i``.
        core: ``[n_core]`` chunk-local indices of the core atoms (sorted).
    """

    graph: NeighborGraph
    atoms: np.ndarray
    pairs: np.ndarray
    core: np.ndarray

    @property
    def n_core(self) -> int:
        return int(self.core.shape[0])

    def counts(self) -> tuple[int, int, int]:
        """Real ``(n_atoms, n_edges, n_pairs)`` of the chunk."""
        g = self.graph
        return g.n_atoms, g.n_edges, g.n_pairs


def _csr(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by ``keys`` (values ``0..n-1``): ``(order, indptr)`` with the rows of key
    ``k`` at ``order[indptr[k]:indptr[k + 1]]``, in increasing row order."""
    order = np.argsort(keys, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=n), out=indptr[1:])
    return order, indptr


def _gather(order: np.ndarray, indptr: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Rows of all ``nodes`` in a CSR from `_csr` (concatenated, int64)."""
    start = indptr[nodes]
    count = indptr[nodes + 1] - start
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # position k of the output reads order[start[g] + (k - first[g])] for its group g
    first = np.cumsum(count) - count
    pos = np.repeat(start - first, count) + np.arange(total, dtype=np.int64)
    return order[pos].astype(np.int64, copy=False)


class GraphChunker:
    """Node and pair chunks of one `NeighborGraph` for a network with ``n_interactions``
    layers.

    Holds CSR indices of the edges (by receiver) and pairs (by ``i``), built once; `chunk`
    and `split` then work per chunk. Not thread-safe (scratch arrays).
    """

    def __init__(self, graph: NeighborGraph, n_interactions: int) -> None:
        if n_interactions < 0:
            raise ValueError(f"n_interactions: must be >= 0, got {n_interactions}")
        self.graph = graph
        self.n_interactions = int(n_interactions)
        n = graph.n_atoms
        self._edge_i = np.asarray(graph.edge_i, dtype=np.int64)
        self._edge_j = np.asarray(graph.edge_j, dtype=np.int64)
        self._pair_i = np.asarray(graph.pair_i, dtype=np.int64)
        self._pair_j = np.asarray(graph.pair_j, dtype=np.int64)
        self._edges_by_i = _csr(self._edge_i, n)
        self._pairs_by_i = _csr(self._pair_i, n)
        # scratch, always reset to -1 after use
        self._local = np.full(n, -1, dtype=np.int64)

    # -- one chunk ------------------------------------------------------------------------
    def chunk(self, core: np.ndarray, part: Part) -> Chunk:
        """The node or pair chunk whose core atoms are ``core`` (full-structure indices, any
        order)."""
        g = self.graph
        n = g.n_atoms
        core = np.asarray(core, dtype=np.int64)
        seen = np.zeros(n, dtype=bool)
        seen[core] = True
        no_rows = np.zeros(0, dtype=np.int64)
        if part == "pairs":
            pairs = np.sort(_gather(*self._pairs_by_i, core))  # every pair with i in core
            seen[self._pair_j[pairs]] = True
            edges = no_rows
        elif part == "nodes":
            pairs = no_rows
            # level 0: the core; level d: d edge hops from it
            level = np.flatnonzero(seen)
            edge_parts = [no_rows]
            for _ in range(self.n_interactions):
                rows = _gather(*self._edges_by_i, level)  # every edge received by this level
                edge_parts.append(rows)
                fresh = np.zeros(n, dtype=bool)
                fresh[self._edge_j[rows]] = True
                fresh &= ~seen
                seen |= fresh
                level = np.flatnonzero(fresh)
            edges = np.sort(np.concatenate(edge_parts))
        else:
            raise ValueError(f"part: 'nodes' or 'pairs', got {part!r}")
        atoms = np.flatnonzero(seen)  # [n_chunk_atoms], sorted

        local = self._local
        local[atoms] = np.arange(atoms.shape[0], dtype=np.int64)
        try:
            edge_i, edge_j = local[self._edge_i[edges]], local[self._edge_j[edges]]
            pair_i, pair_j = local[self._pair_i[pairs]], local[self._pair_j[pairs]]
            core_local = local[core]
        finally:
            local[atoms] = -1

        st = g.structure
        structure = Structure(
            numbers=st.numbers[atoms], positions=st.positions[atoms], cell=st.cell, pbc=st.pbc
        )
        sub = NeighborGraph(
            structure=structure,
            edge_i=edge_i.astype(np.int32),
            edge_j=edge_j.astype(np.int32),
            edge_shift=g.edge_shift[edges],
            edge_vec=g.edge_vec[edges],
            pair_i=pair_i.astype(np.int32),
            pair_j=pair_j.astype(np.int32),
            pair_shift=g.pair_shift[pairs],
            pair_vec=g.pair_vec[pairs],
        )
        return Chunk(graph=sub, atoms=atoms, pairs=pairs, core=np.sort(core_local))

    # -- a partition into chunks that fit ----------------------------------------------------
    def split(self, budget: Bucket, part: Part) -> Iterator[Chunk]:
        """Node or pair chunks whose cores partition the atoms and whose real counts each fit
        ``budget`` (as one graph: `Bucket.fits`).

        Cores come from recursive bisection of the atom positions along the longest extent,
        into ``ceil(n / m)`` balanced leaves for a core size ``m``. ``m`` starts at an upper
        estimate (the budget's edges, or pairs, over the structure's per atom) and shrinks
        whenever a leaf's chunk does not fit, to ``0.95 / fill`` of that leaf (``fill``: its
        largest ratio of real count to budget). Until the first chunk fits, the bisection
        starts over with the new size, so the chunks come out balanced and close to full.

        Raises:
            BucketOverflowError: the chunk of a single core atom does not fit ``budget``.
        """
        g = self.graph
        n = g.n_atoms
        cap = (budget.n_nodes - 1, budget.n_edges, budget.n_pairs)
        rows, room = (g.n_pairs, cap[2]) if part == "pairs" else (g.n_edges, cap[1])
        m = max(1, math.floor(min(cap[0], room * n / max(rows, 1))))
        positions = np.asarray(g.structure.positions, dtype=np.float64)
        everything = np.arange(n, dtype=np.int64)
        stack = [everything]
        emitted = 0
        while stack:
            idx = stack.pop()
            k = math.ceil(idx.shape[0] / m)
            if k > 1:
                low, high = _bisect(idx, positions, (k // 2) / k)
                stack.append(high)
                stack.append(low)
                continue
            chunk = self.chunk(idx, part)
            counts = chunk.counts()
            if budget.fits(*counts, 1):
                emitted += 1
                yield chunk
                continue
            if idx.shape[0] == 1:
                a, e, p = counts
                raise BucketOverflowError(
                    f"atom {int(idx[0])}: its {part[:-1]} chunk alone ({a} atoms, {e} edges, "
                    f"{p} pairs within {self.n_interactions} interaction hops) does not fit "
                    f"{budget.to_dict()}; raise max_atoms, edges_per_atom or pairs_per_atom "
                    "of the ladder"
                )
            fill = max(c / max(b, 1) for c, b in zip(counts, cap, strict=True))
            m = max(1, min(idx.shape[0] - 1, math.floor(idx.shape[0] * 0.95 / fill)))
            # before the first chunk is out, start over so that all leaves share the new size
            stack = [everything] if emitted == 0 else [*stack, idx]


def fitted_bucket(chunks: Sequence[Chunk], budget: Bucket) -> Bucket:
    """The bucket every chunk is padded to: the largest real counts of ``chunks`` rounded up
    on a geometric grid (steps of 2^(1/4) down from the budget's edges and pairs, up from its
    nodes), so that similar structures share one compiled bucket and padding stays below
    19 %. Never larger than ``budget`` in edges and pairs."""
    atoms = max(c.counts()[0] for c in chunks)
    edges = max(c.counts()[1] for c in chunks)
    pairs = max(c.counts()[2] for c in chunks)
    return Bucket(
        n_nodes=_grid_ceil(atoms + 1, budget.n_nodes),
        n_edges=_grid_ceil(edges, budget.n_edges),
        n_pairs=_grid_ceil(pairs, budget.n_pairs),
        n_graphs=2,
    )


def _grid_ceil(value: int, anchor: int) -> int:
    """Smallest ``round8(anchor · 2^(k/4))`` (integer k) that is ``>= value``; ``anchor``
    itself when ``value <= anchor`` is within one step of it."""
    value, anchor = max(int(value), 1), max(int(anchor), 1)
    k = math.ceil(4 * math.log2(value / anchor) - 1e-9)
    while True:
        size = _round8(anchor * 2.0 ** (k / 4))
        if size >= value:
            return size if k > 0 else min(size, _round8(anchor))
        k += 1


def _round8(value: float) -> int:
    return max(8, 8 * math.ceil(value / 8 - 1e-9))


def pad_chunk(chunk: Chunk, bucket: Bucket) -> GraphBatch:
    """`pad_graphs` of the chunk's graph alone (same arrays, same conventions: dummy node and
    dummy graph last, padded edges and pairs between dummy nodes with a finite vector),
    except ``pair_partner``: every pair is its own partner, since the stages that read chunk
    batches do not symmetrise (partners meet when the outputs are assembled).

    Raises:
        BucketOverflowError: the chunk does not fit ``bucket``.
    """
    g = chunk.graph
    if not bucket.fits(*chunk.counts(), 1):
        raise BucketOverflowError(
            f"chunk of {g.n_atoms} atoms, {g.n_edges} edges, {g.n_pairs} pairs does not fit "
            f"bucket {bucket.to_dict()} (which reserves 1 dummy node and 1 dummy graph)"
        )
    dummy_node, dummy_graph = bucket.n_nodes - 1, bucket.n_graphs - 1
    return GraphBatch(
        numbers=padded_index(g.structure.numbers, bucket.n_nodes, 0),
        node_mask=padded_mask(g.n_atoms, bucket.n_nodes),
        node_graph=padded_index(np.zeros(g.n_atoms, np.int32), bucket.n_nodes, dummy_graph),
        edge_i=padded_index(g.edge_i, bucket.n_edges, dummy_node),
        edge_j=padded_index(g.edge_j, bucket.n_edges, dummy_node),
        edge_vec=padded_vectors(g.edge_vec, bucket.n_edges),
        edge_mask=padded_mask(g.n_edges, bucket.n_edges),
        pair_i=padded_index(g.pair_i, bucket.n_pairs, dummy_node),
        pair_j=padded_index(g.pair_j, bucket.n_pairs, dummy_node),
        pair_vec=padded_vectors(g.pair_vec, bucket.n_pairs),
        pair_mask=padded_mask(g.n_pairs, bucket.n_pairs),
        pair_partner=np.arange(bucket.n_pairs, dtype=np.int32),
        graph_mask=padded_mask(1, bucket.n_graphs),
    )


def _bisect(
    idx: np.ndarray, positions: np.ndarray, fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Split atoms ``idx`` at ``fraction`` of them along the axis of their largest extent."""
    x = positions[idx]  # [n, 3]
    axis = int(np.argmax(np.ptp(x, axis=0)))
    kth = min(max(1, round(idx.shape[0] * fraction)), idx.shape[0] - 1)
    part = np.argpartition(x[:, axis], kth)
    return idx[part[:kth]], idx[part[kth:]]
