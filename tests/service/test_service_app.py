"""In-process checks without a model: settings, routing and errors of an app that is never
ready, the API-key check, content types, structure-text guards and the batching queue."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from gears_h_core.graph.padding import BucketLadder
from gears_h_core.io.structures import StructureTextError, parse_structures
from gears_h_core.structure import StructureError
from service.batching import Batcher, Budget, Job, JobResult, QueueFullError
from service.deps import api_key_ok
from service.engine import body_kind, serving_ladder
from service.errors import ServiceError, one_line
from service.main import create_app
from service.settings import Settings

# -- settings ------------------------------------------------------------------------------------


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("GEARS_H_PORT=1234\n")  # never read
    monkeypatch.setenv("GEARS_H_PORT", "9000")
    monkeypatch.setenv("GEARS_H_GRPC_PORT", "0")
    monkeypatch.setenv("GEARS_H_BATCHING", "off")
    monkeypatch.setenv("GEARS_H_API_KEY", "s3cret")
    monkeypatch.setenv("GEARS_H_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("GEARS_H_SOMETHING_ELSE", "ignored")
    s = Settings()
    assert (s.port, s.grpc_port, s.batching, s.log_level) == (9000, 0, False, "debug")
    assert s.api_key is not None and s.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert s.max_body_bytes == 64 * 1024 * 1024 and s.drain_seconds == 30
    monkeypatch.setenv("GEARS_H_API_KEY", "")
    assert Settings().api_key is None
    monkeypatch.delenv("GEARS_H_PORT")
    assert Settings().port == 8000
    monkeypatch.setenv("GEARS_H_BATCH_WAIT_MS", "-1")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValidationError):
        Settings(no_such_setting=1)  # type: ignore[call-arg]


def test_blas_threads_setting_limits_numpy_blas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up sets numpy's BLAS pool to ``GEARS_H_BLAS_THREADS`` (decoding runs in the
    preprocess threads; a machine-sized BLAS pool per call oversubscribes the cores)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from service.engine import configure_jax

    def blas_threads() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    assert blas_threads(), "numpy has no BLAS that threadpoolctl sees"
    monkeypatch.setenv("GEARS_H_COMPILATION_CACHE_DIR", "")  # leave JAX's cache alone
    monkeypatch.delenv("GEARS_H_GPU_MEMORY_FRACTION", raising=False)
    with threadpool_limits(limits=None):  # restores the pool sizes afterwards
        # several BLAS libraries may be loaded (PySCF's, GPAW's), some of them single-threaded
        monkeypatch.setenv("GEARS_H_BLAS_THREADS", "1")
        configure_jax(Settings())
        assert blas_threads() == {1}
        monkeypatch.setenv("GEARS_H_BLAS_THREADS", "2")
        configure_jax(Settings())
        assert 2 in blas_threads()
        monkeypatch.delenv("GEARS_H_BLAS_THREADS")
        configure_jax(Settings())
        assert blas_threads() == {1}
    monkeypatch.setenv("GEARS_H_BLAS_THREADS", "0")
    with pytest.raises(ValidationError):
        Settings()


# -- an app that never becomes ready (no lifespan: no model) ---------------------------------------


def test_routes_before_ready() -> None:
    app = create_app(Settings(model="missing", grpc_port=0, api_key="k"))  # type: ignore[arg-type]

    async def run() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            key = {"X-API-Key": "k", "Content-Type": "application/msgpack"}
            return {
                "live": await c.get("/v2/health/live"),
                "ready": await c.get("/v2/health/ready"),
                "infer": await c.post("/infer", content=b"\x80", headers=key),
                "infer-nokey": await c.post("/infer", content=b"\x80"),
                "v2": await c.get("/v2", headers=key),
                "v2-nokey": await c.get("/v2"),
                "model": await c.get("/v2/models/x", headers=key),
                "metrics": await c.get("/metrics"),
                "missing": await c.get("/missing"),
                "method": await c.put("/v2/health/live"),
            }

    r = asyncio.run(run())
    assert r["live"].status_code == 200
    for name in ("ready", "infer", "model"):
        assert r[name].status_code == 503, name
        assert "error" in r[name].json()
    assert r["ready"].headers["retry-after"] == "5"
    assert r["infer"].headers["retry-after"] == "5"
    assert r["infer-nokey"].status_code == 401 and r["v2-nokey"].status_code == 401
    assert r["v2"].json()["models"] == [] and r["v2"].json()["name"] == "gearsh-serve"
    assert r["metrics"].status_code == 200 and "gearsh_ready 0.0" in r["metrics"].text
    assert 'gearsh_requests_total{route="/infer",status="401"} 1.0' in r["metrics"].text
    assert r["missing"].status_code == 404 and r["missing"].json() == {
        "error": "not found: /missing"
    }
    assert r["method"].status_code == 405


def test_two_apps_in_one_process_do_not_share_metrics() -> None:
    a = create_app(Settings(grpc_port=0))
    b = create_app(Settings(grpc_port=0))
    a.state.engine.metrics.observe_request("/x", 200)
    assert b"/x" not in b.state.engine.metrics.render()


# -- small pieces ---------------------------------------------------------------------------------


def test_api_key_check() -> None:
    assert api_key_ok(None, {})
    assert api_key_ok("k", {"authorization": "Bearer k"})
    assert api_key_ok("k", {"authorization": "bearer  k "})
    assert api_key_ok("k", {"x-api-key": "k"})
    assert api_key_ok("k", {"authorization": "Bearer nope", "x-api-key": "k"})
    assert not api_key_ok("k", {})
    assert not api_key_ok("k", {"authorization": "k"})
    assert not api_key_ok("k", {"authorization": "Basic k"})
    assert not api_key_ok("k", {"x-api-key": "K"})
    assert not api_key_ok("k", {"x-api-key": "ké\udcff"})


def test_body_kind() -> None:
    for ct in ("application/vnd.msgpack", "application/x-msgpack", "Application/MsgPack; q=1"):
        assert body_kind(ct) == "msgpack"
    assert body_kind("chemical/x-extxyz; charset=utf-8") == "extxyz"
    assert body_kind("chemical/x-cif") == "cif"
    for ct in (None, "", "text/plain", "application/json", "chemical/x-pdb"):
        with pytest.raises(ServiceError) as err:
            body_kind(ct)
        assert err.value.status == 415


def test_structure_text_guards() -> None:
    start = time.monotonic()
    with pytest.raises(StructureTextError, match="declares 999999999999 atoms"):
        parse_structures("extxyz", "999999999999\n\nH 0 0 0\n", source="body")
    with pytest.raises(StructureTextError, match="frame 1: header declares 5 atoms"):
        parse_structures("extxyz", "1\n\nH 0 0 0\n5\n\nH 0 0 0\n", source="body")
    assert time.monotonic() - start < 5
    with pytest.raises(StructureError, match="beyond"):
        parse_structures("extxyz", "2\n\nH 0 0 0\nH 1e12 0 0\n", source="body")
    (one,) = parse_structures("extxyz", "2\n\nH 0 0 0\nH 0.74 0 0\n", source="body")
    assert one.n_atoms == 2
    with pytest.raises(StructureTextError, match="unknown format"):
        parse_structures("pdb", "x", source="body")


def test_serving_ladder_overrides() -> None:
    base = BucketLadder(8, 24, 3.0, edges_per_atom=16, pairs_per_atom=32, max_graphs=4)
    same = serving_ladder(base.to_dict(), Settings())
    assert same.buckets == base.buckets
    over = serving_ladder(base.to_dict(), Settings(ladder_max_atoms=100, ladder_max_graphs=8))
    assert over.largest.n_nodes > 100 and over.largest.n_graphs == 9
    tiered = BucketLadder(
        8, 24, 3.0, edges_per_atom=16, pairs_per_atom=32, max_graphs=4, sparse_tiers=((4, 5),)
    )
    assert serving_ladder(tiered.to_dict(), Settings()) == tiered
    dense_only = serving_ladder(tiered.to_dict(), Settings(ladder_sparse_tiers=False))
    assert dense_only.buckets == base.buckets


def test_one_line() -> None:
    assert one_line("a\n  b\tc") == "a b c"
    assert len(one_line("x" * 5000)) == 1000


# -- batching queue (a fake device) ----------------------------------------------------------------


@dataclass(frozen=True)
class G:
    n_atoms: int
    tag: str
    n_edges: int = 0
    n_pairs: int = 0


class FakeDevice:
    """``run_batch`` that records its calls; the first call waits for ``release``."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail = fail

    def __call__(self, graphs: list[G], overlap: list[bool]) -> list[str]:
        self.calls.append([g.tag for g in graphs])
        self.started.set()
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("device on fire")
        return [g.tag.upper() for g in graphs]


