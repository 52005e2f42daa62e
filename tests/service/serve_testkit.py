"""Helpers of the service tests: a tiny random bundle, a real ``gearsh-serve`` subprocess,
and small structures (imported by the tests of this folder and by its conftest)."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
from ase import Atoms
from ase.io import write

from gears_h_core.io.wire import CONTENT_TYPE, encode_request

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key"
AUTH = {"X-API-Key": API_KEY}
H, B, C, N, O = 1, 5, 6, 7, 8  # noqa: E741
SPECIES = (H, B, C, N, O)
PAIR_CUTOFF = 4.0
# two buckets: <= 15 real atoms and <= 31, at most 4 structures per batch
LADDER = {
    "min_atoms": 8,
    "max_atoms": 24,
    "ratio": 3.0,
    "edges_per_atom": 16,
    "pairs_per_atom": 32,
    "max_graphs": 4,
}
MAX_ATOMS = 31  # the largest bucket's real-atom capacity
BODY_LIMIT = 256 * 1024  # GEARS_H_MAX_BODY_BYTES of the shared server


def build_tiny_bundle(path: Path) -> Path:
    """A random-parameter bundle (small s/p basis, one interaction): compiles in seconds.

    Built like tests/core/model/test_model_properties.py does, with a cheaper network.
    """
    from gears_h_core.basis.orbitals import OrbitalBasis
    from gears_h_core.graph.padding import BucketLadder
    from gears_h_core.io.bundle import save_bundle
    from gears_h_core.testing import random_bundle, tiny_model_config

    basis = OrbitalBasis({H: (0,), B: (0, 1), C: (0, 0, 1), N: (0, 1), O: (0, 1)})
    irreps = "8x0e+4x1o+4x1e+2x2e+2x2o"
    config = tiny_model_config(node_irreps=irreps, pair_irreps=irreps, sh_lmax=2, n_interactions=1)
    ladder = BucketLadder.from_dict(LADDER)
    bundle = random_bundle(
        basis, config, ladder, PAIR_CUTOFF, metadata={"purpose": "service tests"}
    )
    return save_bundle(bundle, path)


# -- structures ---------------------------------------------------------------------------------


def formaldehyde() -> Atoms:
    pos = [[0.0, 0.0, 0.0], [1.21, 0.0, 0.0], [-0.55, 0.94, 0.0], [-0.55, -0.94, 0.0]]
    return Atoms(numbers=[C, O, H, H], positions=pos)


def boron_nitride() -> Atoms:
    """Rectangular h-BN cell (4 atoms, periodic in the plane)."""
    a, d = 2.50, 1.443
    pos = [[0.0, 0.0, 0.0], [0.0, d, 0.0], [a / 2, 1.5 * d, 0.0], [a / 2, 2.5 * d, 0.0]]
    cell = [[a, 0.0, 0.0], [0.0, 3 * d, 0.0], [0.0, 0.0, 0.0]]
    return Atoms(numbers=[B, N, B, N], positions=pos, cell=cell, pbc=[True, True, False])


def random_molecule(rng: np.random.Generator, n_atoms: int) -> Atoms:
    """A random walk of ``n_atoms`` atoms (steps 1.1–1.6 Å, no two atoms closer than 1 Å)."""
    pos = [np.zeros(3)]
    while len(pos) < n_atoms:
        step = rng.normal(size=3)
        step *= rng.uniform(1.1, 1.6) / np.linalg.norm(step)
        candidate = pos[int(rng.integers(max(0, len(pos) - 3), len(pos)))] + step
        if min(np.linalg.norm(candidate - p) for p in pos) >= 1.0:
            pos.append(candidate)
    return Atoms(numbers=rng.choice(SPECIES, size=n_atoms), positions=np.array(pos))


def extxyz(*frames: Atoms) -> str:
    buf = io.StringIO()
    write(buf, list(frames), format="extxyz")
    return buf.getvalue()


def cif(atoms: Atoms) -> str:
    buf = io.BytesIO()
    write(buf, atoms, format="cif")
    return buf.getvalue().decode()


def request_body(frames: Sequence[Atoms], outputs: Sequence[str] = ("H", "S")) -> bytes:
    return encode_request([("extxyz", extxyz(a)) for a in frames], outputs)


def without_timing(body: bytes) -> list[dict[str, Any]]:
    """The results of a response body with their ``timing`` removed (for exact comparison)."""
    doc = msgpack.unpackb(body, raw=False)
    results = doc["results"]
    for r in results:
        r.pop("timing")
    return list(results)


# -- a real server process ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m service.main`` on free local ports, configured by ``GEARS_H_*`` variables."""

    def __init__(self, env: dict[str, str], log_path: Path, *, grpc: bool = True) -> None:
        self.port = free_port()
        self.grpc_port = free_port() if grpc else 0
        self.log_path = log_path
        full = {k: v for k, v in os.environ.items() if not k.startswith("GEARS_H_")}
        full.update(
            {
                "GEARS_H_HOST": "127.0.0.1",
                "GEARS_H_PORT": str(self.port),
                "GEARS_H_GRPC_PORT": str(self.grpc_port),
                "JAX_PLATFORMS": "cpu",
                "OPENBLAS_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        full.update(env)
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.main"],
            cwd=ROOT,
            env=full,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kw)

    def post(
        self,
        path: str,
        content: bytes | str,
        content_type: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> httpx.Response:
        full = {"Content-Type": content_type, **(headers or {})}
        return httpx.post(self.url + path, content=content, headers=full, timeout=timeout)

    def infer(self, body: bytes, *, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.post("/infer", body, CONTENT_TYPE, headers={**AUTH, **(headers or {})})

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if predicate():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not {what} after {timeout} s:\n{self.log()}")

    def wait_live(self, timeout: float = 120) -> None:
        self.wait_for(lambda: self.get("/v2/health/live").status_code == 200, timeout, "live")

    def wait_ready(self, timeout: float = 240) -> None:
        self.wait_for(lambda: self.get("/v2/health/ready").status_code == 200, timeout, "ready")

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample of ``GET /metrics`` (``labels`` as written, e.g.
        ``'{kind="atoms"}'``)."""
        key = name + labels
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(key + " "):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(key)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it lingers; returns the exit status."""
        self.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)
