"""gRPC front end: ``gears_h.v1.GearsH/Infer`` with the bytes of ``POST /infer``, and
``grpc.health.v1`` (SERVING only once warm, NOT_SERVING while draining).

The contract is `service/proto/gears_h.proto`. Its two messages are built here at run time
from an equivalent descriptor (no generated code to keep in sync); clients may use
`InferRequest` / `InferResponse` from this module or stubs generated from the proto file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from gears_h_core.io.wire import CONTENT_TYPE
from service.deps import api_key_ok, unauthorized
from service.engine import Engine, Phase, body_kind
from service.errors import ServiceError
from service.settings import Settings

logger = logging.getLogger(__name__)

PACKAGE = "gears_h.v1"
SERVICE = f"{PACKAGE}.GearsH"
INFER_METHOD = f"/{SERVICE}/Infer"
ROUTE = "grpc:Infer"  # the ``route`` label of gearsh_requests_total
_ENVELOPE_BYTES = 4096  # protobuf framing and content_type on top of the body limit

GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _message_classes() -> tuple[Any, Any]:
    """``InferRequest`` and ``InferResponse`` of gears_h.proto, built from a descriptor."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="gears_h/v1/gears_h.proto", package=PACKAGE, syntax="proto3"
    )
    F = descriptor_pb2.FieldDescriptorProto
    request = fdp.message_type.add(name="InferRequest")
    request.field.add(
        name="body", number=1, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL, json_name="body"
    )
    request.field.add(
        name="content_type",
        number=2,
        type=F.TYPE_STRING,
        label=F.LABEL_OPTIONAL,
        json_name="contentType",
    )
    response = fdp.message_type.add(name="InferResponse")
    response.field.add(
        name="body", number=1, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL, json_name="body"
    )
    service = fdp.service.add(name="GearsH")
    service.method.add(
        name="Infer",
        input_type=f".{PACKAGE}.InferRequest",
        output_type=f".{PACKAGE}.InferResponse",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.InferRequest")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.InferResponse")),
    )


InferRequest, InferResponse = _message_classes()


def infer_stub(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    """A client callable for ``Infer`` on ``channel`` (request: `InferRequest`)."""
    return channel.unary_unary(
        INFER_METHOD,
        request_serializer=InferRequest.SerializeToString,
        response_deserializer=InferResponse.FromString,
    )


class GearsHServicer:
    """``Infer`` handler: the same pipeline as ``POST /infer``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        key = engine.settings.api_key
        self._api_key = key.get_secret_value() if key is not None else None

    async def infer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.monotonic()
        status = 500
        error: ServiceError | None = None
        try:
            payload = await self._infer(request, context, start)
            status = 200
        except ServiceError as exc:
            error = exc
        except asyncio.CancelledError:
            status = 499  # the client went away or the deadline passed
            raise
        except Exception as exc:
            logger.exception("gRPC Infer failed")
            error = ServiceError(500, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if error is not None:
                status = error.status
            self.engine.metrics.observe_request(ROUTE, status)
        if error is not None:
            trailing = [("http-status", str(error.status))]
            if error.retry_after is not None:
                trailing.append(("retry-after", str(error.retry_after)))
            context.set_trailing_metadata(tuple(trailing))
            await context.abort(
                GRPC_CODES.get(error.status, grpc.StatusCode.UNKNOWN), error.message
            )
        return InferResponse(body=payload)

    async def _infer(self, request: Any, context: grpc.aio.ServicerContext, start: float) -> bytes:
        metadata = {
            str(k).lower(): v
            for k, v in (context.invocation_metadata() or ())
            if isinstance(v, str)
        }
        if not api_key_ok(self._api_key, metadata):
            raise unauthorized("authorization" in metadata or "x-api-key" in metadata)
        remaining = context.time_remaining()
        deadline = None if remaining is None or remaining > 1e8 else start + remaining
        engine = self.engine
        async with engine.track():
            engine.check_accepting()
            kind = body_kind(request.content_type or CONTENT_TYPE)
            body = bytes(request.body)
            limit = engine.settings.max_body_bytes
            if len(body) > limit:
                raise ServiceError(413, f"body: {len(body)} bytes is over the limit of {limit}")
            return await engine.infer(body, kind, deadline)


class GrpcServer:
    """The gRPC server of one app (started and stopped by the app's lifespan)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Bind ``GEARS_H_HOST:GEARS_H_GRPC_PORT`` and start serving; returns the port."""
        s = self.settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", s.max_body_bytes + _ENVELOPE_BYTES),
                ("grpc.max_send_message_length", 2**31 - 1),
                ("grpc.so_reuseport", 0),  # fail loudly if the port is taken
            ]
        )
        servicer = GearsHServicer(self.engine)
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Infer": grpc.unary_unary_rpc_method_handler(
                    servicer.infer,
                    request_deserializer=InferRequest.FromString,
                    response_serializer=InferResponse.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        for name in ("", SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        host = f"[{s.host}]" if ":" in s.host else s.host
        try:
            self.port = server.add_insecure_port(f"{host}:{s.grpc_port}")
        except RuntimeError as exc:
            raise RuntimeError(f"gRPC: cannot bind {host}:{s.grpc_port}: {exc}") from exc
        if self.port == 0:
            raise RuntimeError(f"gRPC: cannot bind {host}:{s.grpc_port}")
        await server.start()
        self._server = server
        self.engine.add_listener(self._on_phase)
        self._on_phase(self.engine.phase)
        logger.info("gRPC listening on %s:%d", host, self.port)
        return self.port

    def _on_phase(self, phase: Phase) -> None:
        task = asyncio.ensure_future(self._apply(phase))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, phase: Phase) -> None:
        if phase in (Phase.DRAINING, Phase.STOPPED):
            await self._health.enter_graceful_shutdown()
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if phase is Phase.READY and self.engine.ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE):
            await self._health.set(name, status)

    async def stop(self, grace: float) -> None:
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
