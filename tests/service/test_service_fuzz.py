"""Malformed payloads (hypothesis) never get a 5xx and never take the server down."""

from __future__ import annotations

import httpx
import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_testkit import AUTH, ServerProcess, extxyz, formaldehyde, request_body

from gears_h_core.client import decode

ALLOWED = {200, 400, 413, 415, 422}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

# msgpack headers that declare huge lengths (str32, bin32, array32, map32, ext32)
HUGE_HEADERS = [
    b"\xdb\xff\xff\xff\xff",
    b"\xc6\xff\xff\xff\xff",
    b"\xdd\xff\xff\xff\xff",
    b"\xdf\xff\xff\xff\xff",
    b"\xc9\xff\xff\xff\xff\x01",
    b"\x81\xaastructures\xdd\x7f\xff\xff\xff",
    b"\x81\xaastructures\x91\x82\xa6format\xa6extxyz\xa4data\xdb\x7f\xff\xff\xff",
]

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
structure_items = st.fixed_dictionaries(
    {"format": st.sampled_from(["extxyz", "cif", "xyz", ""]), "data": st.text(max_size=200)}
)
requests = st.fixed_dictionaries(
    {"structures": st.one_of(st.lists(structure_items, max_size=3), msgpack_values)},
    optional={
        "outputs": st.one_of(st.lists(st.sampled_from(["H", "S", "X"]), max_size=3), msgpack_values)
    },
)
VALID = request_body([formaldehyde()])

number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.sampled_from(["1e308", "-1e15", "nan", "inf", "0x10", "", "1,5"]),
)
xyz_line = st.tuples(
    st.sampled_from(["H", "C", "O", "B", "N", "U", "Xx", "", "1"]), number, number, number
).map(lambda t: " ".join(str(v) for v in t))
garbage_extxyz = st.builds(
    lambda n, comment, lines: f"{n}\n{comment}\n" + "\n".join(lines) + "\n",
    st.one_of(st.integers(-2, 6), st.sampled_from(["999999999999", "x", ""])),
    st.one_of(
        st.text(max_size=40).map(lambda s: s.replace("\n", " ")),
        st.sampled_from(
            ['Lattice="0 0 0 0 0 0 0 0 0" pbc="T T T"', 'Lattice="1 2" pbc="T"', 'pbc="T T T"']
        ),
    ),
    st.lists(xyz_line, max_size=6),
)
cif_line = st.one_of(
    st.sampled_from(
        [
            "data_x",
            "loop_",
            "_atom_site_label",
            "_atom_site_fract_x",
            "_symmetry_space_group_name_H-M 'P 1'",
        ]
    ),
    st.builds(
        lambda k, v: f"_cell_{k} {v}",
        st.sampled_from(["length_a", "length_b", "length_c", "angle_alpha", "angle_gamma"]),
        number,
    ),
    st.text(max_size=30).map(lambda s: s.replace("\n", " ")),
)
garbage_cif = st.lists(cif_line, max_size=14).map(lambda lines: "\n".join(lines) + "\n")


def _post(server: ServerProcess, body: bytes, content_type: str) -> httpx.Response:
    response = server.post("/infer", body, content_type, headers=AUTH, timeout=15)
    assert response.status_code in ALLOWED, (response.status_code, response.text, body[:200])
    if response.status_code != 200:
        assert "\n" not in response.json()["error"]
    return response


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(server: ServerProcess, data: bytes) -> None:
    _post(server, data, "application/vnd.msgpack")


@FUZZ
@given(cut=st.integers(0, len(VALID) - 1), flip=st.integers(0, 255))
def test_truncated_and_corrupted_msgpack(server: ServerProcess, cut: int, flip: int) -> None:
    _post(server, VALID[:cut], "application/msgpack")
    corrupted = bytearray(VALID)
    corrupted[cut] ^= flip
    _post(server, bytes(corrupted), "application/x-msgpack")


@FUZZ
@given(doc=st.one_of(requests, msgpack_values))
def test_wrong_types(server: ServerProcess, doc: object) -> None:
    try:
        body = msgpack.packb(doc, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    _post(server, body, "application/vnd.msgpack")


@FUZZ
@given(header=st.sampled_from(HUGE_HEADERS), tail=st.binary(max_size=64))
def test_huge_declared_lengths(server: ServerProcess, header: bytes, tail: bytes) -> None:
    _post(server, header + tail, "application/vnd.msgpack")


@FUZZ
@given(text=garbage_extxyz, as_msgpack=st.booleans())
def test_garbage_extxyz(server: ServerProcess, text: str, as_msgpack: bool) -> None:
    if as_msgpack:
        body = msgpack.packb({"structures": [{"format": "extxyz", "data": text}]})
        _post(server, body, "application/vnd.msgpack")
    else:
        _post(server, text.encode(), "chemical/x-extxyz")


@FUZZ
@given(text=garbage_cif)
def test_garbage_cif(server: ServerProcess, text: str) -> None:
    _post(server, text.encode(), "chemical/x-cif")


def test_still_serving_after_fuzzing(server: ServerProcess) -> None:
    assert server.proc.poll() is None, server.log()
    assert server.get("/v2/health/ready").status_code == 200
    response = server.post("/infer", extxyz(formaldehyde()), "chemical/x-extxyz", headers=AUTH)
    assert response.status_code == 200
    assert decode(response.content)[0].structure.n_atoms == 4
    assert server.metric("gearsh_compilations") == 2
