"""The serving ladder export writes: a sparse bucket tier for molecules beside crystals."""

from __future__ import annotations

from training.export import serving_ladder, sparse_tier

HBN_LIKE = [(36.5, 80.1), (37.0, 81.9)]
BUTANOL_LIKE = [(12.9, 13.5), (13.1, 14.0)]


def test_sparse_tier_from_the_sparse_graphs_only() -> None:
    info = {"edges_per_atom": 37.0, "pairs_per_atom": 81.9}
    assert sparse_tier(info) == ()  # a run directory from before graph_densities
    assert sparse_tier(info | {"graph_densities": HBN_LIKE}) == ()
    # butanol: 13.1 edges and 14.0 pairs per atom at most, plus the 25 % margin
    tiers = sparse_tier(info | {"graph_densities": HBN_LIKE + BUTANOL_LIKE})
    assert tiers == ((17, 18),)
    ladder = serving_ladder(info | {"graph_densities": HBN_LIKE + BUTANOL_LIKE}, 512)
    assert ladder.sparse_tiers == tiers
    one = ladder.select(15, 196, 210)  # one butanol molecule
    assert one.n_pairs < 25 * one.n_nodes
    assert ladder.select(60, 60 * 37, 60 * 81).n_pairs >= 60 * 81  # h-BN: the dense tier
