"""``gearsh-serve``: the GEARS H inference service (HTTP + gRPC, SPEC §8).

Run::

    GEARS_H_MODEL=path/to/bundle gearsh-serve        # or GEARS_H_MODEL=default (committed)

Settings (environment only, `service.settings.Settings`)
-------------------------------------------------------
``GEARS_H_MODEL`` (``default``), ``GEARS_H_HOST`` (``127.0.0.1``; the container sets
``0.0.0.0``), ``GEARS_H_PORT`` (8000), ``GEARS_H_GRPC_PORT`` (8001; ``0`` disables gRPC),
``GEARS_H_API_KEY`` (unset: no authentication), ``GEARS_H_MAX_BODY_BYTES`` (64 MiB),
``GEARS_H_MAX_QUEUE`` (256 requests), ``GEARS_H_BATCH_WAIT_MS`` (5), ``GEARS_H_BATCH_MAX_ATOMS``
and ``GEARS_H_BATCH_MAX_PAIRS`` (0: the largest bucket), ``GEARS_H_BATCHING`` (``true``; ``false``
runs requests one by one), ``GEARS_H_COMPILATION_CACHE_DIR`` (JAX persistent compilation cache, plus the traced
networks in its ``gears_h_traced/`` so a warm start neither traces nor compiles; default
``$XDG_CACHE_HOME/gears_h/jax`` or ``~/.cache/gears_h/jax``, empty turns both off),
``GEARS_H_DRAIN_SECONDS`` (30), ``GEARS_H_WARMUP_RUN`` (``all``: after compiling every bucket
run each once; ``smallest``: run only the smallest, a faster restart on a CPU), ``GEARS_H_LADDER_MAX_ATOMS`` / ``GEARS_H_LADDER_MAX_GRAPHS``
(override the bundle's bucket ladder: largest structure, structures per batch),
``GEARS_H_LADDER_SPARSE_TIERS`` (``true``; ``false`` drops the bundle ladder's sparse bucket
tier for molecules, halving the warm-up compilations),
``GEARS_H_PREPROCESS_THREADS`` (2: parse, build graphs, decode blocks, serialise),
``GEARS_H_BLAS_THREADS`` (1: numpy's BLAS threads, per decoding thread), ``GEARS_H_GPU_MEMORY_FRACTION`` (sets
``XLA_PYTHON_CLIENT_MEM_FRACTION``), ``GEARS_H_LOG_LEVEL`` (``info``) and, for tests only,
``GEARS_H_DEBUG_DELAY_MS`` (sleep before every device call, warm-up included).

Start-up
--------
The bundle is loaded before the ports open (a missing or broken bundle exits with status 3).
Then a thread compiles every bucket of the ladder (or loads it from the persistent compilation
cache) and runs each once (only the smallest with ``GEARS_H_WARMUP_RUN=smallest``); meanwhile
``/v2/health/live`` answers 200 and ``/v2/health/ready`` 503, gRPC health says NOT_SERVING.
After warm-up the service never compiles again (``gearsh_compilations`` in ``/metrics``).

HTTP endpoints
--------------
``POST /infer``
    Body: msgpack ``{"structures": [{"format": "extxyz"|"cif", "data": str}, ...],
    "outputs": ["H"] | ["H", "S"]}`` (``Content-Type: application/vnd.msgpack``,
    ``application/x-msgpack`` or ``application/msgpack``), or a raw structure file
    (``chemical/x-extxyz``, multi-frame allowed, or ``chemical/x-cif``; outputs H and S).
    Response: ``application/vnd.msgpack``, one result per structure (wire format §7,
    `gears_h_core.io.wire`); the arrays are those of ``gears_h infer -o x.msgpack``
    (bit for bit for a request computed alone, to float32 round-off when merged into a batch
    with others). ``timing.serialize_ms`` covers building the result documents.
``GET /v2/health/live``, ``GET /v2/health/ready``
    200 / 503 (``ready`` only after warm-up and not while draining).
``GET /v2``
    Server metadata: name, version, extensions, served model names.
``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``
    Open Inference Protocol model metadata (name, versions, platform, inputs, outputs) plus
    basis, species, edge and pair cutoffs, limits, bucket ladder, bundle format version, wire
    schema version and bundle sha256; readiness of the model. Unknown name: 404.
``GET /metrics``
    Prometheus: ``gearsh_requests_total{route,status}``, queue/compute/serialise duration
    histograms, batch sizes, padding efficiency, compilations, in-flight, queue depth.

Headers
-------
``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` when ``GEARS_H_API_KEY`` is set (needed by
``/infer``, ``/v2`` and ``/v2/models/{name}``; health, model readiness and metrics stay open).
``X-Request-Timeout-Ms: N``: the caller's deadline, N milliseconds after the request arrived
(gRPC uses the call's own deadline). ``Retry-After`` (seconds) comes with every 503.

Errors (``{"error": "one line"}``)
--------------------------------
400 malformed body, msgpack document, structure text or header; 401 missing or wrong API key;
404 unknown path or model; 405 wrong method; 413 body over ``GEARS_H_MAX_BODY_BYTES`` (checked
from ``Content-Length`` and while reading) or a structure larger than the largest bucket;
415 other content types; 422 invalid structure (unknown species, overlapping atoms, NaN,
singular cell); 503 not ready, queue full or draining (with ``Retry-After``); 504 past the
request deadline. gRPC maps them to status codes (see ``service/proto/gears_h.proto``).

Shutdown
--------
SIGTERM (or SIGINT): readiness goes false and gRPC health NOT_SERVING, new requests get 503,
in-flight requests finish (at most ``GEARS_H_DRAIN_SECONDS``), then the servers stop and the
process exits with status 0. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Generator, Sequence
from types import FrameType

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gears_h_core import __version__
from service.engine import Engine
from service.errors import ServiceError, one_line
from service.metrics import Metrics
from service.routes import ROUTERS
from service.settings import Settings

logger = logging.getLogger("service")

STARTUP_FAILURE = 3  # exit status when the model cannot be loaded or a port not bound
_GRPC_GRACE_S = 5.0
_THREAD_JOIN_S = 2.0  # after shutdown, longest wait for worker threads before exiting anyway


def create_app(settings: Settings | None = None) -> FastAPI:
    """The HTTP app; its lifespan loads the model, starts gRPC and the warm-up thread.

    Without the lifespan (e.g. ``httpx.ASGITransport``) the app answers but is never ready.
    """
    settings = settings if settings is not None else Settings()
    metrics = Metrics()
    engine = Engine(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(None, engine.load)
        grpc_server = None
        if settings.grpc_port:
            from service.grpc_server import GrpcServer

            grpc_server = GrpcServer(engine, settings)
            await grpc_server.start()
        app.state.grpc = grpc_server
        engine.start_warmup()
        try:
            yield
        finally:
            engine.begin_drain()
            await engine.wait_idle(settings.drain_seconds)
            if grpc_server is not None:
                await grpc_server.stop(_GRPC_GRACE_S)
            await engine.close()

    app = FastAPI(
        title="gearsh-serve",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.grpc = None
    for router in ROUTERS:
        app.include_router(router)
    _install_error_handlers(app)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app


def _error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        if exc.status >= 500 and exc.status not in (503, 504):
            logger.error("%s %s: %s", request.method, request.url.path, exc.message)
        return _error_response(exc.status, exc.message, exc.headers())

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"not found: {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        return _error_response(exc.status_code, message, dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(400, f"invalid request: {exc}")

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(500, f"internal error: {type(exc).__name__}")

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


class RequestMetricsMiddleware:
    """Counts every HTTP response by route template and status (``gearsh_requests_total``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            self.metrics.observe_request(str(getattr(route, "path", "unmatched")), status)


class DrainingServer(uvicorn.Server):
    """uvicorn with the SIGTERM drain of SPEC §8 and exit status 0 after a signal.

    First signal: the engine stops accepting (503, readiness false), in-flight requests finish
    (at most ``drain_seconds``), then uvicorn shuts down. Second signal: immediate exit.
    uvicorn's own handler would re-raise the signal after shutdown (exit status 143); this
    one does not.
    """

    def __init__(self, config: uvicorn.Config, engine: Engine, drain_seconds: float) -> None:
        super().__init__(config)
        self.engine = engine
        self.drain_seconds = drain_seconds
        self._drain_task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        sigs = (signal.SIGINT, signal.SIGTERM)
        for sig in sigs:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in sigs:
                loop.remove_signal_handler(sig)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_signal(sig)

    def _on_signal(self, sig: int) -> None:
        if self._drain_task is not None:
            logger.warning("second signal %d: stopping now", sig)
            self.should_exit = True
            self.force_exit = True
            return
        logger.info(
            "signal %d: draining %d in-flight request(s) (at most %.0f s)",
            sig,
            self.engine.in_flight,
            self.drain_seconds,
        )
        self.engine.begin_drain()
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        idle = await self.engine.wait_idle(self.drain_seconds)
        if not idle:
            logger.warning("drain: %d request(s) still in flight, stopping", self.engine.in_flight)
        self.should_exit = True


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``gearsh-serve`` (takes no arguments: settings come from GEARS_H_*)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        sys.stderr.write(
            "gearsh-serve takes no arguments; configure it with GEARS_H_* environment "
            "variables (see `python -c 'import service.main; help(service.main)'`)\n"
        )
        return 2
    try:
        settings = Settings()
    except ValidationError as exc:
        for err in exc.errors():
            name = "GEARS_H_" + ".".join(str(p) for p in err["loc"]).upper()
            sys.stderr.write(f"gearsh-serve: {name}: {err['msg']}\n")
        return 2
    _configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="asyncio",
        http="h11",
        lifespan="on",
        log_level=settings.log_level,
        log_config=None,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    server = DrainingServer(config, app.state.engine, settings.drain_seconds)
    server.run()
    status = 0 if server.started else STARTUP_FAILURE
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    end = time.monotonic() + _THREAD_JOIN_S
    for thread in others:
        thread.join(max(0.0, end - time.monotonic()))
    stuck = [t.name for t in others if t.is_alive()]
    if stuck:  # e.g. a parser thread that cannot be interrupted: do not hang on exit
        logger.warning("exiting with %d busy thread(s): %s", len(stuck), ", ".join(stuck))
        logging.shutdown()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
