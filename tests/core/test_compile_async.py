"""Compilation in worker threads (`Predictor.compile_async`): concurrent requests for one
bucket share one compilation, a failed compilation is retried by the next request, chunked
prediction gives the same blocks whether or not the pair network is prepared while the node
network compiles, and `release_free_memory` gives a thread's freed heap back."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import gears_h_core.predict as predict_module
from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.graph.padding import Bucket, BucketLadder
from gears_h_core.predict import Predictor
from gears_h_core.structure import Structure
from gears_h_core.testing import random_bundle, tiny_model_config

H, C, O = 1, 6, 8  # noqa: E741
BASIS = OrbitalBasis({H: (0,), C: (0, 0, 1), O: (0, 0, 1)})
LADDER = BucketLadder(4, 12, 3.0, edges_per_atom=12, pairs_per_atom=16, max_graphs=2)


@pytest.fixture(scope="module")
def bundle():  # -> ModelBundle
    return random_bundle(BASIS, tiny_model_config(n_interactions=1), LADDER, 4.0)


def _chain() -> Structure:
    """16 atoms along x, 1.3 Å apart: long enough to split into several chunks."""
    rng = np.random.default_rng(5)
    n = 16
    positions = np.stack([np.arange(n) * 1.3, rng.uniform(0, 0.3, n), rng.uniform(0, 0.3, n)], 1)
    return Structure.from_arrays([C, O, H, H] * 4, positions)


def test_concurrent_requests_share_one_compilation(bundle) -> None:
    predictor = Predictor(bundle)
    bucket = predictor.ladder.buckets[0]
    got: list[object] = []
    barrier = threading.Barrier(4)

    def ask() -> None:
        barrier.wait()
        got.append(predictor.executable(bucket))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(exe is got[0] for exe in got)
    assert predictor.compile_count == 1


def test_failed_compilation_is_retried(bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = Predictor(bundle)
    bucket = predictor.ladder.buckets[0]
    real_lower = predictor._lower

    class Broken:
        def compile(self) -> None:
            raise RuntimeError("out of memory while compiling")

    monkeypatch.setattr(predictor, "_lower", lambda stage, spec: (Broken(), lambda c: c))
    with pytest.raises(RuntimeError, match="out of memory while compiling"):
        predictor.executable(bucket)
    assert predictor.compile_count == 0
    monkeypatch.setattr(predictor, "_lower", real_lower)
    exe = predictor.executable(bucket)  # not the failed future again
    assert callable(exe) and predictor.compile_count == 1


@pytest.mark.parametrize("spare_cores", [False, True])
def test_chunked_prediction_with_and_without_prefetch(
    bundle, spare_cores: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    structure = _chain()
    whole = Predictor(bundle).predict([structure])[0]
    monkeypatch.setattr(predict_module, "_spare_cores", lambda: spare_cores)
    predictor = Predictor(bundle)
    budget = Bucket(n_nodes=12, n_edges=40, n_pairs=40, n_graphs=2)
    plan = predictor.plan_chunks(predictor.graph(structure), budget)
    assert len(plan.nodes) >= 2 and len(plan.pairs) >= 2
    chunked = predictor.predict_large(structure, budget=budget)
    assert predictor.compile_count == 2
    for a, b in ((whole.H, chunked.H), (whole.S, chunked.S)):
        assert a is not None and b is not None
        for ga, gb in zip((*a.onsite, *a.hopping), (*b.onsite, *b.hopping), strict=True):
            np.testing.assert_allclose(gb.blocks, ga.blocks, rtol=1e-5, atol=1e-5)


def test_release_free_memory_returns_a_threads_freed_heap() -> None:
    """A worker thread allocates ~300 MB in 100 kB pieces (its own malloc arena), frees all
    but every 50th (so the arena cannot shrink from its top); the pages stay resident until
    `release_free_memory`."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    script = textwrap.dedent(
        """
        import threading
        from gears_h_core.host_memory import release_free_memory

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        kept = []
        def work():
            pieces = [b"x" * 100_000 for _ in range(3000)]
            kept.extend(pieces[::50])
            pieces.clear()

        t = threading.Thread(target=work)
        t.start()
        t.join()
        before = rss()
        released = release_free_memory()
        print(released, before, rss())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    released, before, after = out[0] == "True", int(out[1]), int(out[2])
    assert released
    assert before - after > 150e6, (before, after)
