"""Dynamic batching against the real server: no compilation after warm-up, and results of
requests merged into one device call equal the results of the same requests sent alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from ase import Atoms
from serve_testkit import (
    AUTH,
    MAX_ATOMS,
    ServerProcess,
    boron_nitride,
    random_molecule,
    request_body,
)

from gears_h_core.client import decode
from gears_h_core.io.wire import CONTENT_TYPE, DecodedResult
from gears_h_core.testing import assert_block_matrices_close


def _post_all(server: ServerProcess, bodies: list[bytes], concurrency: int) -> list[httpx.Response]:
    def post(body: bytes) -> httpx.Response:
        return httpx.post(
            server.url + "/infer",
            content=body,
            headers={**AUTH, "Content-Type": CONTENT_TYPE},
            timeout=120,
        )

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(post, bodies))


def _batch_histogram(server: ServerProcess) -> tuple[float, float]:
    """(device calls so far, calls that held a single structure)."""
    return (
        server.metric("gearsh_batch_structures_count"),
        server.metric("gearsh_batch_structures_bucket", '{le="1.0"}'),
    )


def test_no_compilation_after_warmup(server: ServerProcess) -> None:
    """50 random structures of every size the ladder takes (alone, several per request and
    concurrently, so every bucket and many batch compositions occur): zero compilations."""
    compiled = server.metric("gearsh_compilations")
    xla = server.metric("gearsh_xla_compilations")
    assert compiled == 2  # one per bucket, all during warm-up
    rng = np.random.default_rng(0)
    sizes = [*range(1, MAX_ATOMS + 1), *rng.integers(1, MAX_ATOMS + 1, size=50 - MAX_ATOMS - 2)]
    frames: list[Atoms] = [random_molecule(rng, int(n)) for n in sizes]
    frames += [boron_nitride(), boron_nitride().repeat((2, 1, 1))]
    rng.shuffle(frames)  # type: ignore[arg-type]
    bodies, k = [], 0
    while k < len(frames):
        n = int(rng.integers(1, 4))
        bodies.append(request_body(frames[k : k + n], outputs=("H", "S") if k % 2 else ("H",)))
        k += n
    responses = _post_all(server, bodies, concurrency=6)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses[:3]]
    assert sum(len(decode(r.content)) for r in responses) == len(frames) == 50
    assert server.metric("gearsh_compilations") == compiled
    assert server.metric("gearsh_xla_compilations") == xla


def _compare(alone: DecodedResult, batched: DecodedResult) -> float:
    worst = assert_block_matrices_close(alone.H, batched.H, rtol=1e-5, name="H")
    assert alone.S is not None and batched.S is not None
    return max(worst, assert_block_matrices_close(alone.S, batched.S, rtol=1e-5, name="S"))


def test_batched_results_equal_single_results(server: ServerProcess) -> None:
    rng = np.random.default_rng(1)
    frames = [random_molecule(rng, int(n)) for n in rng.integers(2, 12, size=15)]
    frames.append(boron_nitride())
    bodies = [request_body([f]) for f in frames]
    calls, singles = _batch_histogram(server)
    concurrent = _post_all(server, bodies, concurrency=len(bodies))
    assert all(r.status_code == 200 for r in concurrent)
    calls_after, singles_after = _batch_histogram(server)
    # requests were merged: fewer device calls than requests, some with several structures
    assert calls_after - calls < len(bodies)
    assert (calls_after - calls) - (singles_after - singles) > 0
    alone = [server.infer(b) for b in bodies]  # one at a time: a device call each
    worst = 0.0
    for a, b, frame in zip(alone, concurrent, frames, strict=True):
        (ra,), (rb,) = decode(a.content), decode(b.content)
        assert np.array_equal(ra.structure.numbers, frame.numbers)
        worst = max(worst, _compare(ra, rb))
    assert worst <= 1e-5


def test_multi_structure_request_split_over_batches(server: ServerProcess) -> None:
    """More structures than one batch holds (4): split over device calls, order kept, and
    each equals the structure sent alone."""
    rng = np.random.default_rng(2)
    frames = [random_molecule(rng, int(n)) for n in rng.integers(3, 14, size=9)]
    response = server.infer(request_body(frames))
    assert response.status_code == 200, response.text
    results = decode(response.content)
    assert [r.structure.n_atoms for r in results] == [len(f) for f in frames]
    for frame, result in zip(frames, results, strict=True):
        (alone,) = decode(server.infer(request_body([frame])).content)
        _compare(alone, result)
