"""Fixtures of the service tests: one tiny bundle, one JAX compilation cache and one shared
``gearsh-serve`` process for the whole session (start-up and warm-up dominate the run time;
tests that need other settings start their own process, warm from the shared cache)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_testkit import API_KEY, BODY_LIMIT, ServerProcess, build_tiny_bundle


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("service-bundle") / "tiny")


@pytest.fixture(scope="session")
def compile_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JAX persistent compilation cache of the servers, kept in .pytest_cache between runs
    (entries are keyed by program and JAX version: a stale entry is simply not used)."""
    cache = request.config.cache
    if cache is None:  # -p no:cacheprovider
        return tmp_path_factory.mktemp("jax-cache")
    return Path(cache.mkdir("gearsh-serve-jax-cache"))


@pytest.fixture(scope="session")
def server(
    tiny_bundle: Path, compile_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The shared server: API key, gRPC, dynamic batching, a 256 KiB body limit."""
    proc = ServerProcess(
        {
            "GEARS_H_MODEL": str(tiny_bundle),
            "GEARS_H_API_KEY": API_KEY,
            "GEARS_H_MAX_BODY_BYTES": str(BODY_LIMIT),
            "GEARS_H_COMPILATION_CACHE_DIR": str(compile_cache),
            "GEARS_H_BATCH_WAIT_MS": "5",
        },
        tmp_path_factory.mktemp("logs") / "server.log",
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        status = proc.stop()
        assert status == 0, proc.log()
