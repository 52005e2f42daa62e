"""The inference engine behind both protocols: model lifecycle, parsing, batching, encoding.

HTTP (`service.routes`) and gRPC (`service.grpc_server`) hand the same request bytes to
`Engine.infer` and send back the bytes it returns, so both protocols give the same results
and the same errors (`ServiceError`).

Lifecycle (`Phase`): ``STARTING`` (bundle loaded, nothing compiled) -> ``WARMING`` (a
thread compiles every bucket of the ladder and runs it once) -> ``READY`` -> on SIGTERM
``DRAINING`` (new requests get 503, in-flight ones finish) -> ``STOPPED``. A failed warm-up
is ``FAILED`` (not live). Only ``READY`` serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

from gears_h_core import __version__
from gears_h_core.export_cache import ExportCache
from gears_h_core.graph.neighbors import pair_cutoff_to_json
from gears_h_core.graph.padding import BucketLadder
from gears_h_core.io.bundle import FORMAT_VERSION, load_bundle
from gears_h_core.io.model_source import resolve_bundle_path
from gears_h_core.io.structures import StructureTextError, parse_structures
from gears_h_core.io.wire import (
    ACCEPTED_CONTENT_TYPES,
    CONTENT_TYPE,
    SCHEMA_VERSION,
    PayloadTooLargeError,
    Timing,
    WireError,
    decode_request,
    encode_response,
    encode_result,
    is_msgpack_content_type,
)
from gears_h_core.predict import Predictor, StructureIrreps
from gears_h_core.structure import Structure, StructureError
from gears_h_core.types import NeighborGraph
from service.batching import Batcher, BatchInfo, Budget, Job, JobResult
from service.errors import ServiceError, bad_request, deadline_exceeded, unavailable
from service.metrics import Metrics
from service.settings import Settings

logger = logging.getLogger(__name__)

SERVER_NAME = "gearsh-serve"
PLATFORM = "gears_h_jax"
BodyKind = Literal["msgpack", "extxyz", "cif"]
#: raw structure-file content types of ``POST /infer`` -> structure text format
RAW_CONTENT_TYPES: dict[str, BodyKind] = {"chemical/x-extxyz": "extxyz", "chemical/x-cif": "cif"}
XLA_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
RETRY_NOT_READY_S = 5
RETRY_DRAINING_S = 1


class Phase(enum.Enum):
    STARTING = "starting"
    WARMING = "warming"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"
    STOPPED = "stopped"


def body_kind(content_type: str | None) -> BodyKind:
    """What a ``Content-Type`` announces; `ServiceError` 415 for anything else."""
    if is_msgpack_content_type(content_type):
        return "msgpack"
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind = RAW_CONTENT_TYPES.get(media)
    if kind is None:
        accepted = ", ".join(sorted(ACCEPTED_CONTENT_TYPES | set(RAW_CONTENT_TYPES)))
        shown = repr(content_type) if content_type else "none"
        raise ServiceError(415, f"content type {shown} is not supported (use one of {accepted})")
    return kind


def configure_jax(settings: Settings) -> None:
    """Process-wide JAX and BLAS options from the settings (called at start-up, never at
    import)."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread per decoding request thread: OpenBLAS's own pool, sized for the whole
    # machine, made each decode wait on busy cores (h-BN, 2 cores under load: 64 -> 11 ms)
    threadpool_limits(limits=settings.blas_threads, user_api="blas")
    if settings.gpu_memory_fraction is not None:
        # the explicit setting wins over an inherited XLA_PYTHON_CLIENT_MEM_FRACTION (an
        # image default, say); JAX reads it when its backend starts, which is after this
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = str(settings.gpu_memory_fraction)
    if settings.compilation_cache_dir is not None:
        import jax

        settings.compilation_cache_dir.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(settings.compilation_cache_dir))


def serving_ladder(bundle_ladder: dict[str, Any], settings: Settings) -> BucketLadder:
    """The bundle's ladder, with ``GEARS_H_LADDER_MAX_ATOMS`` / ``_MAX_GRAPHS`` /
    ``_SPARSE_TIERS`` applied."""
    params = {k: v for k, v in bundle_ladder.items() if k != "buckets"}
    if not settings.ladder_sparse_tiers:
        params.pop("sparse_tiers", None)
    if settings.ladder_max_atoms is not None:
        params["max_atoms"] = settings.ladder_max_atoms
        params["min_atoms"] = min(int(params["min_atoms"]), settings.ladder_max_atoms)
    if settings.ladder_max_graphs is not None:
        params["max_graphs"] = settings.ladder_max_graphs
    return BucketLadder.from_dict(params)


