"""Static-shape batches: a geometric ladder of padding buckets and the padded `GraphBatch`.

Padding conventions (every consumer relies on them):

* **Dummy node.** The last node ``n_nodes − 1`` of every bucket is always a padding node (the
  ladder reserves it), so real nodes occupy ``[0, n_real)`` and padding nodes
  ``[n_real, n_nodes)``. Padding nodes have ``numbers == 0`` and ``node_mask == False``.
* **Padded edges and pairs** point from the dummy node to the dummy node
  (``edge_i == edge_j == n_nodes − 1``, same for pairs) with the finite, non-zero vector
  ``(0, 0, PAD_VECTOR_LENGTH)``, so norms and their gradients stay finite. Indices are never
  out of range. Their contributions must still be removed with ``edge_mask`` / ``pair_mask``.
  A padded pair is its own partner in ``pair_partner``.
* **Dummy graph.** The last graph ``n_graphs − 1`` of every bucket is always a padding graph
  (the ladder reserves it): all padding nodes belong to it (``node_graph == n_graphs − 1``),
  so ``segment_sum(..., node_graph, num_segments=n_graphs)`` needs no special case and
  per-graph arrays have shape ``[n_graphs]``, with ``graph_mask`` False on padding graphs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import jax
import numpy as np
from flax import struct

from gears_h_core.graph.neighbors import pair_partner_index
from gears_h_core.types import NeighborGraph

ArrayLike = np.ndarray | jax.Array  # host (numpy) before device_put, jax after

PAD_VECTOR_LENGTH = 1.0  # Å, length of the vector of every padded edge and pair
_ALIGN = 8  # node, edge and pair budgets are multiples of this


class BucketOverflowError(ValueError):
    """A batch does not fit into any bucket of the ladder (or into the bucket given)."""


def _round_up(value: int, multiple: int = _ALIGN) -> int:
    return max(multiple, -(-int(value) // multiple) * multiple)


@dataclass(frozen=True)
class Bucket:
    """Static array sizes of one padded batch (padding slots included).

    Attributes:
        n_nodes: node slots; the last one is the dummy node, so at most ``n_nodes − 1`` real
            atoms fit.
        n_edges: interaction-edge slots.
        n_pairs: hopping-pair slots.
        n_graphs: graph slots; the last one is the dummy graph, so at most ``n_graphs − 1``
            real graphs fit.
    """

    n_nodes: int
    n_edges: int
    n_pairs: int
    n_graphs: int

    def fits(self, n_atoms: int, n_edges: int, n_pairs: int, n_graphs: int = 1) -> bool:
        """Whether real counts fit, leaving room for the dummy node and the dummy graph."""
        return (
            n_atoms + 1 <= self.n_nodes
            and n_edges <= self.n_edges
            and n_pairs <= self.n_pairs
            and n_graphs + 1 <= self.n_graphs
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "n_nodes": self.n_nodes,
            "n_edges": self.n_edges,
            "n_pairs": self.n_pairs,
            "n_graphs": self.n_graphs,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bucket:
        return cls(
            n_nodes=int(data["n_nodes"]),
            n_edges=int(data["n_edges"]),
            n_pairs=int(data["n_pairs"]),
            n_graphs=int(data["n_graphs"]),
        )


def _describe(n_atoms: int, n_edges: int, n_pairs: int, n_graphs: int) -> str:
    return f"{n_atoms} atoms, {n_edges} edges, {n_pairs} pairs, {n_graphs} graph(s)"


@dataclass(frozen=True)
class BucketLadder:
    """A geometric ladder of padding buckets, in one or more density tiers.

    Level ``k`` holds ``a_k = ceil(min_atoms · ratio^k)`` real atoms (the last level exactly
    ``max_atoms``); its bucket has ``n_nodes = round8(a_k + 1)`` (one dummy node),
    ``n_edges = round8(ceil(c · edges_per_atom))`` and ``n_pairs = round8(ceil(c ·
    pairs_per_atom))`` with ``c = n_nodes − 1`` the real-atom capacity, and
    ``n_graphs = max_graphs + 1`` (one dummy graph). ``round8`` rounds up to a positive
    multiple of 8. Levels with identical sizes are merged, so within a tier every dimension
    is non-decreasing and ``n_nodes`` strictly increasing.

    ``sparse_tiers`` adds, for every level, a bucket per sparser (edges, pairs per atom)
    density: molecules have ~14 pairs per atom where a crystal of the same model has ~80, and
    padding them to the dense tier costs ~4x the work (measured on butanol, bench notes in
    `bench/RESULTS.md`). ``buckets`` lists the dense tier first (its last bucket is
    `largest`), then each sparse tier; `select` picks the cheapest bucket that fits.

    Attributes:
        min_atoms, max_atoms: real atoms (of a whole batch) covered by the first / last level.
        ratio: growth factor between levels (> 1).
        edges_per_atom, pairs_per_atom: edge / pair budget per real-atom slot (dense tier).
        max_graphs: real graphs per batch.
        sparse_tiers: ``(edges_per_atom, pairs_per_atom)`` of sparser tiers, each below the
            dense tier in both.
        buckets: the buckets, smallest first within each tier (derived).
    """

    min_atoms: int
    max_atoms: int
    ratio: float = 1.5
    _: KW_ONLY
    edges_per_atom: float
    pairs_per_atom: float
    max_graphs: int = 1
    sparse_tiers: tuple[tuple[float, float], ...] = ()
    buckets: tuple[Bucket, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if int(self.min_atoms) != self.min_atoms or self.min_atoms < 1:
            raise ValueError(f"min_atoms: must be a positive integer, got {self.min_atoms!r}")
        if int(self.max_atoms) != self.max_atoms or self.max_atoms < self.min_atoms:
            raise ValueError(
                f"max_atoms: must be an integer >= min_atoms ({self.min_atoms}), "
                f"got {self.max_atoms!r}"
            )
        if not (math.isfinite(self.ratio) and self.ratio > 1.0):
            raise ValueError(f"ratio: must be > 1, got {self.ratio!r}")
        for name in ("edges_per_atom", "pairs_per_atom"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if int(self.max_graphs) != self.max_graphs or self.max_graphs < 1:
            raise ValueError(f"max_graphs: must be a positive integer, got {self.max_graphs!r}")
        tiers = tuple((float(e), float(p)) for e, p in self.sparse_tiers)
        for e, p in tiers:
            if not (0.0 <= e <= self.edges_per_atom and 0.0 <= p <= self.pairs_per_atom):
                raise ValueError(
                    f"sparse_tiers: ({e}, {p}) edges/pairs per atom must lie between 0 and "
                    f"the dense tier ({self.edges_per_atom}, {self.pairs_per_atom})"
                )
        object.__setattr__(self, "sparse_tiers", tiers)
        buckets = self._tier(self.edges_per_atom, self.pairs_per_atom)
        for e, p in tiers:
            buckets += tuple(b for b in self._tier(e, p) if b not in buckets)
        object.__setattr__(self, "buckets", buckets)

    def _levels(self) -> list[int]:
        atoms: list[int] = []
        k = 0
        while True:
            # tolerance: 4 · 1.5² must give 9, not 10 after rounding noise
            a_k = math.ceil(self.min_atoms * self.ratio**k - 1e-9)
            if a_k >= self.max_atoms:
                atoms.append(int(self.max_atoms))
                break
            atoms.append(a_k)
            k += 1
        return atoms

    def _tier(self, edges_per_atom: float, pairs_per_atom: float) -> tuple[Bucket, ...]:
        buckets: list[Bucket] = []
        for a_k in self._levels():
            n_nodes = _round_up(a_k + 1)
            capacity = n_nodes - 1
            bucket = Bucket(
                n_nodes=n_nodes,
                n_edges=_round_up(math.ceil(capacity * edges_per_atom - 1e-9)),
                n_pairs=_round_up(math.ceil(capacity * pairs_per_atom - 1e-9)),
                n_graphs=int(self.max_graphs) + 1,
            )
            if not buckets or bucket.n_nodes > buckets[-1].n_nodes:
                buckets.append(bucket)
        return tuple(buckets)

    @property
    def largest(self) -> Bucket:
        """The last bucket of the dense tier: it fits everything any bucket fits."""
        return max(self.buckets, key=lambda b: (b.n_nodes, b.n_edges, b.n_pairs))

    def select(self, n_atoms: int, n_edges: int, n_pairs: int, n_graphs: int = 1) -> Bucket:
        """The cheapest bucket holding the real counts (plus the dummy node and graph):
        fewest edge and pair slots (the work per edge and per pair dominates), then fewest
        nodes. With one tier this is the first fitting bucket.

        Raises:
            BucketOverflowError: no bucket fits; the message names the largest bucket.
        """
        fitting = [b for b in self.buckets if b.fits(n_atoms, n_edges, n_pairs, n_graphs)]
        if fitting:
            return min(fitting, key=lambda b: (b.n_edges + b.n_pairs, b.n_nodes))
        largest = self.largest
        raise BucketOverflowError(
            f"batch of {_describe(n_atoms, n_edges, n_pairs, n_graphs)} does not fit the "
            f"largest bucket (n_nodes={largest.n_nodes} incl. 1 dummy node, "
            f"n_edges={largest.n_edges}, n_pairs={largest.n_pairs}, "
            f"n_graphs={largest.n_graphs} incl. 1 dummy graph); raise max_atoms, "
            f"edges_per_atom, pairs_per_atom or max_graphs of the ladder"
        )

    def select_for(self, graphs: Sequence[NeighborGraph]) -> Bucket:
        """`select` for the disjoint union of ``graphs``."""
        return self.select(
            sum(g.n_atoms for g in graphs),
            sum(g.n_edges for g in graphs),
            sum(g.n_pairs for g in graphs),
            len(graphs),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (ladder parameters plus the derived buckets, for checking)."""
        return {
            "min_atoms": int(self.min_atoms),
            "max_atoms": int(self.max_atoms),
            "ratio": float(self.ratio),
            "edges_per_atom": float(self.edges_per_atom),
            "pairs_per_atom": float(self.pairs_per_atom),
            "max_graphs": int(self.max_graphs),
            # written only when there are any, so a one-tier ladder keeps its earlier form
            **({"sparse_tiers": [list(t) for t in self.sparse_tiers]} if self.sparse_tiers else {}),
            "buckets": [b.to_dict() for b in self.buckets],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BucketLadder:
        """Inverse of `to_dict`; if ``buckets`` is present it must match the derived ones."""
        known = {
            "min_atoms",
            "max_atoms",
            "ratio",
            "edges_per_atom",
            "pairs_per_atom",
            "max_graphs",
            "sparse_tiers",
            "buckets",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"bucket ladder: unknown keys {unknown}")
        ladder = cls(
            int(data["min_atoms"]),
            int(data["max_atoms"]),
            float(data.get("ratio", 1.5)),
            edges_per_atom=float(data["edges_per_atom"]),
            pairs_per_atom=float(data["pairs_per_atom"]),
            max_graphs=int(data.get("max_graphs", 1)),
            sparse_tiers=tuple((float(e), float(p)) for e, p in data.get("sparse_tiers", ())),
        )
        if "buckets" in data:
            stored = tuple(Bucket.from_dict(b) for b in data["buckets"])
            if stored != ladder.buckets:
                raise ValueError(
                    "bucket ladder: stored buckets differ from the ones derived from its "
                    f"parameters ({[b.to_dict() for b in stored]} vs "
                    f"{[b.to_dict() for b in ladder.buckets]})"
                )
        return ladder


@struct.dataclass
class GraphBatch:
    """Padded disjoint union of graphs with static shapes (a jax pytree; all fields arrays).

    Shapes are those of the `Bucket`; see the module docstring for the padding conventions
    (dummy node ``n_nodes − 1``, dummy graph ``n_graphs − 1``).

    Attributes:
        numbers: int32 ``[n_nodes]`` atomic numbers, 0 on padding nodes.
        node_mask: bool ``[n_nodes]``, True on real atoms.
        node_graph: int32 ``[n_nodes]`` graph index of every node; ``n_graphs − 1`` on
            padding nodes.
        edge_i: int32 ``[n_edges]`` receiving node (home cell) of every interaction edge.
        edge_j: int32 ``[n_edges]`` sending node (translated by the edge's lattice shift).
        edge_vec: float32 ``[n_edges, 3]`` D = r_j + T − r_i in Å.
        edge_mask: bool ``[n_edges]``, True on real edges.
        pair_i, pair_j: int32 ``[n_pairs]`` atoms of every hopping pair.
        pair_vec: float32 ``[n_pairs, 3]`` D = r_j + T − r_i in Å.
        pair_mask: bool ``[n_pairs]``, True on real pairs.
        pair_partner: int32 ``[n_pairs]`` row of the partner pair ``(j, i, −n)`` of every
            pair (for ``H_ji(−T) = H_ij(T)ᵀ``); a padded pair is its own partner.
        graph_mask: bool ``[n_graphs]``, True on real graphs.
    """

    numbers: ArrayLike
    node_mask: ArrayLike
    node_graph: ArrayLike
    edge_i: ArrayLike
    edge_j: ArrayLike
    edge_vec: ArrayLike
    edge_mask: ArrayLike
    pair_i: ArrayLike
    pair_j: ArrayLike
    pair_vec: ArrayLike
    pair_mask: ArrayLike
    pair_partner: ArrayLike
    graph_mask: ArrayLike

    @property
    def n_nodes(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_i.shape[0])

    @property
    def n_pairs(self) -> int:
        return int(self.pair_i.shape[0])

    @property
    def n_graphs(self) -> int:
        return int(self.graph_mask.shape[0])


@dataclass(frozen=True, eq=False)
class BatchLayout:
    """Host-side map from a `GraphBatch` back to its graphs (real entries only).

    Graph ``g`` owns nodes ``node_offset[g] : node_offset[g] + n_atoms[g]``, edges
    ``edge_offset[g] : edge_offset[g] + n_edges[g]`` and pairs ``pair_offset[g] :
    pair_offset[g] + n_pairs[g]`` of the batch, in the order of its `NeighborGraph`.

    Attributes:
        bucket: the bucket the batch was padded to.
        node_offset, edge_offset, pair_offset: int64 ``[n_graphs_real]``.
        n_atoms, n_edges, n_pairs: int64 ``[n_graphs_real]``.
    """

    bucket: Bucket
    node_offset: np.ndarray
    edge_offset: np.ndarray
    pair_offset: np.ndarray
    n_atoms: np.ndarray
    n_edges: np.ndarray
    n_pairs: np.ndarray

    @property
    def n_graphs(self) -> int:
        """Number of real graphs."""
        return int(self.n_atoms.shape[0])

    def node_slice(self, g: int) -> slice:
        return slice(int(self.node_offset[g]), int(self.node_offset[g] + self.n_atoms[g]))

    def edge_slice(self, g: int) -> slice:
        return slice(int(self.edge_offset[g]), int(self.edge_offset[g] + self.n_edges[g]))

    def pair_slice(self, g: int) -> slice:
        return slice(int(self.pair_offset[g]), int(self.pair_offset[g] + self.n_pairs[g]))


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def padded_index(real: np.ndarray, size: int, fill: int) -> np.ndarray:
    out = np.full(size, fill, dtype=np.int32)
    out[: real.shape[0]] = real
    return out


def padded_vectors(real: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, 3), dtype=np.float32)
    out[:, 2] = PAD_VECTOR_LENGTH
    out[: real.shape[0]] = real.astype(np.float32)
    return out