class Outcome:
    def __init__(self) -> None:
        self.value: Any = None
        self.done = threading.Event()

    def __call__(self, value: Any) -> None:
        self.value = value
        self.done.set()

    def wait(self) -> Any:
        assert self.done.wait(10)
        return self.value


def _job(*graphs: G, deadline: float | None = None) -> tuple[Job[G, str], Outcome]:
    out = Outcome()
    return Job(list(graphs), True, deadline, out), out


def _batcher(device: FakeDevice, **kw: Any) -> Batcher[G, str]:
    options: dict[str, Any] = {"max_queue": 8, "wait_s": 0.005, "batching": True}
    options.update(kw)
    b: Batcher[G, str] = Batcher(device, Budget(10, 100, 100, 3), **options)
    b.start()
    return b


def test_batcher_merges_queued_jobs_under_the_budget() -> None:
    device = FakeDevice()
    b = _batcher(device)
    first, first_out = _job(G(1, "a"))
    b.submit(first)
    assert device.started.wait(10)  # the device is busy with "a"; the rest queue up
    jobs = [_job(G(4, "b")), _job(G(4, "c"), G(1, "d")), _job(G(2, "e"))]
    for job, _ in jobs:
        b.submit(job)
    device.release.set()
    results = [out.wait() for _, out in jobs]
    assert first_out.wait().values == ["A"]
    # b+c+d: 9 atoms, 3 graphs (the budget); e: next call
    assert device.calls == [["a"], ["b", "c", "d"], ["e"]]
    assert [r.values for r in results] == [["B"], ["C", "D"], ["E"]]
    assert all(isinstance(r, JobResult) and r.queue_ms[0] >= 0 for r in results)
    b.stop()


