"""One-way imports: the core never pulls in `training` or `service`, and has no side effects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = textwrap.dedent(
    """
    import json, sys

    import gears_h_core
    import gears_h_core.types
    import gears_h_core.io.wire
    import gears_h_core.structure
    import gears_h_core.client

    leaked = sorted(
        m for m in sys.modules
        if m in ("training", "service") or m.startswith(("training.", "service."))
    )
    heavy = sorted(m for m in ("httpx", "fastapi", "uvicorn", "grpc", "optax") if m in sys.modules)
    import jax

    print(json.dumps({
        "leaked": leaked,
        "heavy": heavy,
        "x64": bool(jax.config.read("jax_enable_x64")),
    }))
    """
)


@pytest.fixture(scope="module")
def probe() -> dict[str, object]:
    """Import the core in a fresh interpreter and report what it pulled in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_core_imports_neither_training_nor_service(probe: dict[str, object]) -> None:
    out = probe
    assert out["leaked"] == [], f"gears_h_core pulled in {out['leaked']}"
    assert out["heavy"] == [], f"gears_h_core imported optional packages {out['heavy']}"


def test_importing_core_does_not_enable_x64(probe: dict[str, object]) -> None:
    assert probe["x64"] is False
