"""Decoding several structures as one disjoint union (`decode_blocks_many`, the path of every
batched prediction) gives each structure what `decode_blocks` gives it alone: the same groups
in the same order with the same indices and shifts, and blocks equal to float32 round-off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gears_h_core.io.bundle import load_bundle
from gears_h_core.io.model_source import default_bundle_path
from gears_h_core.io.structures import parse_structures
from gears_h_core.predict import Predictor, decode_blocks, decode_blocks_many
from gears_h_core.structure import Structure

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(load_bundle(default_bundle_path()))


def _structures() -> list[Structure]:
    butanol = sorted((DATA / "butanol_pbe_def2svp" / "valid").glob("*/atoms.extxyz"))[0]
    hbn = sorted((DATA / "hbn_pbe_dzp" / "valid").glob("*/atoms.extxyz"))[0]
    return [
        *parse_structures("extxyz", butanol.read_text()),  # H, C, O
        *parse_structures("extxyz", hbn.read_text()),  # B, N, periodic
        Structure.from_arrays([8], [[0.0, 0.0, 0.0]], None, False),  # one atom, no pairs
        Structure.from_arrays([1, 1], [[0.0, 0.0, 0.0], [0.74, 0.0, 0.0]], None, False),
        *parse_structures("extxyz", butanol.read_text()),  # the same molecule again
    ]


def test_union_decode_equals_decoding_each_structure_alone(predictor: Predictor) -> None:
    layout = predictor.layout
    graphs = [predictor.graph(s) for s in _structures()]
    rng = np.random.default_rng(0)
    # rows of every structure at offsets with gaps between them (as padded batches have)
    node_offset = np.cumsum([0] + [g.n_atoms + 3 for g in graphs[:-1]])
    pair_offset = np.cumsum([0] + [g.n_pairs + 5 for g in graphs[:-1]])
    onsite = rng.normal(size=(node_offset[-1] + graphs[-1].n_atoms + 2, layout.onsite_irreps.dim))
    hopping = rng.normal(size=(pair_offset[-1] + graphs[-1].n_pairs + 2, layout.hopping_irreps.dim))
    onsite, hopping = onsite.astype(np.float32), hopping.astype(np.float32)
    # the last structure is the first one again, with the same outputs
    last, n0, p0 = len(graphs) - 1, graphs[0].n_atoms, graphs[0].n_pairs
    onsite[node_offset[last] : node_offset[last] + n0] = onsite[:n0]
    hopping[pair_offset[last] : pair_offset[last] + p0] = hopping[:p0]

    many = decode_blocks_many(layout, graphs, onsite, hopping, node_offset, pair_offset)
    assert len(many) == len(graphs)
    for g, (graph, got) in enumerate(zip(graphs, many, strict=True)):
        nodes = slice(node_offset[g], node_offset[g] + graph.n_atoms)
        pairs = slice(pair_offset[g], pair_offset[g] + graph.n_pairs)
        alone = decode_blocks(layout, graph, onsite[nodes], hopping[pairs])
        assert (
            [o.z for o in got.onsite]
            == [o.z for o in alone.onsite]
            == list(graph.structure.species)
        )
        for a, b in zip(got.onsite, alone.onsite, strict=True):
            assert a.atoms.dtype == np.int32 and np.array_equal(a.atoms, b.atoms)
            np.testing.assert_allclose(a.blocks, b.blocks, rtol=1e-6, atol=1e-6)
        assert [(h.z_i, h.z_j) for h in got.hopping] == [(h.z_i, h.z_j) for h in alone.hopping]
        assert got.n_pairs == alone.n_pairs == graph.n_pairs
        for a, b in zip(got.hopping, alone.hopping, strict=True):
            for field in ("i", "j", "shift"):
                x, y = getattr(a, field), getattr(b, field)
                assert x.dtype == y.dtype == np.int32 and np.array_equal(x, y), field
            np.testing.assert_allclose(a.blocks, b.blocks, rtol=1e-6, atol=1e-6)
    # the repeated molecule decodes like the first copy
    for h0, h1 in zip(many[0].hopping, many[-1].hopping, strict=True):
        np.testing.assert_allclose(h0.blocks, h1.blocks, rtol=1e-6, atol=1e-6)
    for o0, o1 in zip(many[0].onsite, many[-1].onsite, strict=True):
        np.testing.assert_allclose(o0.blocks, o1.blocks, rtol=1e-6, atol=1e-6)


def test_no_structures_decode_to_nothing(predictor: Predictor) -> None:
    layout = predictor.layout
    empty = np.zeros((0, layout.onsite_irreps.dim), np.float32)
    assert decode_blocks_many(layout, [], empty, empty, [], []) == []