def test_batcher_splits_a_large_job_and_keeps_order() -> None:
    device = FakeDevice()
    device.release.set()
    b = _batcher(device)
    job, out = _job(*(G(3, t) for t in "pqrst"))
    b.submit(job)
    assert out.wait().values == ["P", "Q", "R", "S", "T"]
    assert device.calls == [["p", "q", "r"], ["s", "t"]]
    b.stop()


def test_batcher_without_batching_runs_jobs_alone() -> None:
    device = FakeDevice()
    b = _batcher(device, batching=False)
    b.submit(_job(G(1, "a"))[0])
    assert device.started.wait(10)
    outs = [_job(G(1, t)) for t in "bc"]
    for job, _ in outs:
        b.submit(job)
    device.release.set()
    for _, out in outs:
        out.wait()
    assert device.calls == [["a"], ["b"], ["c"]]
    b.stop()


def test_batcher_queue_full_cancel_deadline_and_stop() -> None:
    device = FakeDevice()
    b = _batcher(device, max_queue=2)
    b.submit(_job(G(1, "busy"))[0])
    assert device.started.wait(10)
    cancelled, cancelled_out = _job(G(1, "cancelled"))
    expired, expired_out = _job(G(1, "expired"), deadline=time.monotonic() + 0.01)
    b.submit(cancelled)
    b.submit(expired)
    with pytest.raises(QueueFullError) as err:
        b.submit(_job(G(1, "refused"))[0])
    assert err.value.status == 503 and err.value.retry_after == 1
    cancelled.cancel()
    time.sleep(0.05)
    device.release.set()
    error = expired_out.wait()
    assert isinstance(error, ServiceError) and error.status == 504
    assert not cancelled_out.done.is_set()
    time.sleep(0.05)
    assert ["cancelled"] not in device.calls and ["expired"] not in device.calls
    b.stop()
    with pytest.raises(ServiceError) as stopped:
        b.submit(_job(G(1, "late"))[0])
    assert stopped.value.status == 503


def test_batcher_device_error_fails_the_jobs() -> None:
    device = FakeDevice(fail=True)
    device.release.set()
    b = _batcher(device)
    job, out = _job(G(1, "a"), G(1, "b"))
    b.submit(job)
    error = out.wait()
    assert isinstance(error, ServiceError) and error.status == 500 and "fire" in error.message
    assert b.alive  # the worker survives a failing device call
    b.stop()


def test_batcher_admits_on_arrival() -> None:
    """Announced requests (still being parsed) count against the queue bound: the next one
    is refused at once, and room frees when one is withdrawn or taken by the worker."""
    device = FakeDevice()
    b = _batcher(device, max_queue=2)
    first, second = b.announce(), b.announce()
    with pytest.raises(QueueFullError):
        b.announce()
    first.withdraw()
    third = b.announce()
    job, out = _job(G(1, "a"))
    second.submit(job)  # queued; the worker takes it and blocks in the device
    assert device.started.wait(10)
    fourth = b.announce()  # the taken job no longer waits
    with pytest.raises(QueueFullError):
        b.announce()
    third.withdraw()
    fourth.withdraw()
    device.release.set()
    out.wait()
    b.stop()
    with pytest.raises(ServiceError) as stopped:
        b.announce()
    assert stopped.value.status == 503


def test_batcher_waits_only_for_announced_requests() -> None:
    """With nothing announced, a lone job runs at once; an announced one is waited for."""
    device = FakeDevice()
    device.release.set()
    b = _batcher(device, wait_s=5.0)
    start = time.monotonic()
    job, out = _job(G(1, "alone"))
    b.submit(job)
    out.wait()
    assert time.monotonic() - start < 2.0  # did not wait the 5 s
    arrival = b.announce()
    first, first_out = _job(G(1, "x"))
    b.submit(first)
    time.sleep(0.1)
    second, second_out = _job(G(1, "y"))
    arrival.submit(second)
    first_out.wait()
    second_out.wait()
    assert device.calls[-1] == ["x", "y"]
    b.stop()
