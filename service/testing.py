"""A real ``gearsh-serve`` process on free local ports, and a small random-parameter bundle to
serve, for tests and benchmarks.

`ServeProcess` starts ``python -m service.main`` with ``GEARS_H_*`` settings from the
environment it is given (any ``GEARS_H_*`` variables of the caller's environment are dropped,
so a developer's shell cannot leak into a test), writes its output to a log file and talks to it
over HTTP with httpx. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ServeProcess", "free_port", "random_serving_bundle"]

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def random_serving_bundle(
    path: Path, ladder: Mapping[str, float], *, name: str, metadata: Mapping[str, str] | None = None
) -> Path:
    """Save a random-parameter bundle for H, B, C, N, O (small s/p basis, one interaction,
    pair cutoff 4 Å) with the given padding ladder: compiles in seconds, timings only."""
    from gears_h_core.basis.orbitals import OrbitalBasis
    from gears_h_core.graph.padding import BucketLadder
    from gears_h_core.io.bundle import save_bundle
    from gears_h_core.testing import random_bundle, tiny_model_config

    basis = OrbitalBasis({1: (0,), 5: (0, 1), 6: (0, 0, 1), 7: (0, 1), 8: (0, 1)})
    irreps = "8x0e+4x1o+4x1e+2x2e+2x2o"
    config = tiny_model_config(node_irreps=irreps, pair_irreps=irreps, sh_lmax=2, n_interactions=1)
    bundle = random_bundle(
        basis,
        config,
        BucketLadder.from_dict(dict(ladder)),
        4.0,
        name=name,
        metadata=dict(metadata or {}),
    )
    return save_bundle(bundle, path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """``python -m service.main`` on free local ports.

    Args:
        env: ``GEARS_H_*`` settings (and any other variables) for the server.
        log_path: where stdout and stderr go.
        grpc: also open the gRPC port (``grpc_target``); off sets ``GEARS_H_GRPC_PORT=0``.
    """

    def __init__(self, env: Mapping[str, str], log_path: Path, *, grpc: bool = True) -> None:
        self.port = free_port()
        self.grpc_port = free_port() if grpc else 0
        self.log_path = log_path
        full = {k: v for k, v in os.environ.items() if not k.startswith("GEARS_H_")}
        full.update(
            {
                "GEARS_H_HOST": "127.0.0.1",
                "GEARS_H_PORT": str(self.port),
                "GEARS_H_GRPC_PORT": str(self.grpc_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        full.update(env)
        self._log = log_path.open("wb")
        self.t0 = time.monotonic()
        self.start_s = float("nan")  # process start -> first ready answer
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.main"],
            cwd=_SOURCE_ROOT,
            env=full,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"

    def log(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of the server's output."""
        return self.log_path.read_text(errors="replace")[-tail:]

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def post(
        self,
        path: str,
        content: bytes | str,
        content_type: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> httpx.Response:
        full = {"Content-Type": content_type, **(headers or {})}
        return httpx.post(self.url + path, content=content, headers=full, timeout=timeout)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until it holds; raise with the log tail if the server exits or
        ``timeout`` seconds pass."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if predicate():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not {what} after {timeout} s:\n{self.log()}")

    def wait_live(self, timeout: float = 120) -> None:
        self.wait_for(lambda: self.get("/v2/health/live").status_code == 200, timeout, "live")

    def wait_ready(self, timeout: float = 240) -> float:
        """Wait for ``/v2/health/ready``; returns the seconds from process start to ready."""
        self.wait_for(lambda: self.get("/v2/health/ready").status_code == 200, timeout, "ready")
        self.start_s = time.monotonic() - self.t0
        return self.start_s

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample of ``GET /metrics`` (``labels`` as written, e.g.
        ``'{kind="atoms"}'``)."""
        key = name + labels
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(key + " "):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(key)

    def rss_mib(self) -> float:
        """Resident memory of the server process (Linux), MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it lingers 60 s; returns the exit status."""
        self.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)
