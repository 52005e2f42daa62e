"""Padded training batches: `GraphBatch` plus targets and channel masks in the same shapes."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import struct

from gears_h_core.graph.padding import Bucket, BucketLadder, GraphBatch, pad_graphs
from gears_h_core.model.layout import OutputLayout
from training.data.targets import TrainingExample


@struct.dataclass
class TargetBatch:
    """Targets in the universal layouts, padded like the `GraphBatch` they belong to.

    Attributes:
        onsite_h, onsite_s: float32 ``[n_nodes, onsite_dim]``.
        hopping_h, hopping_s: float32 ``[n_pairs, hopping_dim]``.
        onsite_weight: float32 ``[n_nodes, onsite_dim]``: 1 on used channels of real atoms.
        hopping_weight: float32 ``[n_pairs, hopping_dim]``: 1 on used channels of real pairs.
        has_s: float32 ``[n_nodes]`` / ``[n_pairs]`` masks of structures that carry S.
        eig_vectors: float32 ``[n_graphs, N, N]`` reference eigenvectors at Γ of every graph
            (zero-padded; zero for graphs without), ``N`` = ``eigen_size`` (0: no eigenbasis
            loss; `training.eigen_basis`).
        orbital_offset: int32 ``[n_nodes]`` first row of every atom in its structure's matrix.
        eig_count: float32 ``[n_graphs]`` entries of E per graph (N_g², 0 without vectors).
    """

    onsite_h: Any
    hopping_h: Any
    onsite_s: Any
    hopping_s: Any
    onsite_weight: Any
    hopping_weight: Any
    node_has_s: Any
    pair_has_s: Any
    # None in batches made by hand (tests) that have no eigenbasis term
    eig_vectors: Any = None
    orbital_offset: Any = None
    eig_count: Any = None


def _stack(parts: list[np.ndarray], size: int, dim: int) -> np.ndarray:
    out = np.zeros((size, dim), np.float32)
    if parts:
        real = np.concatenate(parts)
        out[: real.shape[0]] = real
    return out


def make_batch(
    examples: Sequence[TrainingExample],
    bucket: Bucket,
    layout: OutputLayout,
    eigen_size: int = 0,
) -> tuple[GraphBatch, TargetBatch]:
    """Pad ``examples`` into one batch (host numpy arrays); with ``eigen_size`` > 0 their
    eigenvectors zero-padded to that size."""
    graphs = [e.graph for e in examples]
    batch, _ = pad_graphs(graphs, bucket)
    d_on, d_hop = layout.onsite_irreps.dim, layout.hopping_irreps.dim
    n_nodes, n_pairs = bucket.n_nodes, bucket.n_pairs

    def zeros_like_h(e: TrainingExample, which: str) -> np.ndarray:
        value = getattr(e, which)
        return value if value is not None else np.zeros_like(getattr(e, which[:-1] + "h"))

    species = layout.species_table[np.asarray(batch.numbers)]
    kind = layout.pair_kinds(batch.numbers, batch.pair_i, batch.pair_j)
    onsite_weight = layout.onsite_mask[species] & np.asarray(batch.node_mask)[:, None]
    hopping_weight = layout.hopping_mask[kind] & np.asarray(batch.pair_mask)[:, None]
    node_has_s = np.zeros(n_nodes, np.float32)
    pair_has_s = np.zeros(n_pairs, np.float32)
    eig_vectors = np.zeros((bucket.n_graphs, eigen_size, eigen_size), np.float32)
    eig_count = np.zeros(bucket.n_graphs, np.float32)
    orbital_offset = np.zeros(n_nodes, np.int32)
    node_off = pair_off = 0
    for g, e in enumerate(examples):
        if eigen_size:
            # the atom order of `gamma_fold`, which the reference eigenvectors were made in
            orbital_offset[node_off : node_off + e.graph.n_atoms] = layout.basis.orbital_offsets(
                e.graph.structure.numbers
            )[:-1]
            if e.eigvecs is not None:
                size = e.eigvecs.shape[0]
                if size > eigen_size:
                    raise ValueError(f"{e.name}: {size} orbitals, more than {eigen_size}")
                eig_vectors[g, :size, :size] = e.eigvecs
                eig_count[g] = size * size
        if e.onsite_s is not None:
            node_has_s[node_off : node_off + e.graph.n_atoms] = 1.0
            pair_has_s[pair_off : pair_off + e.graph.n_pairs] = 1.0
        node_off += e.graph.n_atoms
        pair_off += e.graph.n_pairs
    targets = TargetBatch(
        onsite_h=_stack([e.onsite_h for e in examples], n_nodes, d_on),
        hopping_h=_stack([e.hopping_h for e in examples], n_pairs, d_hop),
        onsite_s=_stack([zeros_like_h(e, "onsite_s") for e in examples], n_nodes, d_on),
        hopping_s=_stack([zeros_like_h(e, "hopping_s") for e in examples], n_pairs, d_hop),
        onsite_weight=onsite_weight.astype(np.float32),
        hopping_weight=hopping_weight.astype(np.float32),
        node_has_s=node_has_s,
        pair_has_s=pair_has_s,
        eig_vectors=eig_vectors,
        orbital_offset=orbital_offset,
        eig_count=eig_count,
    )
    return batch, targets


def make_sharded_batch(
    examples: Sequence[TrainingExample],
    n_shards: int,
    ladder: BucketLadder,
    layout: OutputLayout,
    eigen_size: int = 0,
) -> tuple[GraphBatch, TargetBatch]:
    """Split ``examples`` into ``n_shards`` consecutive shards, padded to one common bucket
    (the one the largest shard needs) and stacked: every leaf gets a leading shard axis."""
    if not 1 <= n_shards <= len(examples):
        raise ValueError(f"cannot split {len(examples)} structures into {n_shards} shards")
    bounds = np.linspace(0, len(examples), n_shards + 1).round().astype(int)
    shards = [examples[a:b] for a, b in itertools.pairwise(bounds)]
    # the cheapest bucket every shard fits: select for the largest count of each kind
    counts = np.array(
        [
            [sum(getattr(e.graph, f) for e in shard) for f in ("n_atoms", "n_edges", "n_pairs")]
            + [len(shard)]
            for shard in shards
        ]
    ).max(axis=0)
    bucket = ladder.select(*(int(c) for c in counts))
    parts = [make_batch(shard, bucket, layout, eigen_size) for shard in shards]
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *parts)
