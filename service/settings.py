"""Service settings, read only from the environment (``GEARS_H_*``; no ``.env`` file).

Every field below is the upper-case environment variable ``GEARS_H_<NAME>``; e.g.
``GEARS_H_PORT=9000``. `Settings()` reads the environment; tests pass values as keyword
arguments instead (unknown keywords are rejected).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gears_h_core.io.wire import DEFAULT_MAX_REQUEST_BYTES

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Settings of ``gearsh-serve`` (environment variables ``GEARS_H_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="GEARS_H_", case_sensitive=False, extra="forbid", frozen=True
    )

    model: str = Field(
        default="default",
        description="model bundle directory, or 'default' for the bundle committed in the package",
    )
    host: str = Field(default="127.0.0.1", description="address HTTP and gRPC bind to")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port")
    grpc_port: int = Field(default=8001, ge=0, le=65535, description="gRPC port; 0 disables gRPC")
    api_key: SecretStr | None = Field(
        default=None,
        description="when set, /infer, /v2 and /v2/models/{name} (and gRPC Infer) need "
        "'Authorization: Bearer KEY' or 'X-API-Key: KEY'; health and metrics stay open",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BYTES, ge=1, description="largest request body (HTTP and gRPC)"
    )
    max_queue: int = Field(
        default=256, ge=1, description="requests waiting for the device; more are refused with 503"
    )
    batch_wait_ms: float = Field(
        default=5.0,
        ge=0.0,
        le=1000.0,
        description="longest wait for more requests to merge into a batch (only while "
        "other requests are already arriving)",
    )
    batch_max_atoms: int = Field(
        default=0,
        ge=0,
        description="atom budget of a merged batch; 0: the largest bucket's capacity",
    )
    batch_max_pairs: int = Field(
        default=0,
        ge=0,
        description="hopping-pair budget of a merged batch; 0: the largest bucket's",
    )
    batching: bool = Field(
        default=True, description="merge concurrent requests into one device call (off: one by one)"
    )
    compilation_cache_dir: Path | None = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gears_h" / "jax"
        ),
        description="JAX persistent compilation cache directory (faster restarts; "
        "default $XDG_CACHE_HOME/gears_h/jax or ~/.cache/gears_h/jax; empty: off)",
    )
    warmup_run: Literal["all", "smallest"] = Field(
        default="all",
        description="after compiling every bucket, run every bucket once before ready (the "
        "first request of each size pays no first-run cost), or only the smallest (a smoke "
        "test: faster restarts on a CPU, where running the large buckets takes seconds)",
    )
    drain_seconds: float = Field(
        default=30.0, ge=0.0, description="on SIGTERM, longest wait for in-flight requests"
    )
    ladder_max_atoms: int | None = Field(
        default=None, ge=1, description="override the bundle ladder's max_atoms (largest structure)"
    )
    ladder_max_graphs: int | None = Field(
        default=None,
        ge=1,
        description="override the bundle ladder's max_graphs (structures per batch)",
    )
    ladder_sparse_tiers: bool = Field(
        default=True,
        description="keep the bundle ladder's sparse bucket tiers (molecules); false: the dense "
        "tier only, half the warm-up compilations of a bundle with one sparse tier",
    )
    preprocess_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="threads that parse, build graphs, decode blocks and serialise",
    )
    blas_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="BLAS threads of the host's numpy work (decoding blocks); requests run in "
        "parallel in the preprocess threads already, so more oversubscribes the cores",
    )
    gpu_memory_fraction: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="XLA_PYTHON_CLIENT_MEM_FRACTION, applied before JAX starts (one process "
        "per GPU)",
    )
    log_level: LogLevel = Field(default="info", description="logging level")
    debug_delay_ms: float = Field(
        default=0.0,
        ge=0.0,
        description="TESTS ONLY: sleep this long before every device call (warm-up included)",
    )

    @field_validator("api_key", "compilation_cache_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value:
            return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments (tests), then the environment; never a dotenv or secrets file."""
        return (init_settings, env_settings)