def padded_mask(n_real: int, size: int) -> np.ndarray:
    return np.arange(size) < n_real


def pad_graphs(graphs: Sequence[NeighborGraph], bucket: Bucket) -> tuple[GraphBatch, BatchLayout]:
    """Disjoint union of ``graphs`` padded to ``bucket`` (numpy arrays on the host).

    Node indices of graph ``g`` are offset by the atoms of the graphs before it; edge and
    pair vectors are converted to float32 here (computed in float64 before).

    Raises:
        ValueError: ``graphs`` is empty, or a hopping pair has no partner ``(j, i, −n)``.
        BucketOverflowError: the graphs do not fit ``bucket``.
    """
    if len(graphs) == 0:
        raise ValueError("pad_graphs: no graphs given")
    n_atoms = np.array([g.n_atoms for g in graphs], dtype=np.int64)  # [n_graphs_real]
    n_edges = np.array([g.n_edges for g in graphs], dtype=np.int64)
    n_pairs = np.array([g.n_pairs for g in graphs], dtype=np.int64)
    totals = (int(n_atoms.sum()), int(n_edges.sum()), int(n_pairs.sum()), len(graphs))
    if not bucket.fits(*totals):
        raise BucketOverflowError(
            f"batch of {_describe(*totals)} does not fit bucket {bucket.to_dict()} "
            "(which reserves 1 dummy node and 1 dummy graph)"
        )
    n_real_atoms, n_real_edges, n_real_pairs, n_real_graphs = totals
    node_offset = _offsets(n_atoms)
    edge_offset = _offsets(n_edges)
    pair_offset = _offsets(n_pairs)
    dummy_node = bucket.n_nodes - 1
    dummy_graph = bucket.n_graphs - 1

    numbers = np.concatenate([g.structure.numbers for g in graphs]).astype(np.int32)
    node_graph = np.repeat(np.arange(n_real_graphs, dtype=np.int32), n_atoms)
    edge_base = np.repeat(node_offset, n_edges)  # [n_real_edges]
    pair_base = np.repeat(node_offset, n_pairs)  # [n_real_pairs]
    edge_i = np.concatenate([g.edge_i for g in graphs]).astype(np.int64) + edge_base
    edge_j = np.concatenate([g.edge_j for g in graphs]).astype(np.int64) + edge_base
    pair_i = np.concatenate([g.pair_i for g in graphs]).astype(np.int64) + pair_base
    pair_j = np.concatenate([g.pair_j for g in graphs]).astype(np.int64) + pair_base
    pair_partner = np.concatenate(
        [
            pair_partner_index(g.pair_i, g.pair_j, g.pair_shift) + off
            for g, off in zip(graphs, pair_offset, strict=True)
        ]
    )  # [n_real_pairs]
    edge_vec = np.concatenate([np.reshape(g.edge_vec, (-1, 3)) for g in graphs])
    pair_vec = np.concatenate([np.reshape(g.pair_vec, (-1, 3)) for g in graphs])

    batch = GraphBatch(
        numbers=padded_index(numbers, bucket.n_nodes, 0),
        node_mask=padded_mask(n_real_atoms, bucket.n_nodes),
        node_graph=padded_index(node_graph, bucket.n_nodes, dummy_graph),
        edge_i=padded_index(edge_i, bucket.n_edges, dummy_node),
        edge_j=padded_index(edge_j, bucket.n_edges, dummy_node),
        edge_vec=padded_vectors(edge_vec, bucket.n_edges),
        edge_mask=padded_mask(n_real_edges, bucket.n_edges),
        pair_i=padded_index(pair_i, bucket.n_pairs, dummy_node),
        pair_j=padded_index(pair_j, bucket.n_pairs, dummy_node),
        pair_vec=padded_vectors(pair_vec, bucket.n_pairs),
        pair_mask=padded_mask(n_real_pairs, bucket.n_pairs),
        pair_partner=np.concatenate([pair_partner, np.arange(n_real_pairs, bucket.n_pairs)]).astype(
            np.int32
        ),
        graph_mask=padded_mask(n_real_graphs, bucket.n_graphs),
    )
    layout = BatchLayout(
        bucket=bucket,
        node_offset=node_offset,
        edge_offset=edge_offset,
        pair_offset=pair_offset,
        n_atoms=n_atoms,
        n_edges=n_edges,
        n_pairs=n_pairs,
    )
    return batch, layout
