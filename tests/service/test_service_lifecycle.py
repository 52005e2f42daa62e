"""Life cycle of a real server made slow on purpose (``GEARS_H_DEBUG_DELAY_MS``): not ready
during warm-up, 503 when the queue is full, 504 past the deadline, and the SIGTERM drain."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serve_testkit import (
    API_KEY,
    MAX_ATOMS,
    ROOT,
    ServerProcess,
    formaldehyde,
    random_molecule,
    request_body,
)

from gears_h_core.client import decode

DELAY_MS = 1500  # every device call (warm-up included) sleeps this long
MAX_QUEUE = 2


@pytest.fixture(scope="module")
def slow_server(
    tiny_bundle: Path, compile_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        {
            "GEARS_H_MODEL": str(tiny_bundle),
            "GEARS_H_API_KEY": API_KEY,
            "GEARS_H_COMPILATION_CACHE_DIR": str(compile_cache),
            "GEARS_H_DEBUG_DELAY_MS": str(DELAY_MS),
            "GEARS_H_MAX_QUEUE": str(MAX_QUEUE),
            "GEARS_H_DRAIN_SECONDS": "25",
        },
        tmp_path_factory.mktemp("logs") / "slow-server.log",
    )
    try:
        yield proc
    finally:
        proc.stop()


def _health(proc: ServerProcess) -> int:
    with grpc.insecure_channel(proc.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status)


def _assert_503(response: httpx.Response, contains: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert contains in response.json()["error"], response.text


def test_not_ready_until_warm(slow_server: ServerProcess) -> None:
    """Live answers during warm-up; ready, /infer and gRPC health say no until it is done."""
    slow_server.wait_live()
    # warm-up runs every bucket once, DELAY_MS each: the window below is > 3 s
    _assert_503(slow_server.get("/v2/health/ready"), "not ready")
    _assert_503(slow_server.infer(request_body([formaldehyde()])), "not ready")
    assert slow_server.get("/v2/models/tiny-random/ready").status_code == 503
    assert _health(slow_server) == health_pb2.HealthCheckResponse.NOT_SERVING
    slow_server.wait_ready()
    slow_server.wait_for(
        lambda: _health(slow_server) == health_pb2.HealthCheckResponse.SERVING, 10, "SERVING"
    )
    assert slow_server.metric("gearsh_compilations") == 2


def test_queue_full(slow_server: ServerProcess) -> None:
    body = request_body([formaldehyde()])
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: slow_server.infer(body), range(10)))
    refused = [r for r in responses if r.status_code == 503]
    assert refused, [r.status_code for r in responses]
    for r in refused:
        _assert_503(r, "busy")
    assert all(r.status_code == 200 for r in responses if r not in refused)
    response = slow_server.infer(body)  # served again once the queue drained
    assert response.status_code == 200


def test_deadline(slow_server: ServerProcess) -> None:
    start = time.monotonic()
    response = slow_server.infer(
        request_body([formaldehyde()]), headers={"X-Request-Timeout-Ms": "300"}
    )
    assert response.status_code == 504, response.text
    assert "deadline" in response.json()["error"]
    assert time.monotonic() - start < DELAY_MS / 1e3
    with grpc.insecure_channel(slow_server.grpc_target) as channel:
        from service.grpc_server import InferRequest, infer_stub

        with pytest.raises(grpc.RpcError) as err:
            infer_stub(channel)(
                InferRequest(body=request_body([formaldehyde()])),
                metadata=(("x-api-key", API_KEY),),
                timeout=0.3,
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert slow_server.infer(request_body([formaldehyde()])).status_code == 200


def test_sigterm_drains_then_exits_zero(slow_server: ServerProcess) -> None:
    """A slow request in flight at SIGTERM completes; new requests get 503 (or find the port
    closed once the server is gone); the process exits with status 0 within 30 s."""
    frames = [random_molecule(np.random.default_rng(k), 6) for k in range(9)]  # 3 device calls
    slow: dict[str, httpx.Response] = {}

    def send_slow() -> None:
        slow["response"] = slow_server.infer(request_body(frames))

    thread = threading.Thread(target=send_slow)
    thread.start()
    slow_server.wait_for(lambda: slow_server.metric("gearsh_in_flight_requests") >= 1, 10, "busy")
    slow_server.terminate()
    start = time.monotonic()
    try:
        late = slow_server.infer(request_body([formaldehyde()]))
    except httpx.TransportError:
        late = None  # already gone: also fine
    if late is not None:
        _assert_503(late, "shutting down")
        ready = slow_server.get("/v2/health/ready")
        assert ready.status_code == 503
        try:
            assert _health(slow_server) == health_pb2.HealthCheckResponse.NOT_SERVING
        except grpc.RpcError as err:  # gRPC already stopped
            assert err.code() == grpc.StatusCode.UNAVAILABLE
    thread.join(60)
    response = slow["response"]
    assert response.status_code == 200, response.text
    assert [r.structure.n_atoms for r in decode(response.content)] == [6] * 9
    assert slow_server.proc.wait(30) == 0, slow_server.log()
    assert time.monotonic() - start < 30
    assert "draining" in slow_server.log(20000)


@pytest.mark.slow
def test_startup_failures_exit_nonzero(tmp_path: Path) -> None:
    """A missing model exits with status 3, an invalid setting with status 2 (one line each)."""
    base = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    runs = {
        3: {**base, "GEARS_H_MODEL": str(tmp_path / "missing"), "GEARS_H_GRPC_PORT": "0"},
        2: {**base, "GEARS_H_PORT": "not-a-port"},
    }
    for expected, env in runs.items():
        proc = subprocess.run(
            [sys.executable, "-m", "service.main"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == expected, proc.stderr[-2000:]
        assert ("GEARS_H_PORT" if expected == 2 else "missing") in proc.stderr


def test_restart_loads_traced_networks(
    server: ServerProcess, tiny_bundle: Path, compile_cache: Path, tmp_path: Path
) -> None:
    """A second process on the cache the shared server filled traces no bucket (every traced
    network comes from disk); with ``GEARS_H_WARMUP_RUN=smallest`` it still compiles every
    bucket before ready, and then serves the largest bucket without compiling."""
    server.wait_ready()
    assert len(list((compile_cache / "gears_h_traced").glob("*.jaxexport"))) >= 2
    proc = ServerProcess(
        {
            "GEARS_H_MODEL": str(tiny_bundle),
            "GEARS_H_API_KEY": API_KEY,
            "GEARS_H_COMPILATION_CACHE_DIR": str(compile_cache),
            "GEARS_H_WARMUP_RUN": "smallest",
            "GEARS_H_LOG_LEVEL": "info",
        },
        tmp_path / "restart.log",
        grpc=False,
    )
    try:
        proc.wait_ready()
        assert "traced networks loaded from disk: 2)" in proc.log(100_000)
        assert proc.metric("gearsh_compilations") == 2
        rng = np.random.default_rng(7)
        response = proc.infer(request_body([random_molecule(rng, MAX_ATOMS)]))
        assert response.status_code == 200, response.text
        assert proc.metric("gearsh_compilations") == 2
    finally:
        assert proc.stop() == 0
