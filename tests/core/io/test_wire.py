"""Wire format (SPEC §7, §8): bit-exact round trips, deterministic bytes, hostile input."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gears_h_core.basis.orbitals import OrbitalBasis
from gears_h_core.io import wire
from gears_h_core.io.wire import (
    ALLOWED_DTYPES,
    SCHEMA_VERSION,
    InferRequest,
    ModelInfo,
    PayloadTooLargeError,
    Timing,
    WireError,
    decode_array,
    decode_request,
    decode_response,
    encode_array,
    encode_request,
    encode_response,
    encode_result,
)
from gears_h_core.structure import Structure
from gears_h_core.types import BlockMatrix, HoppingGroup, OnsiteGroup, SparseHamiltonian

W, SE, H_ = 74, 34, 1
# 13 and 5 orbitals; hydrogen is in the model basis but not in the structure.
BASIS = OrbitalBasis({W: (0, 0, 1, 1, 2), SE: (0, 0, 1), H_: (0,)})
MODEL = ModelInfo(name="tiny", version="0.1.0", sha256="ab" * 32)
TIMING = Timing(queue_ms=0.25, compute_ms=12.5, serialize_ms=1.0 / 3.0)


def _blocks(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    out = rng.standard_normal(shape).astype(np.float32)
    if out.size >= 3:  # values that only a bit-exact format keeps
        flat = out.reshape(-1)
        flat[0] = -0.0
        flat[1] = np.float32(1e-45)  # subnormal
        flat[2] = np.nan
    return out


def _operator(rng: np.random.Generator) -> BlockMatrix:
    n = BASIS.n_orb
    i32 = np.int32
    onsite = (
        OnsiteGroup(W, np.array([0, 3], i32), _blocks(rng, (2, n(W), n(W)))),
        OnsiteGroup(SE, np.array([1, 2], i32), _blocks(rng, (2, n(SE), n(SE)))),
    )
    hopping = (
        # periodic self-images (i == j, shift != 0) and one W-W pair in the home cell
        HoppingGroup(
            W,
            W,
            np.array([0, 0, 3, 0], i32),
            np.array([0, 0, 3, 3], i32),
            np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, 0, 0]], i32),
            _blocks(rng, (4, n(W), n(W))),
        ),
        HoppingGroup(
            W,
            SE,
            np.array([0, 3], i32),
            np.array([1, 2], i32),
            np.array([[0, 0, 0], [1, -1, 0]], i32),
            _blocks(rng, (2, n(W), n(SE))),
        ),
        HoppingGroup(
            SE,
            W,
            np.array([1, 2, 2], i32),
            np.array([0, 3, 0], i32),
            np.array([[0, 0, 0], [-1, 1, 0], [0, 0, 0]], i32),
            _blocks(rng, (3, n(SE), n(W))),
        ),
        HoppingGroup(  # an empty group
            SE,
            SE,
            np.zeros(0, i32),
            np.zeros(0, i32),
            np.zeros((0, 3), i32),
            np.zeros((0, n(SE), n(SE)), np.float32),
        ),
    )
    return BlockMatrix(onsite=onsite, hopping=hopping)


def make_hamiltonian(with_s: bool = True, seed: int = 0) -> SparseHamiltonian:
    """Two species with ragged bases (13 and 5 orbitals), periodic in-plane."""
    rng = np.random.default_rng(seed)
    structure = Structure.from_arrays(
        [W, SE, SE, W],
        rng.uniform(0.0, 3.0, (4, 3)),
        [[3.2, 0.0, 0.0], [-1.6, 2.77, 0.0], [0.0, 0.0, 20.0]],
        [True, True, False],
        validate=False,
    )
    return SparseHamiltonian(
        structure=structure,
        basis=BASIS,
        H=_operator(rng),
        S=_operator(rng) if with_s else None,
    )


def encode_one(sh: SparseHamiltonian, timing: Timing | None = TIMING) -> bytes:
    return encode_response([encode_result(sh, MODEL, timing)])


def assert_bit_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    assert a.tobytes() == b.tobytes()
    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def assert_operator_equal(a: BlockMatrix, b: BlockMatrix) -> None:
    assert len(a.onsite) == len(b.onsite)
    for ga, gb in zip(a.onsite, b.onsite, strict=True):
        assert ga.z == gb.z
        assert_bit_equal(ga.atoms, gb.atoms)
        assert_bit_equal(ga.blocks, gb.blocks)
    assert len(a.hopping) == len(b.hopping)
    for ha, hb in zip(a.hopping, b.hopping, strict=True):
        assert (ha.z_i, ha.z_j) == (hb.z_i, hb.z_j)
        for name in ("i", "j", "shift", "blocks"):
            assert_bit_equal(getattr(ha, name), getattr(hb, name))


def unpacked(sh: SparseHamiltonian | None = None) -> dict[str, Any]:
    """A valid response as plain Python objects, for tests that tamper with it."""
    data = encode_one(sh if sh is not None else make_hamiltonian())
    return msgpack.unpackb(data, raw=False)  # type: ignore[no-any-return]


def repack(doc: Any) -> bytes:
    return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# round trip and determinism


@pytest.mark.parametrize("with_s", [True, False])
def test_round_trip_is_bit_exact(with_s: bool) -> None:
    sh = make_hamiltonian(with_s)
    (res,) = decode_response(encode_one(sh))

    assert res.model == MODEL
    assert res.timing == TIMING
    st_in, st_out = sh.structure, res.structure
    for name in ("numbers", "positions", "cell", "pbc"):
        assert_bit_equal(getattr(st_in, name), getattr(st_out, name))
    assert res.basis.shells == {W: BASIS.shells[W], SE: BASIS.shells[SE]}
    assert_operator_equal(sh.H, res.H)
    if with_s:
        assert sh.S is not None and res.S is not None
        assert_operator_equal(sh.S, res.S)
    else:
        assert res.S is None


def test_self_image_rows_survive() -> None:
    (res,) = decode_response(encode_one(make_hamiltonian()))
    ww = res.H.hopping[0]
    self_image = (ww.i == ww.j) & np.any(ww.shift != 0, axis=1)
    assert int(self_image.sum()) == 3


@pytest.mark.parametrize("with_s", [True, False])
def test_same_input_gives_same_bytes(with_s: bool) -> None:
    first = encode_one(make_hamiltonian(with_s))
    second = encode_one(make_hamiltonian(with_s))
    assert first == second
    # decode -> encode reproduces the bytes exactly
    (res,) = decode_response(first)
    assert encode_response([encode_result(res.hamiltonian, res.model, res.timing)]) == first


def test_document_layout() -> None:
    doc = unpacked()
    assert list(doc) == ["schema_version", "results"]
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    result = doc["results"][0]
    assert list(result) == [
        "schema_version",
        "model",
        "units",
        "basis",
        "orbital_offsets",
        "atoms",
        "onsite",
        "hopping",
        "overlap",
        "timing",
    ]
    assert result["model"] == {"name": "tiny", "version": "0.1.0", "sha256": "ab" * 32}
    assert result["units"] == {"H": "eV", "S": "1", "length": "angstrom"}
    assert result["basis"] == {
        "34": {"shells": [0, 0, 1], "n_orb": 5},
        "74": {"shells": [0, 0, 1, 1, 2], "n_orb": 13},
    }
    assert result["orbital_offsets"]["dtype"] == "<i8"
    assert decode_array(result["orbital_offsets"]).tolist() == [0, 13, 18, 23, 36]
    assert [result["atoms"][k]["dtype"] for k in ("numbers", "positions", "cell", "pbc")] == [
        "<i4",
        "<f8",
        "<f8",
        "|b1",
    ]
    assert list(result["onsite"][0]) == ["z", "atoms", "blocks"]
    assert result["onsite"][0]["blocks"]["shape"] == [2, 13, 13]
    hop = result["hopping"][1]
    assert list(hop) == ["z_i", "z_j", "i", "j", "shift", "blocks"]
    assert [hop[k]["dtype"] for k in ("i", "j", "shift", "blocks")] == ["<i4"] * 3 + ["<f4"]
    assert hop["blocks"]["shape"] == [2, 13, 5]
    assert list(result["overlap"]) == ["onsite", "hopping"]
    assert list(result["timing"]) == ["queue_ms", "compute_ms", "serialize_ms"]


def test_no_overlap_and_no_timing_are_nil() -> None:
    data = encode_one(make_hamiltonian(with_s=False), timing=None)
    result = msgpack.unpackb(data, raw=False)["results"][0]
    assert result["overlap"] is None
    assert result["timing"] is None
    (res,) = decode_response(data)
    assert res.S is None and res.timing is None


def test_several_results_keep_order() -> None:
    docs = [encode_result(make_hamiltonian(seed=s), MODEL, TIMING) for s in range(3)]
    out = decode_response(encode_response(docs))
    assert len(out) == 3
    for s, res in enumerate(out):
        assert_operator_equal(make_hamiltonian(seed=s).H, res.H)


def test_encoder_casts_blocks_to_float32() -> None:
    sh = make_hamiltonian(with_s=False)
    g = sh.H.onsite[0]
    wide = OnsiteGroup(g.z, g.atoms.astype(np.int64), g.blocks.astype(np.float64))
    sh64 = SparseHamiltonian(
        sh.structure, sh.basis, BlockMatrix((wide, *sh.H.onsite[1:]), sh.H.hopping)
    )
    (res,) = decode_response(encode_one(sh64))
    assert res.H.onsite[0].blocks.dtype == np.float32
    assert res.H.onsite[0].atoms.dtype == np.int32
    assert encode_one(sh64) == encode_one(sh)


# --------------------------------------------------------------------------------------------
# arrays


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(ALLOWED_DTYPES).map(np.dtype),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    )
)
def test_array_round_trip_property(a: np.ndarray) -> None:
    packed = repack(encode_array(a))
    b = decode_array(msgpack.unpackb(packed, raw=False))
    assert b.flags.writeable and b.flags.c_contiguous
    assert_bit_equal(a, b)


@given(
    hnp.arrays(
        dtype=st.sampled_from([">f4", ">f8", ">i4", ">i8"]).map(np.dtype),
        shape=hnp.array_shapes(max_dims=3, max_side=4),
    )
)
def test_big_endian_is_written_little_endian(a: np.ndarray) -> None:
    enc = encode_array(a)
    assert enc["dtype"].startswith("<")
    b = decode_array(enc)
    assert np.array_equal(a, b, equal_nan=True)


def test_non_contiguous_input_is_written_in_c_order() -> None:
    a = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2].T
    assert_bit_equal(np.ascontiguousarray(a), decode_array(encode_array(a)))


@pytest.mark.parametrize("dtype", [np.float16, np.complex64, np.uint16, object, "<U3"])
def test_encode_rejects_other_dtypes(dtype: Any) -> None:
    with pytest.raises(WireError, match=r"x\.y: dtype .* is not one of"):
        encode_array(np.zeros(2, dtype=dtype), path="x.y")


@pytest.mark.parametrize("dt", [">f4", "<f2", "float32", "f4", "O", "<U1", "<c8", 4, None])
def test_decode_rejects_wrong_dtype_string(dt: Any) -> None:
    obj = {"dtype": dt, "shape": [1], "data": b"\0\0\0\0"}
    with pytest.raises(WireError, match=r"^a\.b\.dtype: .* is not one of"):
        decode_array(obj, path="a.b")


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"dtype": "<f4", "shape": [2]}, r"^arr\.data: missing$"),
        ({"dtype": "<f4", "shape": [1], "data": b"abcd", "x": 1}, r"unknown key"),
        ({"dtype": "<f4", "shape": 1, "data": b"abcd"}, r"^arr\.shape: expected a list"),
        ({"dtype": "<f4", "shape": [-1], "data": b"abcd"}, r"^arr\.shape: expected a list"),
        ({"dtype": "<f4", "shape": [True], "data": b"abcd"}, r"^arr\.shape: expected a list"),
        ({"dtype": "<f4", "shape": [1.0], "data": b"abcd"}, r"^arr\.shape: expected a list"),
        ({"dtype": "<f4", "shape": [1] * 33, "data": b"abcd"}, r"^arr\.shape: expected a list"),
        ({"dtype": "<f4", "shape": [1], "data": "abcd"}, r"^arr\.data: expected bin"),
        ({"dtype": "<f4", "shape": [2], "data": b"abcd"}, r"^arr: data has 4 bytes, shape \[2\]"),
        ({"dtype": "<f4", "shape": [0, 2**63], "data": b""}, r"^arr\.shape: .* cannot be"),
        ({"dtype": "|b1", "shape": [2], "data": b"\x01\x02"}, r"^arr\.data: boolean bytes"),
        ([1, 2], r"^arr: expected a map, got list"),
    ],
)
def test_decode_array_rejects(obj: Any, match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode_array(obj, path="arr")


def test_decode_array_checks_expected_dtype_and_shape() -> None:
    enc = encode_array(np.zeros((2, 3), np.float32))
    with pytest.raises(WireError, match=r"^p\.dtype: expected <f8, got <f4$"):
        decode_array(enc, path="p", dtype="<f8")
    with pytest.raises(WireError, match=r"^p\.shape: expected \[\*,4\], got \[2,3\]$"):
        decode_array(enc, path="p", shape=[None, 4])
    assert decode_array(enc, path="p", dtype="<f4", shape=[None, 3]).shape == (2, 3)


# --------------------------------------------------------------------------------------------
# hostile and malformed payloads


def test_shape_data_mismatch_names_the_path() -> None:
    doc = unpacked()
    doc["results"][0]["hopping"][2]["blocks"] = {
        "dtype": "<f4",
        "shape": [3, 4, 4],
        "data": b"\0" * 100,
    }
    with pytest.raises(WireError) as info:
        decode_response(repack(doc))
    assert str(info.value) == (
        "results[0].hopping[2].blocks: data has 100 bytes, shape [3,4,4] <f4 needs 192"
    )


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _arr(a: Any, dtype: str) -> dict[str, Any]:
    return encode_array(np.asarray(a, dtype=dtype))


R = ("results", 0)


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("schema_version",), 2, r"^schema_version: expected 1, got 2$"),
        ((*R, "schema_version"), True, r"^results\[0\]\.schema_version: expected 1"),
        (("results",), {}, r"^results: expected a list, got dict$"),
        ((*R,), [], r"^results\[0\]: expected a map, got list$"),
        ((*R, "model", "name"), 5, r"^results\[0\]\.model\.name: expected a string, got int$"),
        ((*R, "units", "H"), "Ha", r"^results\[0\]\.units\.H: expected 'eV', got 'Ha'$"),
        ((*R, "basis", "74", "n_orb"), 12, r"^results\[0\]\.basis\.74\.n_orb: 12 does not match"),
        ((*R, "basis", "74", "shells"), [0, 4], r"^results\[0\]\.basis\.74: basis: element 74"),
        (
            (*R, "basis", "74", "shells"),
            "spd",
            r"^results\[0\]\.basis\.74\.shells: expected a list",
        ),
        ((*R, "basis", "074"), {"shells": [0], "n_orb": 1}, r"^results\[0\]\.basis: species key"),
        ((*R, "basis", "W"), {"shells": [0], "n_orb": 1}, r"^results\[0\]\.basis: species key"),
        ((*R, "basis", "0"), {"shells": [0], "n_orb": 1}, r"invalid atomic number"),
        (
            (*R, "atoms", "numbers"),
            _arr([74, 34, 34, 8], "<i4"),
            r"no basis for element\(s\) \[8\]",
        ),
        (
            (*R, "atoms", "numbers"),
            _arr([], "<i4"),
            r"^results\[0\]\.atoms\.numbers: structure has no atoms",
        ),
        (
            (*R, "atoms", "numbers"),
            _arr([74, 34, 34, 74], "<i8"),
            r"^results\[0\]\.atoms\.numbers\.dtype: expected <i4",
        ),
        (
            (*R, "atoms", "positions"),
            _arr(np.zeros((3, 3)), "<f8"),
            r"^results\[0\]\.atoms\.positions\.shape: expected \[4,3\]",
        ),
        (
            (*R, "atoms", "pbc"),
            _arr([1, 1, 0], "|u1"),
            r"^results\[0\]\.atoms\.pbc\.dtype: expected \|b1",
        ),
        (
            (*R, "orbital_offsets"),
            _arr([0, 13, 18, 23, 37], "<i8"),
            r"^results\[0\]\.orbital_offsets: inconsistent",
        ),
        ((*R, "onsite"), {}, r"^results\[0\]\.onsite: expected a list, got dict$"),
        (
            (*R, "onsite", 0, "z"),
            34,
            r"^results\[0\]\.onsite\[0\]\.atoms\[0\]: atom 0 is element 74, the group is element 34$",
        ),
        (
            (*R, "onsite", 0, "z"),
            1.0,
            r"^results\[0\]\.onsite\[0\]\.z: expected an int, got float$",
        ),
        (
            (*R, "onsite", 0, "z"),
            26,
            r"^results\[0\]\.onsite\[0\]\.z: element 26 is not in the basis$",
        ),
        (
            (*R, "onsite", 0, "blocks"),
            _arr(np.zeros((2, 5, 5)), "<f4"),
            r"^results\[0\]\.onsite\[0\]\.blocks\.shape: expected \[2,13,13\], got \[2,5,5\]$",
        ),
        (
            (*R, "onsite", 0, "blocks"),
            _arr(np.zeros((2, 13, 13)), "<f8"),
            r"^results\[0\]\.onsite\[0\]\.blocks\.dtype: expected <f4, got <f8$",
        ),
        (
            (*R, "onsite", 1, "atoms"),
            _arr([0, 1], "<i4"),
            r"^results\[0\]\.onsite\[1\]\.atoms\[0\]: atom 0 is element 74",
        ),
        (
            (*R, "hopping", 1, "j"),
            _arr([7, 2], "<i4"),
            r"^results\[0\]\.hopping\[1\]\.j\[0\]: atom index 7 out of range \[0, 4\)$",
        ),
        (
            (*R, "hopping", 1, "i"),
            _arr([0, -1], "<i4"),
            r"^results\[0\]\.hopping\[1\]\.i\[1\]: atom index -1 out of range",
        ),
        (
            (*R, "hopping", 1, "j"),
            _arr([1], "<i4"),
            r"^results\[0\]\.hopping\[1\]\.j\.shape: expected \[2\], got \[1\]$",
        ),
        (
            (*R, "hopping", 1, "shift"),
            _arr([[0, 0, 1], [0, 0, 0]], "<i4"),
            r"^results\[0\]\.hopping\[1\]\.shift\[0\]: nonzero shift \[0, 0, 1\] along a non-periodic axis$",
        ),
        (
            (*R, "hopping", 1, "shift"),
            _arr([[0, 0, 0]], "<i4"),
            r"^results\[0\]\.hopping\[1\]\.shift\.shape: expected \[2,3\], got \[1,3\]$",
        ),
        (
            (*R, "hopping", 1, "blocks"),
            _arr(np.zeros((2, 5, 13)), "<f4"),
            r"^results\[0\]\.hopping\[1\]\.blocks\.shape: expected \[2,13,5\], got \[2,5,13\]$",
        ),
        (
            (*R, "hopping", 0, "shift"),
            _arr([[0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, 0, 0]], "<i4"),
            r"^results\[0\]\.hopping\[0\]: pair 0 is the on-site pair \(0, 0, \[0, 0, 0\]\)$",
        ),
        (
            (*R, "hopping", 0, "shift"),
            _arr([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], "<i4"),
            r"^results\[0\]\.hopping: a pair \(i, j, shift\) appears more than once$",
        ),
        (
            (*R, "onsite", 1, "atoms"),
            _arr([1, 1], "<i4"),
            r"^results\[0\]\.onsite: an atom appears in more than one block$",
        ),
        ((*R, "overlap"), [], r"^results\[0\]\.overlap: expected a map, got list$"),
        (
            (*R, "overlap", "hopping", 0, "i"),
            _arr([0, 0, 3, 9], "<i4"),
            r"^results\[0\]\.overlap\.hopping\[0\]\.i\[3\]: atom index 9 out of range",
        ),
        (
            (*R, "overlap", "onsite", 0, "blocks"),
            _arr(np.zeros((2, 13, 5)), "<f4"),
            r"^results\[0\]\.overlap\.onsite\[0\]\.blocks\.shape: expected \[2,13,13\]",
        ),
        (
            (*R, "timing", "queue_ms"),
            "1",
            r"^results\[0\]\.timing\.queue_ms: expected a number, got str$",
        ),
        ((*R, "timing"), 3.0, r"^results\[0\]\.timing: expected a map, got float$"),
        ((*R, "extra"), 1, r"^results\[0\]: unknown key\(s\) 'extra'$"),
    ],
)
def test_malformed_document_names_the_path(path: tuple[Any, ...], value: Any, match: str) -> None:
    doc = unpacked()
    _set(doc, path, value)
    with pytest.raises(WireError, match=match):
        decode_response(repack(doc))


@pytest.mark.parametrize(
    "path",
    [
        ("schema_version",),
        (*R, "units"),
        (*R, "timing"),
        (*R, "overlap"),
        (*R, "atoms", "cell"),
        (*R, "hopping", 2, "shift"),
        (*R, "onsite", 1, "blocks", "data"),
    ],
)
def test_missing_key_names_the_path(path: tuple[Any, ...]) -> None:
    doc = unpacked()
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    prefix = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
    with pytest.raises(
        WireError, match=rf"^{prefix.replace('[', r'\[').replace(']', r'\]')}: missing$"
    ):
        decode_response(repack(doc))


def test_oversized_payload_is_rejected_before_unpacking(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpackb must not run on an oversized payload")

    data = encode_one(make_hamiltonian())
    monkeypatch.setattr(wire.msgpack, "unpackb", boom)
    with pytest.raises(PayloadTooLargeError, match=r"over the limit of 100"):
        decode_response(data, max_bytes=100)
    with pytest.raises(PayloadTooLargeError):
        decode_request(encode_request([("extxyz", "x" * 200)]), max_bytes=100)


def test_default_request_limit_is_64_mib() -> None:
    assert wire.DEFAULT_MAX_REQUEST_BYTES == 64 * 1024 * 1024
    with pytest.raises(PayloadTooLargeError):
        decode_request(memoryview(bytearray(64 * 1024 * 1024 + 1)))


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\xdd\xff\xff\xff\xff\xc0", r"exceeds max_array_len"),  # array32, 4e9 items
        (b"\xdf\xff\xff\xff\xff\xa1a\xc0", r"exceeds max_map_len"),  # map32, 4e9 entries
        (b"\xc6\xff\xff\xff\xffabc", r"not valid msgpack"),  # bin32, 4 GiB
        (b"\xdb\xff\xff\xff\xffabc", r"not valid msgpack"),  # str32, 4 GiB
        (b"\x91" * 5000 + b"\xc0", r"nested too deeply"),
        (b"", r"payload: empty"),
        (b"\xc1", r"not valid msgpack"),
        (repack({"a": 1}) + b"\x00", r"not valid msgpack"),  # trailing data
        (repack({1: 2}), r"not valid msgpack"),  # non-string map key
    ],
)
def test_hostile_msgpack_is_rejected(payload: bytes, match: str) -> None:
    for decode in (decode_response, decode_request):
        with pytest.raises(WireError, match=match):
            decode(payload)


@pytest.mark.parametrize("ext", [msgpack.ExtType(5, b"abc"), msgpack.Timestamp(1, 0)])
def test_ext_types_are_rejected(ext: Any) -> None:
    doc = unpacked()
    doc["results"][0]["timing"]["queue_ms"] = ext
    with pytest.raises(WireError, match=r"ext types are not allowed"):
        decode_response(repack(doc))
    with pytest.raises(WireError, match=r"ext types are not allowed"):
        decode_request(repack({"structures": [{"format": "extxyz", "data": ext}]}))


def test_non_bytes_payload_is_a_wire_error() -> None:
    with pytest.raises(WireError, match=r"expected bytes"):
        decode_response("not bytes")  # type: ignore[arg-type]


_VALID = encode_one(make_hamiltonian())
_VALID_REQUEST = encode_request([("extxyz", "1\n\nH 0 0 0\n"), ("cif", "data_x\n")], ("H", "S"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    for decode in (decode_response, decode_request):
        try:
            decode(data)
        except WireError:
            pass


def test_every_truncation_raises_wire_error() -> None:
    for payload, decode in ((_VALID, decode_response), (_VALID_REQUEST, decode_request)):
        step = max(1, len(payload) // 2000)
        for cut in range(0, len(payload), step):
            with pytest.raises(WireError):
                decode(payload[:cut])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_flipped_bytes_raise_only_wire_error(data: st.DataObject) -> None:
    buf = bytearray(_VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    try:
        decode_response(bytes(buf))
    except WireError:
        pass


_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=64)
    | st.sampled_from(["<f4", "<i4", "|b1", "74", "H", "extxyz"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for k, v in enumerate(obj):
            out += _paths(v, (*prefix, k))
    return out


_VALID_DOC = msgpack.unpackb(_VALID, raw=False)
_VALID_PATHS = _paths(_VALID_DOC)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(_VALID_PATHS), value=_msgpack_values, delete=st.booleans())
def test_mutated_documents_raise_only_wire_error(
    path: tuple[Any, ...], value: Any, delete: bool
) -> None:
    doc = copy.deepcopy(_VALID_DOC)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    try:
        decode_response(repack(doc))
    except WireError:
        pass


_VALID_REQUEST_DOC = msgpack.unpackb(_VALID_REQUEST, raw=False)


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(_paths(_VALID_REQUEST_DOC)), value=_msgpack_values)
def test_mutated_requests_raise_only_wire_error(path: tuple[Any, ...], value: Any) -> None:
    doc = copy.deepcopy(_VALID_REQUEST_DOC)
    _set(doc, path, value)
    try:
        decode_request(repack(doc))
    except WireError:
        pass


# --------------------------------------------------------------------------------------------
# requests


def test_request_round_trip() -> None:
    structures = [("extxyz", "2\n\nH 0 0 0\nH 0 0 0.74\n"), ("cif", "data_x\n_cell_length_a 3\n")]
    data = encode_request(structures, outputs=("H",))
    assert msgpack.unpackb(data, raw=False) == {
        "structures": [{"format": f, "data": t} for f, t in structures],
        "outputs": ["H"],
    }
    assert decode_request(data) == InferRequest(structures=tuple(structures), outputs=("H",))
    assert encode_request(structures, outputs=("H",)) == data


def test_request_outputs_canonical_order_and_default() -> None:
    body = {"structures": [{"format": "extxyz", "data": "x"}], "outputs": ["S", "H"]}
    assert decode_request(repack(body)).outputs == ("H", "S")
    del body["outputs"]
    assert decode_request(repack(body)).outputs == ("H", "S")
    body["schema_version"] = 1
    assert decode_request(repack(body)).structures == (("extxyz", "x"),)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], r"^request: expected a map, got list$"),
        ({"outputs": ["H"]}, r"^structures: missing$"),
        ({"structures": []}, r"^structures: expected a non-empty list"),
        (
            {"structures": [{"format": "pdb", "data": "x"}]},
            r"^structures\[0\]\.format: 'pdb' is not one of extxyz, cif$",
        ),
        ({"structures": [{"format": "cif"}]}, r"^structures\[0\]\.data: missing$"),
        (
            {"structures": [{"format": "cif", "data": b"x"}]},
            r"^structures\[0\]\.data: expected a string, got bytes$",
        ),
        ({"structures": [{"format": "cif", "data": " \n"}]}, r"^structures\[0\]\.data: is empty$"),
        (
            {"structures": [{"format": "cif", "data": "x", "name": "a"}]},
            r"^structures\[0\]: unknown key",
        ),
        (
            {"structures": [{"format": "cif", "data": "x"}], "outputs": []},
            r"^outputs: expected distinct",
        ),
        (
            {"structures": [{"format": "cif", "data": "x"}], "outputs": ["S"]},
            r"^outputs: must include 'H'$",
        ),
        (
            {"structures": [{"format": "cif", "data": "x"}], "outputs": ["H", "X"]},
            r"^outputs: expected distinct",
        ),
        (
            {"structures": [{"format": "cif", "data": "x"}], "outputs": ["H", "H"]},
            r"^outputs: expected distinct",
        ),
        (
            {"structures": [{"format": "cif", "data": "x"}], "outputs": "H"},
            r"^outputs: expected distinct",
        ),
        (
            {"structures": [{"format": "cif", "data": "x"}], "schema_version": 2},
            r"^schema_version: expected 1",
        ),
        (
            {"structures": [{"format": "cif", "data": "x"}], "model": "m"},
            r"^request: unknown key\(s\) 'model'$",
        ),
    ],
)
def test_malformed_request_is_rejected(body: Any, match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode_request(repack(body))


def test_encode_request_validates() -> None:
    with pytest.raises(WireError, match=r"format"):
        encode_request([("xyz", "1\n\nH 0 0 0\n")])
    with pytest.raises(WireError, match=r"outputs"):
        encode_request([("extxyz", "1\n\nH 0 0 0\n")], outputs=("S",))


# --------------------------------------------------------------------------------------------
# content types


def test_content_types() -> None:
    assert wire.CONTENT_TYPE == "application/vnd.msgpack"
    assert wire.ACCEPTED_CONTENT_TYPES == {
        "application/vnd.msgpack",
        "application/x-msgpack",
        "application/msgpack",
    }
    assert wire.is_msgpack_content_type("application/x-msgpack")
    assert wire.is_msgpack_content_type("Application/MsgPack; charset=binary")
    assert not wire.is_msgpack_content_type("application/json")
    assert not wire.is_msgpack_content_type(None)


def test_encode_result_needs_a_basis_for_every_species() -> None:
    sh = make_hamiltonian()
    partial = SparseHamiltonian(sh.structure, OrbitalBasis({W: BASIS.shells[W]}), sh.H, sh.S)
    with pytest.raises(WireError, match=r"^basis: "):
        encode_result(partial, MODEL, None)
