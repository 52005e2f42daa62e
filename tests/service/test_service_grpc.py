"""gRPC front end against the real server: same bytes as HTTP, errors as status codes, health."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serve_testkit import (
    API_KEY,
    AUTH,
    BODY_LIMIT,
    ServerProcess,
    extxyz,
    formaldehyde,
    request_body,
    without_timing,
)

from gears_h_core.client import decode
from service.grpc_server import SERVICE, InferRequest, InferResponse, infer_stub

KEY = (("x-api-key", API_KEY),)


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        server.grpc_target, options=[("grpc.max_send_message_length", 4 * BODY_LIMIT)]
    ) as ch:
        yield ch


def _call(
    channel: grpc.Channel, body: bytes, content_type: str = "", **kw: object
) -> InferResponse:
    request = InferRequest(body=body, content_type=content_type)
    metadata = kw.pop("metadata", KEY)
    return infer_stub(channel)(request, metadata=metadata, timeout=kw.pop("timeout", 60))


def _error(
    channel: grpc.Channel, body: bytes, content_type: str = "", **kw: object
) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        _call(channel, body, content_type, **kw)
    return err.value


def test_health_serving_after_warmup(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        response = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_bytes_equal_http_bytes(server: ServerProcess, channel: grpc.Channel) -> None:
    body = request_body([formaldehyde()])
    via_http = server.infer(body)
    assert via_http.status_code == 200
    via_grpc = _call(channel, body).body
    assert without_timing(via_grpc) == without_timing(via_http.content)
    # a raw structure file works the same way
    raw = _call(channel, extxyz(formaldehyde()).encode(), "chemical/x-extxyz").body
    assert without_timing(raw) == without_timing(via_http.content)


def test_grpc_errors(server: ServerProcess, channel: grpc.Channel) -> None:
    ok = request_body([formaldehyde()])
    cases = [
        (dict(body=ok, metadata=()), grpc.StatusCode.UNAUTHENTICATED, "API key"),
        (
            dict(body=ok, metadata=(("authorization", "Bearer nope"),)),
            grpc.StatusCode.UNAUTHENTICATED,
            "API key",
        ),
        (dict(body=b"\xc1"), grpc.StatusCode.INVALID_ARGUMENT, "msgpack"),
        (
            dict(body=ok, content_type="text/plain"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "content type",
        ),
        (
            dict(body=b"1\n\nU 0 0 0\n", content_type="chemical/x-extxyz"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "element 92",
        ),
        (dict(body=b"\x00" * (BODY_LIMIT + 1)), grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"),
        (dict(body=ok, timeout=1e-4), grpc.StatusCode.DEADLINE_EXCEEDED, ""),
    ]
    for kwargs, code, contains in cases:
        body = kwargs.pop("body")
        content_type = str(kwargs.pop("content_type", ""))
        error = _error(channel, body, content_type, **kwargs)  # type: ignore[arg-type]
        assert error.code() == code, (error.code(), error.details())
        assert contains.lower() in (error.details() or "").lower(), error.details()
        # the same one-line message as HTTP
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            http = server.post("/infer", body, content_type or "application/msgpack", headers=AUTH)
            assert http.json()["error"] == error.details()
        (result,) = decode(_call(channel, ok).body)
        assert result.structure.n_atoms == 4


def test_proto_file_matches_the_runtime_messages() -> None:
    """service/proto/gears_h.proto documents the messages the server builds at run time."""
    text = (Path(__file__).resolve().parents[2] / "service" / "proto" / "gears_h.proto").read_text()
    assert re.search(r"package\s+gears_h\.v1;", text)
    assert re.search(
        r"rpc\s+Infer\s*\(\s*InferRequest\s*\)\s+returns\s+\(\s*InferResponse\s*\)", text
    )
    declared = {
        (msg, name, number, kind)
        for msg, block in re.findall(r"message\s+(\w+)\s*\{([^}]*)\}", text)
        for kind, name, number in re.findall(r"(\w+)\s+(\w+)\s*=\s*(\d+);", block)
    }
    runtime = {
        (cls.DESCRIPTOR.name, f.name, str(f.number), {9: "string", 12: "bytes"}[f.type])
        for cls in (InferRequest, InferResponse)
        for f in cls.DESCRIPTOR.fields
    }
    assert declared == runtime
