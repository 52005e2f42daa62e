"""Traced networks on disk (`gears_h_core.export_cache`): a predictor that loads them gives the
same blocks as one that traces, a second process-like predictor hits every entry, a damaged
entry is traced again, and the key changes with anything the trace depends on."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
import pytest

from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.export_cache import ExportCache, source_fingerprint
from gears_h_core.graph.padding import BucketLadder
from gears_h_core.predict import Predictor
from gears_h_core.structure import Structure
from gears_h_core.testing import random_bundle, tiny_model_config
from gears_h_core.types import SparseHamiltonian

H, C, O = 1, 6, 8  # noqa: E741
BASIS = OrbitalBasis({H: (0,), C: (0, 0, 1), O: (0, 0, 1)})
LADDER = BucketLadder(4, 12, 3.0, edges_per_atom=12, pairs_per_atom=16, max_graphs=2)


@pytest.fixture(scope="module")
def bundle():  # -> ModelBundle
    config = tiny_model_config(n_interactions=1)
    return random_bundle(BASIS, config, LADDER, 4.0)


def _structures() -> list[Structure]:
    rng = np.random.default_rng(3)
    small = Structure.from_arrays([C, O, H, H], rng.uniform(0, 2.5, (4, 3)))
    large = Structure.from_arrays([C, C, O, H, H, H, H, H], rng.uniform(0, 3.5, (8, 3)))
    return [small, large]


def _blocks(results: list[SparseHamiltonian]) -> list[np.ndarray]:
    out = []
    for sh in results:
        for matrix in (sh.H, sh.S):
            assert matrix is not None
            out += [np.asarray(g.blocks) for g in (*matrix.onsite, *matrix.hopping)]
    return out


def test_loaded_networks_predict_like_traced_ones(bundle, tmp_path: Path) -> None:
    structures = _structures()
    reference = Predictor(bundle).predict(structures)

    first = Predictor(bundle, export_cache=ExportCache(tmp_path))
    assert first.warmup() == len(LADDER.buckets)
    assert first.export_cache is not None and first.export_cache.hits == 0
    assert len(list(tmp_path.glob("*.jaxexport"))) == len(LADDER.buckets)

    second = Predictor(bundle, export_cache=ExportCache(tmp_path))
    second.warmup()
    assert second.export_cache is not None and second.export_cache.hits == len(LADDER.buckets)
    assert second.compile_count == len(LADDER.buckets)

    for predictor in (first, second):
        got = predictor.predict(structures)
        for a, b in zip(_blocks(got), _blocks(reference), strict=True):
            np.testing.assert_array_equal(a, b)


def test_damaged_entry_is_traced_again(
    bundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Predictor(bundle, export_cache=ExportCache(tmp_path)).warmup()
    entries = sorted(tmp_path.glob("*.jaxexport"))
    entries[0].write_bytes(entries[0].read_bytes()[:100])
    cache = ExportCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gears_h_core.export_cache"):
        predictor = Predictor(bundle, export_cache=cache)
        predictor.warmup()
    assert "ignoring unreadable traced network" in caplog.text
    assert cache.hits == len(LADDER.buckets) - 1
    assert entries[0].stat().st_size > 100  # rewritten
    predictor.predict(_structures())


def test_key_covers_what_the_trace_depends_on() -> None:
    cache = ExportCache(Path("unused"))
    leaves = [jax.ShapeDtypeStruct((3, 4), np.float32), jax.ShapeDtypeStruct((5,), np.int32)]
    base = cache.key(["config-a"], leaves)
    assert cache.key(["config-a"], leaves) == base
    assert cache.key(["config-b"], leaves) != base
    assert cache.key(["config-a"], [leaves[0], jax.ShapeDtypeStruct((6,), np.int32)]) != base
    assert cache.key(["config-a"], [leaves[0], jax.ShapeDtypeStruct((5,), np.int64)]) != base
    assert len(source_fingerprint()) == 64