class _XlaCompileCounter:
    """Counts XLA backend compilations (JAX monitoring events) while registered."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: str, duration_secs: float, **kwargs: Any) -> None:
        if event == XLA_COMPILE_EVENT:
            self.count += 1


class Engine:
    """Model, device worker and request pipeline of one app (see the module docstring)."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.predictor: Predictor | None = None
        self.phase = Phase.STARTING
        self.detail = "loading the model"
        self.in_flight = 0
        self._batcher: Batcher[NeighborGraph, StructureIrreps] | None = None
        self._executor = ThreadPoolExecutor(
            settings.preprocess_threads, thread_name_prefix="gearsh-cpu"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[Phase], None]] = []
        self._xla = _XlaCompileCounter()
        self._xla_registered = False
        self._warm_thread: threading.Thread | None = None
        self._closing = False
        self.metrics.bind(
            compilations=lambda: self.predictor.compile_count if self.predictor else 0,
            xla_compilations=lambda: self._xla.count,
            queue_depth=lambda: self._batcher.depth if self._batcher else 0,
            ready=lambda: 1.0 if self.ready else 0.0,
        )

    # -- state ---------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY and self._batcher is not None and self._batcher.alive

    @property
    def live(self) -> bool:
        """False only when the service cannot recover (warm-up failed, worker died)."""
        if self.phase is Phase.FAILED:
            return False
        return not (self.phase is Phase.READY and not self.ready)

    def add_listener(self, callback: Callable[[Phase], None]) -> None:
        """``callback(phase)`` on the event loop after every phase change."""
        self._listeners.append(callback)

    def _set_phase(self, phase: Phase, detail: str = "") -> None:
        """Any thread; listeners run on the event loop."""
        self.phase = phase
        self.detail = detail
        logger.info("phase: %s%s", phase.value, f" ({detail})" if detail else "")
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._notify, phase)

    def _notify(self, phase: Phase) -> None:
        for callback in self._listeners:
            try:
                callback(phase)
            except Exception:
                logger.exception("phase listener failed")

    def check_accepting(self) -> Predictor:
        """The predictor when ready; otherwise `ServiceError` 503 with ``Retry-After``."""
        if self.phase in (Phase.DRAINING, Phase.STOPPED):
            raise unavailable("server is shutting down", RETRY_DRAINING_S, close=True)
        if self.phase is Phase.FAILED:
            raise unavailable(f"server failed to start: {self.detail}", RETRY_NOT_READY_S)
        if not self.ready or self.predictor is None:
            what = self.detail or self.phase.value
            raise unavailable(f"not ready: {what}", RETRY_NOT_READY_S)
        return self.predictor

    # -- lifecycle ------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the bundle and build the predictor (blocking; before serving)."""
        import jax

        configure_jax(self.settings)
        if not self._xla_registered:
            jax.monitoring.register_event_duration_secs_listener(self._xla)
            self._xla_registered = True
        path = resolve_bundle_path(self.settings.model)
        bundle = load_bundle(path)
        ladder = serving_ladder(bundle.ladder, self.settings)
        cache_dir = self.settings.compilation_cache_dir
        predictor = Predictor(
            bundle,
            ladder=ladder,
            # traced networks beside the compiled ones: a warm start skips tracing too
            export_cache=None if cache_dir is None else ExportCache(cache_dir / "gears_h_traced"),
        )
        largest = ladder.largest
        s = self.settings
        budget = Budget(
            n_atoms=min(largest.n_nodes - 1, s.batch_max_atoms or largest.n_nodes),
            n_edges=largest.n_edges,
            n_pairs=min(largest.n_pairs, s.batch_max_pairs or largest.n_pairs),
            n_graphs=largest.n_graphs - 1,
        )
        self._batcher = Batcher(
            self._run_batch,
            budget,
            max_queue=s.max_queue,
            wait_s=s.batch_wait_ms / 1e3,
            batching=s.batching,
            on_batch=self._observe_batch,
        )
        self.predictor = predictor
        logger.info(
            "loaded model %r (%s) from %s: %d bucket(s), largest %s, batch budget %s",
            bundle.name,
            bundle.sha256[:12],
            path,
            len(ladder.buckets),
            largest.to_dict(),
            budget,
        )
        self.detail = "loaded; warm-up not started"

    def start_warmup(self) -> None:
        """Compile and run every bucket in a thread, then start the worker and become ready.

        Call on the event loop (its loop receives the phase changes).
        """
        self._loop = asyncio.get_running_loop()
        if self.predictor is None:
            raise RuntimeError("start_warmup() before load()")
        if self.phase is not Phase.STARTING:  # e.g. SIGTERM arrived while loading
            return
        self._set_phase(Phase.WARMING, f"compiled 0/{len(self.predictor.ladder.buckets)} buckets")
        self._warm_thread = threading.Thread(target=self._warmup, name="gearsh-warmup", daemon=True)
        self._warm_thread.start()

    def _warmup(self) -> None:
        predictor, batcher = self.predictor, self._batcher
        assert predictor is not None and batcher is not None
        try:
            start = time.monotonic()
            probe = predictor.graph(_probe_structure(predictor.bundle.species[0]))
            buckets = predictor.ladder.buckets
            for k, bucket in enumerate(buckets):
                if self._closing:
                    return
                predictor.executable(bucket)
                if self.phase is Phase.WARMING:
                    self._set_phase(Phase.WARMING, f"compiled {k + 1}/{len(buckets)} buckets")
            # Every bucket is compiled (or loaded from the caches) above; then each runs once
            # (first-run allocations happen now, not in a request), or only the smallest.
            for bucket in buckets if self.settings.warmup_run == "all" else buckets[:1]:
                if self._closing:
                    return
                self._debug_delay()
                predictor.run(predictor.prepare_graphs([probe], bucket))
            if self._closing:
                return
            batcher.start()
            logger.info(
                "warm-up done in %.1f s (%d compilation(s))",
                time.monotonic() - start,
                predictor.compile_count,
            )
            if self.phase is Phase.WARMING:
                self._set_phase(Phase.READY)
        except Exception as exc:
            logger.exception("warm-up failed")
            self._set_phase(Phase.FAILED, f"warm-up failed: {exc}")

    def begin_drain(self) -> None:
        """Stop accepting requests (readiness false, 503 for new ones); in-flight continue."""
        if self.phase not in (Phase.DRAINING, Phase.STOPPED):
            self._set_phase(Phase.DRAINING, f"{self.in_flight} request(s) in flight")

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight (at most ``timeout`` s); True if idle."""
        end = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < end:
            await asyncio.sleep(0.02)
        return self.in_flight == 0

    async def close(self) -> None:
        """Stop the worker (queued requests get 503) and the thread pool."""
        import jax

        self._closing = True
        self.begin_drain()
        if self._batcher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._batcher.stop)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._xla_registered:
            jax.monitoring.unregister_event_duration_listener(self._xla)
            self._xla_registered = False
        self._set_phase(Phase.STOPPED)

    # -- requests ------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        """Count a request as in flight (drain waits for these)."""
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    async def infer(self, body: bytes, kind: BodyKind, deadline: float | None = None) -> bytes:
        """Predict for a request body; returns the msgpack response body.

        Args:
            body: the request body (size already checked by the protocol layer).
            kind: from `body_kind` of the request's content type.
            deadline: ``time.monotonic()`` after which the caller no longer wants the result.

        Raises:
            ServiceError: 400, 413, 422, 503, 504 (see `service.main`).
        """
        predictor = self.check_accepting()
        batcher = self._batcher
        assert batcher is not None
        if len(body) > self.settings.max_body_bytes:
            raise _too_large(len(body), self.settings.max_body_bytes)
        if deadline is not None and time.monotonic() >= deadline:
            raise deadline_exceeded("deadline exceeded before the request was read")
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[JobResult[StructureIrreps] | BaseException] = loop.create_future()

        def on_done(result: JobResult[StructureIrreps] | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, outcome, result)

        jobs: list[Job[NeighborGraph, StructureIrreps]] = []
        arrival = batcher.announce()

        def prepare_and_submit() -> None:
            try:
                graphs, overlap = self._parse(predictor, body, kind)
                job = Job(graphs, overlap, deadline, on_done)
                jobs.append(job)
                arrival.submit(job)
            finally:
                arrival.withdraw()

        try:
            await asyncio.wait_for(
                loop.run_in_executor(self._executor, prepare_and_submit), _remaining(deadline)
            )
            result = await asyncio.wait_for(outcome, _remaining(deadline))
        except TimeoutError:
            raise deadline_exceeded() from None
        finally:
            arrival.withdraw()
            for job in jobs:
                if not outcome.done() or outcome.cancelled():
                    job.cancel()
        if isinstance(result, BaseException):
            raise result
        payload, seconds = await loop.run_in_executor(self._executor, self._encode, result)
        self.metrics.queue_seconds.observe(min(result.queue_ms) / 1e3)
        self.metrics.serialize_seconds.observe(seconds)
        return payload

    def _parse(
        self, predictor: Predictor, body: bytes, kind: BodyKind
    ) -> tuple[list[NeighborGraph], bool]:
        """Body -> neighbour graphs (and whether S is wanted); runs in the thread pool."""
        if kind == "msgpack":
            try:
                request = decode_request(body, max_bytes=self.settings.max_body_bytes)
            except PayloadTooLargeError as exc:
                raise ServiceError(413, str(exc)) from exc
            except WireError as exc:
                raise bad_request(str(exc)) from exc
            items = [
                (fmt, text, f"structures[{k}]") for k, (fmt, text) in enumerate(request.structures)
            ]
            overlap = "S" in request.outputs
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise bad_request(
                    f"body: not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from exc
            if not text.strip():
                raise bad_request("body: empty")
            items = [(kind, text, "body")]
            overlap = True
        structures: list[Structure] = []
        for fmt, text, source in items:
            try:
                structures.extend(parse_structures(fmt, text, source=source))
            except StructureTextError as exc:
                raise bad_request(str(exc)) from exc
            except StructureError as exc:
                raise ServiceError(422, str(exc)) from exc
        largest = predictor.ladder.largest
        many = len(structures) > 1
        graphs = []
        for idx, structure in enumerate(structures):
            where = f"structure {idx}: " if many else ""
            if structure.n_atoms + 1 > largest.n_nodes:
                raise ServiceError(
                    413,
                    f"{where}{structure.n_atoms} atoms is over the limit of "
                    f"{largest.n_nodes - 1} atoms per structure",
                )
            try:
                graph = predictor.graph(structure)
            except StructureError as exc:
                raise ServiceError(422, f"{where}{exc}") from exc
            if not largest.fits(graph.n_atoms, graph.n_edges, graph.n_pairs, 1):
                raise ServiceError(
                    413,
                    f"{where}{graph.n_atoms} atoms, {graph.n_edges} edges, {graph.n_pairs} "
                    f"pairs do not fit the largest bucket ({largest.n_nodes - 1} atoms, "
                    f"{largest.n_edges} edges, {largest.n_pairs} pairs)",
                )
            graphs.append(graph)
        return graphs, overlap

    def _debug_delay(self) -> None:
        """``GEARS_H_DEBUG_DELAY_MS`` (tests only) before every device call."""
        if self.settings.debug_delay_ms > 0:
            time.sleep(self.settings.debug_delay_ms / 1e3)

    def _run_batch(self, graphs: list[NeighborGraph], overlap: list[bool]) -> list[StructureIrreps]:
        """The batcher's device call: pad, run, split the output per structure (device
        worker thread). Decoding to blocks happens in each request's thread (`_encode`), so
        the device worker can start the next batch meanwhile."""
        predictor = self.predictor
        assert predictor is not None
        prepared = predictor.prepare_graphs(graphs)
        self._debug_delay()
        out = predictor.run(prepared)
        bucket = prepared.layout.bucket
        eff = self.metrics.padding_efficiency
        eff.labels(kind="atoms").observe(int(np.sum(prepared.layout.n_atoms)) / bucket.n_nodes)
        eff.labels(kind="pairs").observe(int(np.sum(prepared.layout.n_pairs)) / bucket.n_pairs)
        return predictor.split(prepared, out, overlap=overlap)

    def _observe_batch(self, info: BatchInfo) -> None:
        self.metrics.compute_seconds.observe(info.seconds)
        self.metrics.batch_structures.observe(info.n_structures)
        self.metrics.batch_requests.observe(info.n_requests)

    def _encode(self, result: JobResult[StructureIrreps]) -> tuple[bytes, float]:
        """Decode every structure's blocks and build the response body (request thread).

        Returns the body and the seconds spent building the result documents. A structure's
        ``compute_ms`` is its batch's device call plus its own decoding.
        """
        predictor = self.predictor
        assert predictor is not None
        info = predictor.model_info
        decoded = []
        for share, c in zip(result.values, result.compute_ms, strict=True):
            start = time.perf_counter()
            sh = predictor.decode_one(share)
            decoded.append((sh, c + (time.perf_counter() - start) * 1e3))
        start = time.perf_counter()
        docs = [
            encode_result(sh, info, Timing(q, c, 0.0))
            for (sh, c), q in zip(decoded, result.queue_ms, strict=True)
        ]
        seconds = time.perf_counter() - start
        for doc in docs:
            doc["timing"]["serialize_ms"] = seconds * 1e3
        return encode_response(docs), seconds

    # -- metadata ------------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2`` (Open Inference Protocol server metadata, plus the model names)."""
        models = [self.predictor.bundle.name] if self.predictor else []
        return {
            "name": SERVER_NAME,
            "version": __version__,
            "extensions": ["gears_h_msgpack_infer", "grpc_health_v1", "prometheus_metrics"],
            "models": models,
        }

    def model_metadata(self, name: str) -> dict[str, Any]:
        """``GET /v2/models/{name}``: OIP model metadata plus basis, cutoffs, limits, ladder."""
        predictor = self.require_model(name)
        b, ladder, s = predictor.bundle, predictor.ladder, self.settings
        largest = ladder.largest
        outputs = [{"name": "H", "datatype": "FP32", "shape": [-1], "unit": "eV"}]
        if b.config.predict_overlap:
            outputs.append({"name": "S", "datatype": "FP32", "shape": [-1], "unit": "1"})
        return {
            "name": b.name,
            "versions": [b.version],
            "platform": PLATFORM,
            "inputs": [
                {
                    "name": "structures",
                    "datatype": "BYTES",
                    "shape": [-1],
                    "content_types": sorted(ACCEPTED_CONTENT_TYPES | set(RAW_CONTENT_TYPES)),
                }
            ],
            "outputs": outputs,
            "response_content_type": CONTENT_TYPE,
            "species": list(b.species),
            "basis": {
                str(z): {"shells": list(ells), "n_orb": b.basis.n_orb(z)}
                for z, ells in b.basis.shells.items()
            },
            "edge_cutoff": float(b.config.edge_cutoff),
            "pair_cutoff": pair_cutoff_to_json(b.pair_cutoff),
            "predicts_overlap": bool(b.config.predict_overlap),
            "limits": {
                "max_body_bytes": s.max_body_bytes,
                "max_atoms": largest.n_nodes - 1,
                "max_edges": largest.n_edges,
                "max_pairs": largest.n_pairs,
                "max_structures_per_batch": largest.n_graphs - 1,
                "max_queue": s.max_queue,
                "batch_wait_ms": s.batch_wait_ms,
                "batching": s.batching,
            },
            "ladder": ladder.to_dict(),
            "bundle_format_version": FORMAT_VERSION,
            "wire_schema_version": SCHEMA_VERSION,
            "sha256": b.sha256,
            "created_at": b.created_at,
            "metadata": b.metadata,
        }

    def require_model(self, name: str) -> Predictor:
        """The predictor if ``name`` is the served model; 404 otherwise (503 before loading)."""
        if self.predictor is None:
            raise unavailable("not ready: the model is not loaded yet", RETRY_NOT_READY_S)
        if name != self.predictor.bundle.name:
            raise ServiceError(
                404, f"model {name!r} is not served here (serving {self.predictor.bundle.name!r})"
            )
        return self.predictor


def _probe_structure(z: int) -> Structure:
    """One isolated atom: the warm-up input of every bucket."""
    return Structure.from_arrays([z], [[0.0, 0.0, 0.0]])


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _too_large(size: int, limit: int) -> ServiceError:
    return ServiceError(413, f"body: {size} bytes is over the limit of {limit}")
