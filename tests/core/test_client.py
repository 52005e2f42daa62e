"""The Python client: decoding, CSR per shift, and the HTTP calls (through httpx.MockTransport)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write

from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.client import ClientError, GearsHClient, decode, to_csr_per_shift
from gears_h_core.io.wire import (
    ModelInfo,
    Timing,
    WireError,
    decode_request,
    decode_response,
    encode_response,
    encode_result,
)
from gears_h_core.structure import Structure
from gears_h_core.types import BlockMatrix, HoppingGroup, OnsiteGroup, SparseHamiltonian

httpx = pytest.importorskip("httpx")

MODEL = ModelInfo(name="tiny", version="1", sha256="0" * 64)
BASIS = OrbitalBasis({8: (0, 1), 1: (0,)})  # O: 4 orbitals, H: 1


def _operator(rng: np.random.Generator) -> BlockMatrix:
    i32 = np.int32
    return BlockMatrix(
        onsite=(
            OnsiteGroup(8, np.array([0], i32), rng.standard_normal((1, 4, 4)).astype(np.float32)),
            OnsiteGroup(
                1, np.array([1, 2], i32), rng.standard_normal((2, 1, 1)).astype(np.float32)
            ),
        ),
        hopping=(
            HoppingGroup(
                8,
                1,
                np.array([0, 0], i32),
                np.array([1, 2], i32),
                np.array([[0, 0, 0], [1, 0, 0]], i32),
                rng.standard_normal((2, 4, 1)).astype(np.float32),
            ),
            HoppingGroup(
                1,
                1,
                np.array([1], i32),
                np.array([1], i32),
                np.array([[1, 0, 0]], i32),  # periodic self-image
                rng.standard_normal((1, 1, 1)).astype(np.float32),
            ),
        ),
    )


def water(with_s: bool = True) -> SparseHamiltonian:
    rng = np.random.default_rng(1)
    structure = Structure.from_arrays(
        [8, 1, 1],
        [[0.0, 0.0, 0.0], [0.76, 0.59, 0.0], [-0.76, 0.59, 0.0]],
        np.diag([5.0, 10.0, 10.0]),
        [True, False, False],
        validate=False,
    )
    return SparseHamiltonian(structure, BASIS, _operator(rng), _operator(rng) if with_s else None)


def response_bytes(n: int = 1, with_s: bool = True) -> bytes:
    timing = Timing(1.0, 2.0, 3.0)
    return encode_response([encode_result(water(with_s), MODEL, timing)] * n)


def test_decode_matches_wire() -> None:
    data = response_bytes(2)
    a, b = decode(data), decode_response(data)
    assert len(a) == 2
    assert a[0].model == b[0].model == MODEL
    assert a[0].timing == Timing(1.0, 2.0, 3.0)
    assert np.array_equal(a[1].H.hopping[0].blocks, b[1].H.hopping[0].blocks)
    with pytest.raises(WireError):
        decode(data, max_bytes=10)


@pytest.mark.parametrize("operator", ["H", "S"])
def test_to_csr_per_shift_places_every_block(operator: str) -> None:
    pytest.importorskip("gears_h_core.assemble.sparse")
    (res,) = decode(response_bytes())
    bm = res.H if operator == "H" else res.S
    assert bm is not None
    mats = to_csr_per_shift(res, operator)  # type: ignore[arg-type]
    offsets = res.basis.orbital_offsets(res.structure.numbers)
    n = int(offsets[-1])
    assert sorted(mats) == [(0, 0, 0), (1, 0, 0)]
    assert all(m.shape == (n, n) for m in mats.values())
    dense = {k: m.toarray() for k, m in mats.items()}
    for g in bm.onsite:
        for a, block in zip(g.atoms, g.blocks, strict=True):
            sl = slice(offsets[a], offsets[a + 1])
            assert np.array_equal(dense[(0, 0, 0)][sl, sl], block)
    for h in bm.hopping:
        for i, j, s, block in zip(h.i, h.j, h.shift, h.blocks, strict=True):
            got = dense[tuple(int(x) for x in s)][
                offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]
            ]
            assert np.array_equal(got, block)


def test_to_csr_per_shift_without_overlap() -> None:
    (res,) = decode(response_bytes(with_s=False))
    with pytest.raises(ValueError, match="no overlap"):
        to_csr_per_shift(res, "S")
    with pytest.raises(ValueError, match="operator"):
        to_csr_per_shift(res, "K")  # type: ignore[arg-type]


class Recorder:
    """A MockTransport handler that records requests and answers with a fixed response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response


