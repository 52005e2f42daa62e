"""Chunked prediction of one large structure (issue 6): the graph is split into node chunks
(with a halo of ``n_interactions`` edge hops) and pair chunks that fit the largest bucket, and
the assembled result equals the unsplit prediction up to float32 round-off.

One tiny random-parameter model is served twice: with a small ladder (two buckets, so the
structure must be split) and with a ladder whose single bucket holds the whole structure.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.graph.chunking import GraphChunker, fitted_bucket, pad_chunk
from gears_h_core.graph.neighbors import build_neighbor_graph
from gears_h_core.graph.padding import Bucket, BucketLadder, BucketOverflowError, pad_graphs
from gears_h_core.io.bundle import ModelBundle
from gears_h_core.predict import Predictor
from gears_h_core.structure import Structure
from gears_h_core.testing import (
    assert_block_matrices_close,
    assert_hermitian,
    random_bundle,
    tiny_model_config,
)

B, N = 5, 7
BASIS = OrbitalBasis({B: (0, 1, 0, 1, 2), N: (0, 1, 0, 1, 2)})
PAIR_CUTOFF = 4.0
CONFIG = tiny_model_config()  # edge cutoff 3 Å, 2 interactions: halo 4 + 2 × 3 = 10 Å
# two buckets (<= 50 and <= 80 real atoms): a 240-atom ribbon must be split into >= 3 node
# chunks and >= 3 pair chunks
SMALL = BucketLadder(50, 80, 2.0, edges_per_atom=16, pairs_per_atom=16)
WHOLE = BucketLadder(240, 240, edges_per_atom=16, pairs_per_atom=32)


def hbn_sheet(nx: int, ny: int, seed: int = 0) -> Structure:
    """Rectangular h-BN supercell (4 atoms per 2.50 × 4.33 Å cell), rippled, pbc T T F.

    With ``ny = 1`` the cell is shorter than twice the pair cutoff along y, so one atom pair
    has several images (distinct shifts) in the pair list.
    """
    a, d = 2.50, 1.443
    base = np.array([[0.0, 0.0, 0.0], [0.0, d, 0.0], [a / 2, 1.5 * d, 0.0], [a / 2, 2.5 * d, 0.0]])
    cells = np.array([[x * a, y * 3 * d, 0.0] for x in range(nx) for y in range(ny)])
    pos = (cells[:, None, :] + base[None]).reshape(-1, 3)
    pos += np.random.default_rng(seed).uniform(-0.05, 0.05, pos.shape)
    cell = [[nx * a, 0.0, 0.0], [0.1, ny * 3 * d, 0.0], [0.0, 0.0, 0.0]]
    numbers = [B, N, B, N] * (nx * ny)
    return Structure.from_arrays(numbers, pos, cell, [True, True, False])


@dataclasses.dataclass
class Setup:
    bundle: ModelBundle
    small: Predictor
    whole: Predictor


@pytest.fixture(scope="module")
def setup() -> Setup:
    bundle = random_bundle(
        BASIS, CONFIG, SMALL, PAIR_CUTOFF, name="tiny-random-bn", metadata={"purpose": "chunking"}
    )
    return Setup(bundle, Predictor(bundle), Predictor(bundle, ladder=WHOLE))


def _budget(ladder: BucketLadder) -> Bucket:
    largest = ladder.largest
    return Bucket(max(largest.n_nodes, largest.n_edges), largest.n_edges, largest.n_pairs, 2)


@pytest.mark.parametrize("shape", [(60, 1), (12, 8)], ids=["ribbon", "sheet"])
def test_chunks_partition_the_structure(shape: tuple[int, int]) -> None:
    """Node cores and pair cores each partition the atoms, every directed pair is in exactly
    one pair chunk, every chunk fits the budget, a node chunk keeps all edges its core
    receives (and no pairs), a pair chunk holds its pairs' atoms (and no edges), and both pad
    like `pad_graphs` apart from the partners (no model needed)."""
    structure = hbn_sheet(*shape)
    graph = build_neighbor_graph(structure, CONFIG.edge_cutoff, PAIR_CUTOFF)
    budget = _budget(SMALL)
    chunker = GraphChunker(graph, CONFIG.n_interactions)
    for part in ("nodes", "pairs"):
        chunks = list(chunker.split(budget, part))
        assert len(chunks) >= 3, part
        core_atoms = np.concatenate([c.atoms[c.core] for c in chunks])
        assert np.array_equal(np.sort(core_atoms), np.arange(structure.n_atoms))
        bucket = fitted_bucket(chunks, budget)
        assert bucket.n_edges <= budget.n_edges and bucket.n_pairs <= budget.n_pairs
        for c in chunks:
            assert budget.fits(*c.counts(), 1) and bucket.fits(*c.counts(), 1)
            g = c.graph
            assert np.array_equal(g.structure.numbers, structure.numbers[c.atoms])
            fast = pad_chunk(c, bucket)
            # every chunk pair is its own partner (partners meet when outputs are assembled)
            assert np.array_equal(fast.pair_partner, np.arange(bucket.n_pairs))
            if part == "nodes":
                # otherwise the same batch as pad_graphs (a node chunk has no pairs to match)
                batch, _ = pad_graphs([g], bucket)
                for field in dataclasses.fields(batch):
                    a, b = getattr(batch, field.name), getattr(fast, field.name)
                    assert a.dtype == b.dtype and np.array_equal(a, b), field.name
            else:
                n, dummy = g.n_pairs, bucket.n_nodes - 1
                assert np.array_equal(fast.pair_i[:n], g.pair_i)
                assert np.array_equal(fast.pair_j[:n], g.pair_j)
                assert (fast.pair_i[n:] == dummy).all() and (fast.pair_j[n:] == dummy).all()
                assert np.array_equal(fast.pair_vec[:n], g.pair_vec.astype(np.float32))
                assert fast.pair_mask.sum() == n and fast.pair_mask[:n].all()
                assert np.array_equal(fast.numbers[: g.n_atoms], g.structure.numbers)
            if part == "nodes":
                assert g.n_pairs == 0
                # every core atom receives all of its edges
                n_core_edges = int(np.isin(graph.edge_i, c.atoms[c.core]).sum())
                assert int(np.isin(g.edge_i, c.core).sum()) == n_core_edges
                continue
            assert g.n_edges == 0
            # the chunk's pairs are the full graph's rows with a core atom as i, re-indexed
            assert np.isin(g.pair_i, c.core).all()
            assert np.array_equal(c.atoms[g.pair_i], graph.pair_i[c.pairs])
            assert np.array_equal(c.atoms[g.pair_j], graph.pair_j[c.pairs])
            assert np.array_equal(g.pair_shift, graph.pair_shift[c.pairs])
            assert np.array_equal(g.pair_vec, graph.pair_vec[c.pairs])
        if part == "pairs":
            rows = np.concatenate([c.pairs for c in chunks])
            assert np.array_equal(np.sort(rows), np.arange(graph.n_pairs))


def test_single_atom_chunk_too_large_is_refused() -> None:
    graph = build_neighbor_graph(hbn_sheet(40, 1), CONFIG.edge_cutoff, PAIR_CUTOFF)
    tiny = Bucket(n_nodes=512, n_edges=16, n_pairs=512, n_graphs=2)
    with pytest.raises(BucketOverflowError, match="its node chunk alone"):
        list(GraphChunker(graph, CONFIG.n_interactions).split(tiny, "nodes"))


def test_chunked_equals_unsplit(setup: Setup) -> None:
    structure = hbn_sheet(60, 1)  # 240 atoms, 150 Å long, several images per pair along y
    graph = setup.small.graph(structure)
    assert not SMALL.largest.fits(graph.n_atoms, graph.n_edges, graph.n_pairs, 1)
    plan = setup.small.plan_chunks(graph)
    assert len(plan.nodes) >= 3 and len(plan.pairs) >= 3
    shifts = graph.pair_shift[(graph.pair_i == 0) & (graph.pair_j == 3)]
    assert shifts.shape[0] >= 2  # the same atom pair through several images

    (reference,) = setup.whole.predict([structure])  # unsplit, in the one bucket of WHOLE
    (chunked,) = setup.small.predict([structure])  # too large for SMALL: routed to chunks
    assert setup.whole.compile_count == 1
    # node chunks run in one bucket and pair chunks in one: two compilations
    assert setup.small.compile_count == 2
    assert ("nodes", plan.node_bucket) in setup.small._compiled
    assert ("pairs", plan.pair_bucket) in setup.small._compiled

    assert chunked.S is not None and reference.S is not None
    n_pairs = graph.n_pairs
    for name, a, b in (("H", reference.H, chunked.H), ("S", reference.S, chunked.S)):
        assert_block_matrices_close(a, b, rtol=1e-5, name=name)
        assert_hermitian(b, name=name)
        assert b.n_pairs == n_pairs
    # predict_large gives the routed result; a second call compiles nothing
    again = setup.small.predict_large(structure)
    assert_block_matrices_close(chunked.H, again.H, rtol=0.0)
    assert setup.small.compile_count == 2
