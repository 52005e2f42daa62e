"""Helpers of the service tests: a tiny random bundle, a real ``gearsh-serve`` subprocess,
and small structures (imported by the tests of this folder and by its conftest)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
from ase import Atoms
from ase.io import write

from gears_h_core.io.wire import CONTENT_TYPE, encode_request
from service.testing import ServeProcess, random_serving_bundle

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
    """A random-parameter bundle (small s/p basis, one interaction): compiles in seconds."""
    return random_serving_bundle(
        path, LADDER, name="tiny-random", metadata={"purpose": "service tests"}
    )


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


class ServerProcess(ServeProcess):
    """`service.testing.ServeProcess` on the CPU with one BLAS thread; ``infer`` sends the
    test API key."""

    def __init__(self, env: dict[str, str], log_path: Path, *, grpc: bool = True) -> None:
        super().__init__(
            {"JAX_PLATFORMS": "cpu", "OPENBLAS_NUM_THREADS": "1", **env}, log_path, grpc=grpc
        )

    def infer(self, body: bytes, *, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.post("/infer", body, CONTENT_TYPE, headers={**AUTH, **(headers or {})})