def msgpack_response(status: int = 200, body: bytes | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=response_bytes() if body is None else body,
        headers={"content-type": "application/vnd.msgpack"},
    )


def client_for(handler: Any, **kwargs: Any) -> GearsHClient:
    return GearsHClient("http://gears.test/", transport=httpx.MockTransport(handler), **kwargs)


def h2o() -> Atoms:
    return Atoms("OH2", positions=[[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]], cell=[5, 6, 7])


def test_infer_sends_msgpack_with_headers() -> None:
    rec = Recorder(msgpack_response())
    with client_for(rec, api_key="s3cret") as client:
        results = client.infer([h2o()], outputs=("H", "S"))
    assert len(results) == 1 and results[0].model == MODEL
    (req,) = rec.requests
    assert req.method == "POST"
    assert req.url == httpx.URL("http://gears.test/infer")
    assert req.headers["content-type"] == "application/vnd.msgpack"
    assert req.headers["x-api-key"] == "s3cret"
    body = decode_request(req.content)
    assert body.outputs == ("H", "S")
    ((fmt, text),) = body.structures
    assert fmt == "extxyz"
    back = read(io.StringIO(text), format="extxyz")
    assert back.get_chemical_symbols() == ["O", "H", "H"]
    assert np.allclose(back.positions, h2o().positions)
    assert np.allclose(back.cell.array, h2o().cell.array)


def test_infer_without_api_key_sends_no_key_header() -> None:
    rec = Recorder(msgpack_response())
    with client_for(rec) as client:
        client.infer([h2o()], outputs=("H",))
    (req,) = rec.requests
    assert "x-api-key" not in req.headers
    assert decode_request(req.content).outputs == ("H",)


def test_infer_reads_every_frame_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "two.extxyz"
    second = h2o()
    second.positions[1, 0] += 0.1
    write(path, [h2o(), second], format="extxyz")
    rec = Recorder(msgpack_response(body=response_bytes(3)))
    with client_for(rec) as client:
        out = client.infer([str(path), h2o()])
    assert len(out) == 3
    assert len(decode_request(rec.requests[0].content).structures) == 3


def test_infer_raises_client_error_with_server_message() -> None:
    error = httpx.Response(422, json={"error": "atom 1: closer than 0.1 Å to atom 2"})
    with client_for(Recorder(error)) as client, pytest.raises(ClientError) as info:
        client.infer([h2o()])
    assert info.value.status_code == 422
    assert info.value.message == "atom 1: closer than 0.1 Å to atom 2"
    assert "422" in str(info.value)


def test_infer_non_json_error_body() -> None:
    error = httpx.Response(502, text="Bad Gateway from proxy")
    with client_for(Recorder(error)) as client, pytest.raises(ClientError) as info:
        client.infer([h2o()])
    assert info.value.status_code == 502
    assert info.value.message == "Bad Gateway from proxy"


def test_infer_rejects_non_msgpack_success() -> None:
    ok_json = httpx.Response(
        200, content=json.dumps({"ok": True}).encode(), headers={"content-type": "application/json"}
    )
    with client_for(Recorder(ok_json)) as client, pytest.raises(ClientError, match="msgpack"):
        client.infer([h2o()])


def test_infer_invalid_body_is_wire_error() -> None:
    with client_for(Recorder(msgpack_response(body=b"\x93\x01"))) as client:
        with pytest.raises(WireError):
            client.infer([h2o()])


def test_infer_rejects_bad_input() -> None:
    with client_for(Recorder(msgpack_response())) as client, pytest.raises(TypeError):
        client.infer([42])  # type: ignore[list-item]


@pytest.mark.parametrize(("status", "ready"), [(200, True), (503, False)])
def test_ready(status: int, ready: bool) -> None:
    rec = Recorder(httpx.Response(status, json={}))
    with client_for(rec) as client:
        assert client.ready() is ready
    (req,) = rec.requests
    assert req.method == "GET"
    assert req.url.path == "/v2/health/ready"


def test_ready_is_false_when_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with client_for(refuse) as client:
        assert client.ready() is False
