"""Bucket ladder and padded graph batches: minimal buckets, masks, dummy node, offsets."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gears_h_core.graph.neighbors import build_neighbor_graph
from gears_h_core.graph.padding import (
    PAD_VECTOR_LENGTH,
    Bucket,
    BucketLadder,
    BucketOverflowError,
    GraphBatch,
    pad_graphs,
)
from gears_h_core.structure import Structure
from gears_h_core.types import NeighborGraph


def ladder(**kw) -> BucketLadder:
    args = {"edges_per_atom": 12.0, "pairs_per_atom": 20.0, "max_graphs": 4} | kw
    return BucketLadder(4, 200, **args)


def crystal(seed: int, n: int) -> Structure:
    rng = np.random.default_rng(seed)
    cell = np.diag([3.0 + n * 0.4, 3.2, 3.5]) + rng.normal(scale=0.2, size=(3, 3))
    return Structure.from_arrays(
        rng.choice([5, 7], size=n), rng.random((n, 3)) @ cell, cell, True, validate=False
    )


def graphs() -> list[NeighborGraph]:
    return [
        build_neighbor_graph(crystal(seed, n), 3.0, 4.0) for seed, n in [(0, 3), (1, 5), (2, 2)]
    ]


# ----------------------------------------------------------------------------- ladder


def test_ladder_levels() -> None:
    lad = ladder()
    nodes = [b.n_nodes for b in lad.buckets]
    assert nodes == sorted(set(nodes))  # strictly increasing
    for b in lad.buckets:
        assert b.n_nodes % 8 == 0 and b.n_edges % 8 == 0 and b.n_pairs % 8 == 0
        assert b.n_edges >= 12 * (b.n_nodes - 1) and b.n_pairs >= 20 * (b.n_nodes - 1)
        assert b.n_graphs == 5  # max_graphs + dummy graph
    assert lad.buckets[0].n_nodes - 1 >= 4
    assert lad.largest.n_nodes - 1 >= 200 and lad.largest.n_nodes - 1 < 200 + 8
    for a, b in zip(lad.buckets, lad.buckets[1:], strict=False):
        assert b.n_edges >= a.n_edges and b.n_pairs >= a.n_pairs


def test_select_is_minimal_and_monotone() -> None:
    lad = ladder()
    previous = lad.buckets[0]
    for n_atoms in range(1, 201):
        n_edges, n_pairs = 10 * n_atoms, 15 * n_atoms
        b = lad.select(n_atoms, n_edges, n_pairs)
        assert b.fits(n_atoms, n_edges, n_pairs)
        k = lad.buckets.index(b)
        assert k == 0 or not lad.buckets[k - 1].fits(n_atoms, n_edges, n_pairs)
        assert b.n_nodes >= previous.n_nodes
        previous = b
    # room for the dummy node: a bucket with n_nodes = 8 holds 7 real atoms, not 8
    first = lad.buckets[0]
    assert lad.select(first.n_nodes - 1, 0, 0) == first
    assert lad.select(first.n_nodes, 0, 0) != first
    # too many edges for the atom count moves up the ladder
    assert lad.select(3, first.n_edges + 1, 0).n_edges > first.n_edges


def test_overflow_names_largest_bucket() -> None:
    lad = ladder()
    big = lad.largest
    for counts in [(big.n_nodes, 0, 0, 1), (10, big.n_edges + 1, 0, 1), (10, 0, 0, 5)]:
        with pytest.raises(BucketOverflowError, match=f"n_nodes={big.n_nodes}") as info:
            lad.select(*counts)
        assert isinstance(info.value, ValueError)


def test_ladder_dict_round_trip_and_validation() -> None:
    lad = ladder(ratio=1.3)
    data = json.loads(json.dumps(lad.to_dict()))
    again = BucketLadder.from_dict(data)
    assert again == lad and again.buckets == lad.buckets
    data["buckets"][0]["n_edges"] += 8
    with pytest.raises(ValueError, match="differ"):
        BucketLadder.from_dict(data)
    with pytest.raises(ValueError, match="unknown keys"):
        BucketLadder.from_dict(lad.to_dict() | {"extra": 1})
    with pytest.raises(ValueError, match="ratio"):
        ladder(ratio=1.0)
    with pytest.raises(ValueError, match="max_atoms"):
        BucketLadder(10, 5, edges_per_atom=1.0, pairs_per_atom=1.0)
    with pytest.raises(ValueError, match="max_graphs"):
        ladder(max_graphs=0)


def test_sparse_tier_picks_the_cheapest_fitting_bucket() -> None:
    """A sparse tier adds one bucket per level; sparse graphs (molecules) get its buckets,
    dense ones the dense tier's, and the dense tier's last bucket stays the largest."""
    dense = ladder()
    lad = ladder(sparse_tiers=((4.0, 5.0),))
    assert lad.buckets[: len(dense.buckets)] == dense.buckets
    sparse = lad.buckets[len(dense.buckets) :]
    assert [b.n_nodes for b in sparse] == [b.n_nodes for b in dense.buckets]
    for b in sparse:
        assert b.n_edges >= 4 * (b.n_nodes - 1) and b.n_pairs >= 5 * (b.n_nodes - 1)
    assert lad.largest == dense.largest
    for n_atoms in range(1, 200):
        for per_atom in [(3, 4), (4, 5), (10, 18), (12, 20)]:
            n_edges, n_pairs = (d * n_atoms for d in per_atom)
            b = lad.select(n_atoms, n_edges, n_pairs)
            assert b.fits(n_atoms, n_edges, n_pairs)
            cost = b.n_edges + b.n_pairs
            assert all(
                c.n_edges + c.n_pairs >= cost
                for c in lad.buckets
                if c.fits(n_atoms, n_edges, n_pairs)
            )
            if per_atom[1] <= 5:
                assert b in sparse
    # a dense batch of many atoms fits no sparse bucket of a reasonable size
    assert lad.select(100, 1200, 2000) == dense.select(100, 1200, 2000)
    # a molecule-like batch costs ~4x fewer slots than in the dense tier
    b = lad.select(150, 600, 700)
    assert 3 * (b.n_edges + b.n_pairs) < sum(
        (lambda d: (d.n_edges, d.n_pairs))(dense.select(150, 600, 700))
    )
    # round trip; a one-tier ladder keeps its earlier dict form
    assert BucketLadder.from_dict(json.loads(json.dumps(lad.to_dict()))) == lad
    assert "sparse_tiers" not in dense.to_dict()
    with pytest.raises(ValueError, match="sparse_tiers"):
        ladder(sparse_tiers=((13.0, 5.0),))


# ----------------------------------------------------------------------------- batches


def test_pad_graphs_shapes_masks_and_dummy() -> None:
    gs = graphs()
    lad = ladder()
    bucket = lad.select_for(gs)
    batch, layout = pad_graphs(gs, bucket)
    n_atoms = sum(g.n_atoms for g in gs)
    n_edges = sum(g.n_edges for g in gs)
    n_pairs = sum(g.n_pairs for g in gs)
    assert (batch.n_nodes, batch.n_edges, batch.n_pairs, batch.n_graphs) == (
        bucket.n_nodes,
        bucket.n_edges,
        bucket.n_pairs,
        bucket.n_graphs,
    )
    assert batch.edge_vec.shape == (bucket.n_edges, 3)
    assert batch.pair_vec.shape == (bucket.n_pairs, 3)
    for name, dtype in [
        ("numbers", np.int32),
        ("node_graph", np.int32),
        ("edge_i", np.int32),
        ("edge_j", np.int32),
        ("pair_i", np.int32),
        ("pair_j", np.int32),
        ("pair_partner", np.int32),
        ("edge_vec", np.float32),
        ("pair_vec", np.float32),
        ("node_mask", np.bool_),
        ("edge_mask", np.bool_),
        ("pair_mask", np.bool_),
        ("graph_mask", np.bool_),
    ]:
        assert getattr(batch, name).dtype == dtype, name
    assert batch.node_mask.sum() == n_atoms and batch.node_mask[:n_atoms].all()
    assert batch.edge_mask.sum() == n_edges and batch.edge_mask[:n_edges].all()
    assert batch.pair_mask.sum() == n_pairs and batch.pair_mask[:n_pairs].all()
    assert batch.graph_mask.sum() == 3 and batch.graph_mask[:3].all()

    dummy = bucket.n_nodes - 1
    assert not batch.node_mask[dummy]
    for idx in (batch.edge_i, batch.edge_j, batch.pair_i, batch.pair_j):
        assert idx.min() >= 0 and idx.max() < bucket.n_nodes
    for idx, mask in [
        (batch.edge_i, batch.edge_mask),
        (batch.edge_j, batch.edge_mask),
        (batch.pair_i, batch.pair_mask),
        (batch.pair_j, batch.pair_mask),
    ]:
        assert np.all(idx[~mask] == dummy)
        assert np.all(batch.node_mask[idx[mask]])  # real entries point at real atoms
    for vec, mask in [(batch.edge_vec, batch.edge_mask), (batch.pair_vec, batch.pair_mask)]:
        assert np.all(np.isfinite(vec))
        np.testing.assert_allclose(np.linalg.norm(vec[~mask], axis=1), PAD_VECTOR_LENGTH)
        assert np.all(np.linalg.norm(vec[mask], axis=1) > 0)
    partner = batch.pair_partner
    assert partner.shape == (bucket.n_pairs,)
    np.testing.assert_array_equal(partner[partner], np.arange(bucket.n_pairs))
    pad = np.flatnonzero(~batch.pair_mask)
    np.testing.assert_array_equal(partner[pad], pad)  # padded pairs are their own partner
    real = np.flatnonzero(batch.pair_mask)
    assert np.all(batch.pair_mask[partner[real]])
    np.testing.assert_array_equal(batch.pair_i[partner[real]], batch.pair_j[real])
    np.testing.assert_allclose(batch.pair_vec[partner[real]], -batch.pair_vec[real], atol=1e-6)
    assert np.all(batch.numbers[~batch.node_mask] == 0)
    assert np.all(batch.node_graph[~batch.node_mask] == bucket.n_graphs - 1)
    assert layout.n_graphs == 3 and layout.bucket == bucket


def test_disjoint_union_offsets() -> None:
    gs = graphs()
    batch, layout = pad_graphs(gs, ladder().select_for(gs))
    np.testing.assert_array_equal(layout.node_offset, [0, 3, 8])
    np.testing.assert_array_equal(layout.edge_offset, np.cumsum([0] + [g.n_edges for g in gs[:-1]]))
    np.testing.assert_array_equal(layout.pair_offset, np.cumsum([0] + [g.n_pairs for g in gs[:-1]]))
    for k, g in enumerate(gs):
        nodes, edges, pairs = layout.node_slice(k), layout.edge_slice(k), layout.pair_slice(k)
        off = layout.node_offset[k]
        np.testing.assert_array_equal(batch.numbers[nodes], g.structure.numbers)
        assert np.all(batch.node_graph[nodes] == k)
        np.testing.assert_array_equal(batch.edge_i[edges] - off, g.edge_i)
        np.testing.assert_array_equal(batch.edge_j[edges] - off, g.edge_j)
        np.testing.assert_array_equal(batch.pair_i[pairs] - off, g.pair_i)
        np.testing.assert_array_equal(batch.pair_j[pairs] - off, g.pair_j)
        assert np.all(batch.pair_partner[pairs] >= layout.pair_offset[k])
        assert np.all(batch.pair_partner[pairs] < layout.pair_offset[k] + g.n_pairs)
        np.testing.assert_allclose(batch.edge_vec[edges], g.edge_vec, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(batch.pair_vec[pairs], g.pair_vec, rtol=1e-6, atol=1e-6)
        assert np.all(batch.node_graph[batch.edge_i[edges]] == k)
        assert np.all(batch.node_graph[batch.pair_j[pairs]] == k)


def test_pad_graphs_overflow_and_empty() -> None:
    gs = graphs()
    n_atoms = sum(g.n_atoms for g in gs)
    with pytest.raises(BucketOverflowError, match="dummy node"):
        pad_graphs(gs, Bucket(n_nodes=n_atoms, n_edges=10_000, n_pairs=10_000, n_graphs=8))
    with pytest.raises(BucketOverflowError):
        pad_graphs(gs, Bucket(n_nodes=64, n_edges=10_000, n_pairs=10_000, n_graphs=3))
    with pytest.raises(ValueError, match="no graphs"):
        pad_graphs([], Bucket(8, 8, 8, 2))


def test_graph_batch_is_a_pytree_with_finite_gradients() -> None:
    gs = graphs()
    batch, _ = pad_graphs(gs, ladder().select_for(gs))
    assert len(jax.tree_util.tree_leaves(batch)) == 13
    device_batch = jax.device_put(batch)
    assert isinstance(device_batch, GraphBatch)

    def masked_sum(b: GraphBatch) -> jax.Array:
        r = jnp.linalg.norm(b.edge_vec, axis=-1)
        return jnp.sum(jnp.where(b.edge_mask, jnp.exp(-r), 0.0))

    value, grad = jax.jit(jax.value_and_grad(masked_sum, allow_int=True))(device_batch)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad.edge_vec))
