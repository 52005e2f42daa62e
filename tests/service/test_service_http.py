"""``gearsh-serve`` over HTTP against a real process: endpoints, every error status produced by
the bad input itself (and the server still serving afterwards), the Python client, and the
bit-for-bit equality of a lone request with ``Predictor.predict`` (the ``gears_h infer`` path).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest
from ase import Atoms
from serve_testkit import (
    API_KEY,
    AUTH,
    BODY_LIMIT,
    LADDER,
    MAX_ATOMS,
    ServerProcess,
    boron_nitride,
    cif,
    extxyz,
    formaldehyde,
    random_molecule,
    request_body,
    without_timing,
)

from gears_h_core.client import ClientError, GearsHClient, decode
from gears_h_core.io.wire import CONTENT_TYPE, encode_response, encode_result

MSGPACK = CONTENT_TYPE
EXTXYZ = "chemical/x-extxyz"


def assert_serves(server: ServerProcess) -> None:
    """A valid request still gets a valid answer."""
    response = server.infer(request_body([formaldehyde()]))
    assert response.status_code == 200, response.text
    (result,) = decode(response.content)
    assert result.structure.n_atoms == 4


def assert_error(response: httpx.Response, status: int, contains: str = "") -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message
    assert contains.lower() in message.lower(), message
    return str(message)


def _xyz_lines(symbols: list[str], positions: list[list[float]]) -> str:
    lines = [str(len(symbols)), 'Properties=species:S:1:pos:R:3 pbc="F F F"']
    lines += [f"{s} {x} {y} {z}" for s, (x, y, z) in zip(symbols, positions, strict=True)]
    return "\n".join(lines) + "\n"


# -- health and metadata -------------------------------------------------------------------------


def test_health_and_server_metadata(server: ServerProcess) -> None:
    assert server.get("/v2/health/live").status_code == 200
    assert server.get("/v2/health/ready").json() == {"ready": True}
    assert_error(server.get("/v2"), 401, "missing API key")
    meta = server.get("/v2", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert meta["name"] == "gearsh-serve" and meta["models"] == ["tiny-random"]
    assert isinstance(meta["version"], str) and isinstance(meta["extensions"], list)


def test_model_metadata(server: ServerProcess, tiny_bundle: Path) -> None:
    from gears_h_core.io.bundle import FORMAT_VERSION, load_bundle

    bundle = load_bundle(tiny_bundle)
    meta = server.get("/v2/models/tiny-random", headers=AUTH).json()
    assert meta["name"] == "tiny-random" and meta["versions"] == [bundle.version]
    assert meta["platform"] and meta["inputs"][0]["name"] == "structures"
    assert [o["name"] for o in meta["outputs"]] == ["H", "S"]
    assert meta["species"] == [1, 5, 6, 7, 8]
    assert meta["basis"]["6"] == {"shells": [0, 0, 1], "n_orb": 5}
    assert meta["edge_cutoff"] == pytest.approx(3.0)
    assert meta["pair_cutoff"]["1-8"] == pytest.approx(4.0)
    assert meta["sha256"] == bundle.sha256
    assert meta["bundle_format_version"] == FORMAT_VERSION and meta["wire_schema_version"] == 1
    assert meta["limits"]["max_atoms"] == MAX_ATOMS
    assert meta["limits"]["max_body_bytes"] == BODY_LIMIT
    assert meta["limits"]["max_structures_per_batch"] == LADDER["max_graphs"]
    assert len(meta["ladder"]["buckets"]) == 2
    assert server.get("/v2/models/tiny-random/ready").json()["ready"] is True
    assert_error(server.get("/v2/models/other", headers=AUTH), 404, "other")
    assert_error(server.get("/v2/models/other/ready"), 404, "other")
    assert_error(server.get("/v2/models/tiny-random"), 401)


# -- results ---------------------------------------------------------------------------------------


def test_lone_request_is_bit_identical_to_predict(server: ServerProcess, tiny_bundle: Path) -> None:
    """A request computed alone gives the arrays of ``Predictor.predict([structure])``
    (what ``gears_h infer -o x.msgpack`` writes), bit for bit; only ``timing`` differs."""
    from gears_h_core.io.bundle import load_bundle
    from gears_h_core.io.structures import parse_structures
    from gears_h_core.predict import Predictor

    text = extxyz(random_molecule(np.random.default_rng(5), 9))
    (structure,) = parse_structures("extxyz", text)
    predictor = Predictor(load_bundle(tiny_bundle))
    for outputs in (("H", "S"), ("H",)):
        (sh,) = predictor.predict([structure], overlap="S" in outputs)
        expected = encode_response([encode_result(sh, predictor.model_info)])
        from gears_h_core.io.wire import encode_request

        response = server.infer(encode_request([("extxyz", text)], outputs))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == CONTENT_TYPE
        got = without_timing(response.content)
        assert got == without_timing(expected)
        assert (got[0]["overlap"] is None) == (outputs == ("H",))
        timing = msgpack.unpackb(response.content)["results"][0]["timing"]
        assert set(timing) == {"queue_ms", "compute_ms", "serialize_ms"}
        assert all(v >= 0 for v in timing.values())
    assert predictor.compile_count == 1  # the test itself only needed the small bucket


def test_raw_structure_files(server: ServerProcess) -> None:
    frames = [formaldehyde(), boron_nitride(), random_molecule(np.random.default_rng(1), 6)]
    response = server.post("/infer", extxyz(*frames), EXTXYZ, headers=AUTH)
    assert response.status_code == 200, response.text
    results = decode(response.content)
    assert [r.structure.n_atoms for r in results] == [4, 4, 6]
    assert results[1].structure.pbc.tolist() == [True, True, False]
    assert all(r.S is not None for r in results)

    crystal = Atoms(
        "BN", scaled_positions=[[0, 0, 0], [0.25, 0.25, 0.25]], cell=np.eye(3) * 3.6, pbc=True
    )
    response = server.post("/infer", cif(crystal), "chemical/x-cif; charset=utf-8", headers=AUTH)
    assert response.status_code == 200, response.text
    (result,) = decode(response.content)
    assert result.structure.n_atoms == 2 and result.H.n_pairs > 0


def test_python_client(server: ServerProcess) -> None:
    with GearsHClient(server.url, api_key=API_KEY) as client:
        assert client.ready()
        results = client.infer([formaldehyde(), boron_nitride()], outputs=("H",))
        assert [r.structure.n_atoms for r in results] == [4, 4]
        assert all(r.S is None for r in results)
        assert results[0].model.name == "tiny-random"
    with GearsHClient(server.url, api_key="wrong") as client, pytest.raises(ClientError) as err:
        client.infer([formaldehyde()])
    assert err.value.status_code == 401


# -- every error status -------------------------------------------------------------------------


def _msgpack(doc: object) -> bytes:
    return bytes(msgpack.packb(doc, use_bin_type=True))


def _structure(text: str) -> bytes:
    return _msgpack({"structures": [{"format": "extxyz", "data": text}], "outputs": ["H"]})


BAD_REQUESTS = {
    # 400: malformed body / structure text / header
    "not-msgpack": (MSGPACK, b"\xc1\x00", {}, 400, "msgpack"),
    "no-structures": (MSGPACK, _msgpack({"outputs": ["H"]}), {}, 400, "structures"),
    "wrong-type": (MSGPACK, _msgpack({"structures": "H2O"}), {}, 400, "structures"),
    "bad-outputs": (
        MSGPACK,
        _msgpack({"structures": [{"format": "extxyz", "data": "x"}], "outputs": ["S"]}),
        {},
        400,
        "outputs",
    ),
    "garbage-extxyz": (EXTXYZ, b"this is not\nan xyz file\n", {}, 400, "extxyz"),
    "garbage-in-msgpack": (MSGPACK, _structure("3\n\nH 0 0\n"), {}, 400, "structures[0]"),
    "bad-atom-line": (MSGPACK, _structure("1\n\nH 0 0\n"), {}, 400, "structures[0]"),
    "garbage-cif": ("chemical/x-cif", b"data_x\n_cell_length_a foo\nloop_\n", {}, 400, "body"),
    "not-utf8": (EXTXYZ, b"\xff\xfe\x00garbage", {}, 400, "utf-8"),
    "bad-deadline": (
        MSGPACK,
        request_body([formaldehyde()]),
        {"X-Request-Timeout-Ms": "x"},
        400,
        "",
    ),
    # 415: other content types
    "text-plain": ("text/plain", b"1\n\nH 0 0 0\n", {}, 415, "text/plain"),
    "json": ("application/json", b'{"structures": []}', {}, 415, "application/json"),
    # 422: invalid structures
    "unknown-species": (EXTXYZ, _xyz_lines(["U"], [[0, 0, 0]]).encode(), {}, 422, "element 92"),
    "overlap": (
        MSGPACK,
        _structure(_xyz_lines(["H", "H"], [[0, 0, 0], [0, 0, 0.01]])),
        {},
        422,
        "closer than",
    ),
    "nan": (
        EXTXYZ,
        _xyz_lines(["H", "O"], [[0, 0, 0], [float("nan"), 0, 1]]).encode(),
        {},
        422,
        "finite",
    ),
    "singular-cell": (
        EXTXYZ,
        b'1\nLattice="1 0 0 2 0 0 0 0 1" Properties=species:S:1:pos:R:3 pbc="T T T"\nH 0 0 0\n',
        {},
        422,
        "singular",
    ),
    "huge-coordinate": (
        EXTXYZ,
        _xyz_lines(["H", "H"], [[0, 0, 0], [1e12, 0, 0]]).encode(),
        {},
        422,
        "beyond",
    ),
    # 413: a structure over the largest bucket (atoms; and pairs: a dense periodic cell)
    "too-many-atoms": (
        MSGPACK,
        request_body([Atoms("H40", positions=[[1.2 * i, 0, 0] for i in range(40)])]),
        {},
        413,
        "40 atoms",
    ),
    "too-many-pairs": (
        EXTXYZ,
        extxyz(Atoms("H", positions=[[0, 0, 0]], cell=np.eye(3) * 0.6, pbc=True)).encode(),
        {},
        413,
        "pairs",
    ),
    # 504: a deadline that has already passed
    "deadline-zero": (
        MSGPACK,
        request_body([formaldehyde()]),
        {"X-Request-Timeout-Ms": "0"},
        504,
        "",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_status(server: ServerProcess, case: str) -> None:
    content_type, body, headers, status, contains = BAD_REQUESTS[case]
    response = server.post("/infer", body, content_type, headers={**AUTH, **headers})
    assert_error(response, status, contains)
    assert_serves(server)


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}],
    ids=["none", "wrong-x-api-key", "wrong-bearer", "no-scheme"],
)
def test_api_key_required(server: ServerProcess, headers: dict[str, str]) -> None:
    response = server.post("/infer", request_body([formaldehyde()]), MSGPACK, headers=headers)
    assert_error(response, 401, "API key")
    assert response.headers["www-authenticate"].startswith("Bearer")
    ok = server.post(
        "/infer",
        request_body([formaldehyde()]),
        MSGPACK,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert ok.status_code == 200
    # health, readiness and metrics stay open
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/tiny-random/ready", "/metrics"):
        assert server.get(path).status_code == 200, path


def test_body_over_limit_by_content_length(server: ServerProcess) -> None:
    body = b"\x00" * (BODY_LIMIT + 1)
    assert_error(server.post("/infer", body, MSGPACK, headers=AUTH), 413, "limit")
    assert_serves(server)


def test_body_over_limit_while_streaming(server: ServerProcess) -> None:
    """No Content-Length (chunked): counted while reading, refused past the limit."""

    def chunks() -> Iterator[bytes]:
        for _ in range(BODY_LIMIT // 16384 + 4):
            yield b"\x00" * 16384

    response = httpx.post(
        server.url + "/infer",
        content=chunks(),
        headers={**AUTH, "Content-Type": MSGPACK},
        timeout=60,
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "limit")
    assert_serves(server)


def test_unknown_path_and_method(server: ServerProcess) -> None:
    assert_error(server.get("/nothing-here"), 404, "/nothing-here")
    assert_error(server.get("/infer", headers=AUTH), 405, "GET")
    assert_serves(server)


def test_request_metrics(server: ServerProcess) -> None:
    before = server.metric("gearsh_requests_total", '{route="/infer",status="200"}')
    assert_serves(server)
    assert server.metric("gearsh_requests_total", '{route="/infer",status="200"}') == before + 1
    server.post("/infer", b"x", "text/plain", headers=AUTH)
    assert server.metric("gearsh_requests_total", '{route="/infer",status="415"}') >= 1
    assert server.metric("gearsh_queue_seconds_count") > 0
    assert server.metric("gearsh_compute_seconds_count") > 0
    assert server.metric("gearsh_serialize_seconds_count") > 0
    assert server.metric("gearsh_batch_structures_count") > 0
    assert server.metric("gearsh_padding_efficiency_count", '{kind="atoms"}') > 0
    assert server.metric("gearsh_compilations") == 2
    assert server.metric("gearsh_in_flight_requests") == 0
    assert server.metric("gearsh_queue_depth") == 0
    assert server.metric("gearsh_ready") == 1
