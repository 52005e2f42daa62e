"""Shared pytest configuration: where the shipped data live, and tiny helpers."""

from __future__ import annotations

import os

# BLAS threads oversubscribe the 2-core CI machine when pytest and XLA run side by side.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The CLI keeps compiled networks in ~/.cache/gears_h by default; tests write nothing there
# (the cache itself is tested with an explicit --cache-dir).
os.environ["GEARS_H_CACHE_DIR"] = "off"
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GEARS_H_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Read-only DFT data sets (../shared/data); tests never write there."""
    if not DATA.is_dir():
        pytest.skip(f"shipped data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def jax_compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JAX persistent compilation cache for tests that compile the same network more than
    once (in-process or in subprocesses: pass ``JAX_COMPILATION_CACHE_DIR``). Compiling the
    training step dominates those tests; identical programs are loaded from here instead.
    ``GEARS_H_TEST_JAX_CACHE`` names a directory kept between sessions (never the repo)."""
    import jax

    kept = os.environ.get("GEARS_H_TEST_JAX_CACHE")
    path = Path(kept) if kept else tmp_path_factory.mktemp("jax-compile-cache")
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path


@pytest.fixture(scope="session")
def hbn(shared_data: Path):  # -> LabeledStructure
    """The h-BN validation snapshot ``hbn5x5_100`` (50 atoms, periodic in-plane, PBE/dzp),
    read once per session; tests must not modify its arrays."""
    from training.data.snapshot import read_snapshot

    return read_snapshot(shared_data / "hbn_pbe_dzp" / "valid" / "hbn5x5_100")


@pytest.fixture(scope="session")
def butanol(shared_data: Path):  # -> LabeledStructure
    """The butanol validation snapshot ``butanol_100`` (15 atoms, PBE/def2-SVP), read once
    per session (files that need another snapshot define their own ``butanol``)."""
    from training.data.snapshot import read_snapshot

    return read_snapshot(shared_data / "butanol_pbe_def2svp" / "valid" / "butanol_100")
