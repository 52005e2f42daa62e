"""Wire format (SPEC §7, §8): msgpack documents for inference requests and results.

Everything that crosses a process boundary — ``POST /infer``, gRPC, ``gears_h infer -o
x.msgpack`` — is one of the two documents below, packed with plain msgpack (``bin`` for
bytes, no ext types, no pickle, no msgpack-numpy). ``SCHEMA_VERSION`` versions the result
layout.

Arrays
------
Every array is a map ``{"dtype": str, "shape": [int, ...], "data": bin}``: the raw bytes in
C order, little-endian. ``dtype`` is one of `ALLOWED_DTYPES` exactly as numpy spells it
(``"<f4"``, ``"<f8"``, ``"<i4"``, ``"<i8"``, ``"|u1"``, ``"|b1"``; booleans are one byte,
0 or 1).

Response (server → client)
--------------------------
::

    {"schema_version": 1, "results": [result, ...]}          # one result per structure

    result = {
      "schema_version": 1,
      "model":  {"name": str, "version": str, "sha256": str},
      "units":  {"H": "eV", "S": "1", "length": "angstrom"},
      "basis":  {"<Z>": {"shells": [l, ...], "n_orb": int}, ...},   # species of the structure
      "orbital_offsets": array <i8 [n_atoms + 1],
      "atoms":  {"numbers": <i4 [n_atoms], "positions": <f8 [n_atoms, 3],
                 "cell": <f8 [3, 3], "pbc": |b1 [3]},
      "onsite":  [{"z": int, "atoms": <i4 [n], "blocks": <f4 [n, n_orb, n_orb]}, ...],
      "hopping": [{"z_i": int, "z_j": int, "i": <i4 [P], "j": <i4 [P],
                   "shift": <i4 [P, 3], "blocks": <f4 [P, n_orb_i, n_orb_j]}, ...],
      "overlap": {"onsite": [...], "hopping": [...]} | nil,   # S, nil when not predicted
      "timing":  {"queue_ms": float, "compute_ms": float, "serialize_ms": float} | nil,
    }

``onsite``/``hopping`` at the top level are the Hamiltonian H (eV). A hopping block
``H_ij(T)`` couples atom ``i`` in the home cell with atom ``j`` translated by
``T = shift · cell``. Keys are written in the order shown, so the same input gives the same
bytes.

Request (client → server)
-------------------------
::

    {"structures": [{"format": "extxyz" | "cif", "data": str}, ...],
     "outputs": ["H"] | ["H", "S"]}                # optional, default ["H", "S"]

Decoding never trusts the input: the byte size is checked before unpacking, msgpack runs with
explicit length limits, and the document is validated key by key. Every failure is a
`WireError` (a `ValueError`) whose one-line message names the offending field, e.g.
``results[0].hopping[2].blocks: data has 100 bytes, shape [3,4,4] <f4 needs 192``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import numpy as np

from gears_h_core.basis.orbitals import BasisError, OrbitalBasis
from gears_h_core.structure import Structure, StructureError
from gears_h_core.types import BlockMatrix, HoppingGroup, OnsiteGroup, SparseHamiltonian

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "ALLOWED_DTYPES",
    "CONTENT_TYPE",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_OUTPUTS",
    "OUTPUTS",
    "SCHEMA_VERSION",
    "STRUCTURE_FORMATS",
    "UNITS",
    "DecodedResult",
    "InferRequest",
    "ModelInfo",
    "PayloadTooLargeError",
    "Timing",
    "WireError",
    "decode_array",
    "decode_request",
    "decode_response",
    "encode_array",
    "encode_request",
    "encode_response",
    "encode_result",
    "is_msgpack_content_type",
]

SCHEMA_VERSION: Final = 1
CONTENT_TYPE: Final = "application/vnd.msgpack"
ACCEPTED_CONTENT_TYPES: Final = frozenset(
    {CONTENT_TYPE, "application/x-msgpack", "application/msgpack"}
)
ALLOWED_DTYPES: Final = ("<f4", "<f8", "<i4", "<i8", "|u1", "|b1")
UNITS: Final = {"H": "eV", "S": "1", "length": "angstrom"}
STRUCTURE_FORMATS: Final = ("extxyz", "cif")
OUTPUTS: Final = ("H", "S")
DEFAULT_OUTPUTS: Final = ("H", "S")
DEFAULT_MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024  # SPEC §8 default body limit
DEFAULT_MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024 * 1024  # largest msgpack bin32
MAX_NDIM: Final = 32

_RESULT_KEYS: Final = (
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
)
_ARRAY_KEYS: Final = ("dtype", "shape", "data")
_MODEL_KEYS: Final = ("name", "version", "sha256")
_TIMING_KEYS: Final = ("queue_ms", "compute_ms", "serialize_ms")
_ATOMS_KEYS: Final = ("numbers", "positions", "cell", "pbc")
_ONSITE_KEYS: Final = ("z", "atoms", "blocks")
_HOPPING_KEYS: Final = ("z_i", "z_j", "i", "j", "shift", "blocks")
_OPERATOR_KEYS: Final = ("onsite", "hopping")
_BASIS_KEYS: Final = ("shells", "n_orb")
_STRUCTURE_KEYS: Final = ("format", "data")


class WireError(ValueError):
    """A document that cannot be encoded or decoded; the message names the field path."""


class PayloadTooLargeError(WireError):
    """The payload is larger than the caller's ``max_bytes`` (checked before unpacking)."""


@dataclass(frozen=True)
class ModelInfo:
    """The model that produced a result.

    Attributes:
        name: model name (bundle name).
        version: model version string.
        sha256: hex digest of the bundle (integrity, §6).
    """

    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Timing:
    """Server-side durations of one request in milliseconds."""

    queue_ms: float
    compute_ms: float
    serialize_ms: float


@dataclass(frozen=True, eq=False)
class DecodedResult:
    """One decoded result: the sparse H (and S) plus the model and timing that came with it."""

    hamiltonian: SparseHamiltonian
    model: ModelInfo
    timing: Timing | None

    @property
    def structure(self) -> Structure:
        return self.hamiltonian.structure

    @property
    def basis(self) -> OrbitalBasis:
        return self.hamiltonian.basis

    @property
    def H(self) -> BlockMatrix:
        return self.hamiltonian.H

    @property
    def S(self) -> BlockMatrix | None:
        return self.hamiltonian.S


@dataclass(frozen=True)
class InferRequest:
    """A decoded ``POST /infer`` body.

    Attributes:
        structures: ``(format, text)`` per structure; format is ``"extxyz"`` or ``"cif"``.
        outputs: requested operators in canonical order, ``("H",)`` or ``("H", "S")``.
    """

    structures: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS


# --------------------------------------------------------------------------------------------
# arrays


def encode_array(a: np.ndarray | Sequence[Any], *, path: str = "array") -> dict[str, Any]:
    """Encode an array as ``{"dtype", "shape", "data"}`` (little-endian, C order).

    Big-endian input of an allowed kind is converted to little-endian; any other dtype
    raises `WireError`.
    """
    arr = np.asarray(a)
    dtype = arr.dtype
    if dtype.str not in ALLOWED_DTYPES and dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype.str not in ALLOWED_DTYPES:
        raise WireError(f"{path}: dtype {arr.dtype.str} is not one of {', '.join(ALLOWED_DTYPES)}")
    arr = np.asarray(arr, dtype=dtype, order="C")  # (ascontiguousarray makes 0-d 1-d)
    return {"dtype": dtype.str, "shape": [int(n) for n in arr.shape], "data": arr.tobytes()}


def decode_array(
    obj: Any,
    *,
    path: str = "array",
    dtype: str | None = None,
    shape: Sequence[int | None] | None = None,
) -> np.ndarray:
    """Decode and validate an encoded array.

    Args:
        obj: the unpacked ``{"dtype", "shape", "data"}`` map.
        path: field path used in error messages.
        dtype: if given, the only dtype accepted.
        shape: if given, the expected shape; ``None`` entries match any length.

    Returns:
        A new writable array with the declared dtype and shape.
    """
    fields = _expect_map(obj, path, _ARRAY_KEYS)
    dt = fields["dtype"]
    if not isinstance(dt, str) or dt not in ALLOWED_DTYPES:
        raise WireError(f"{path}.dtype: {_short(dt)} is not one of {', '.join(ALLOWED_DTYPES)}")
    if dtype is not None and dt != dtype:
        raise WireError(f"{path}.dtype: expected {dtype}, got {dt}")
    dims = fields["shape"]
    if (
        not isinstance(dims, list)
        or len(dims) > MAX_NDIM
        or not all(_is_int(n) and n >= 0 for n in dims)
    ):
        raise WireError(
            f"{path}.shape: expected a list of at most {MAX_NDIM} non-negative ints, "
            f"got {_short(dims)}"
        )
    data = fields["data"]
    if not isinstance(data, bytes):
        raise WireError(f"{path}.data: expected bin, got {type(data).__name__}")
    np_dtype = np.dtype(dt)
    needed = math.prod(dims) * np_dtype.itemsize
    if needed != len(data):
        raise WireError(
            f"{path}: data has {len(data)} bytes, shape {_fmt_shape(dims)} {dt} needs {needed}"
        )
    if shape is not None and (
        len(shape) != len(dims)
        or any(e is not None and e != n for e, n in zip(shape, dims, strict=True))
    ):
        expected = "[" + ",".join("*" if e is None else str(e) for e in shape) + "]"
        raise WireError(f"{path}.shape: expected {expected}, got {_fmt_shape(dims)}")
    try:
        arr = np.frombuffer(data, dtype=np_dtype).reshape(dims).copy()
    except ValueError as exc:  # e.g. [0, 2**63]: consistent byte count, too big for numpy
        raise WireError(f"{path}.shape: {_fmt_shape(dims)} cannot be represented ({exc})") from exc
    if dt == "|b1" and arr.size and np.frombuffer(data, dtype=np.uint8).max() > 1:
        raise WireError(f"{path}.data: boolean bytes must be 0 or 1")
    return arr


# --------------------------------------------------------------------------------------------
# results


def encode_result(
    sh: SparseHamiltonian, model: ModelInfo, timing: Timing | None = None
) -> dict[str, Any]:
    """The result document of one structure (a plain dict of msgpack-ready values).

    Blocks are written as float32, indices as int32. The ``basis`` lists the species present
    in the structure. ``timing`` is nil when not measured (e.g. ``gears_h infer -o``).
    """
    st = sh.structure
    numbers = np.asarray(st.numbers, dtype=np.int32)
    try:
        basis = sh.basis.restricted_to(st.species)
        offsets = basis.orbital_offsets(numbers)
    except (BasisError, KeyError) as exc:
        raise WireError(f"basis: {exc}") from exc
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "name": str(model.name),
            "version": str(model.version),
            "sha256": str(model.sha256),
        },
        "units": dict(UNITS),
        "basis": {
            str(z): {"shells": [int(ell) for ell in ells], "n_orb": basis.n_orb(z)}
            for z, ells in basis.shells.items()
        },
        "orbital_offsets": encode_array(offsets.astype(np.int64), path="orbital_offsets"),
        "atoms": {
            "numbers": encode_array(numbers),
            "positions": encode_array(np.asarray(st.positions, dtype=np.float64)),
            "cell": encode_array(np.asarray(st.cell, dtype=np.float64)),
            "pbc": encode_array(np.asarray(st.pbc, dtype=bool)),
        },
        "onsite": _encode_onsite(sh.H),
        "hopping": _encode_hopping(sh.H),
        "overlap": None
        if sh.S is None
        else {"onsite": _encode_onsite(sh.S), "hopping": _encode_hopping(sh.S)},
        "timing": None
        if timing is None
        else {
            "queue_ms": float(timing.queue_ms),
            "compute_ms": float(timing.compute_ms),
            "serialize_ms": float(timing.serialize_ms),
        },
    }


def encode_response(results: Sequence[Mapping[str, Any]]) -> bytes:
    """Pack result documents (from `encode_result`) into one response body."""
    doc = {"schema_version": SCHEMA_VERSION, "results": list(results)}
    try:
        packed: bytes = msgpack.packb(doc, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"response cannot be packed: {exc}") from exc
    return packed


def decode_response(
    data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
) -> list[DecodedResult]:
    """Unpack and validate a response body; one `DecodedResult` per structure."""
    doc = _expect_map(_unpack(data, max_bytes), "", ("schema_version", "results"))
    _check_schema_version(doc["schema_version"], "schema_version")
    results = doc["results"]
    if not isinstance(results, list):
        raise WireError(f"results: expected a list, got {_type(results)}")
    return [_decode_result(r, f"results[{k}]") for k, r in enumerate(results)]


def _encode_onsite(bm: BlockMatrix) -> list[dict[str, Any]]:
    return [
        {
            "z": int(g.z),
            "atoms": encode_array(np.asarray(g.atoms, dtype=np.int32)),
            "blocks": encode_array(np.asarray(g.blocks, dtype=np.float32)),
        }
        for g in bm.onsite
    ]


def _encode_hopping(bm: BlockMatrix) -> list[dict[str, Any]]:
    return [
        {
            "z_i": int(g.z_i),
            "z_j": int(g.z_j),
            "i": encode_array(np.asarray(g.i, dtype=np.int32)),
            "j": encode_array(np.asarray(g.j, dtype=np.int32)),
            "shift": encode_array(np.asarray(g.shift, dtype=np.int32).reshape(-1, 3)),
            "blocks": encode_array(np.asarray(g.blocks, dtype=np.float32)),
        }
        for g in bm.hopping
    ]


def _decode_result(obj: Any, path: str) -> DecodedResult:
    doc = _expect_map(obj, path, _RESULT_KEYS)
    _check_schema_version(doc["schema_version"], f"{path}.schema_version")

    model_doc = _expect_map(doc["model"], f"{path}.model", _MODEL_KEYS)
    model = ModelInfo(*(_expect_str(model_doc[k], f"{path}.model.{k}") for k in _MODEL_KEYS))

    units = _expect_map(doc["units"], f"{path}.units", tuple(UNITS))
    for key, unit in UNITS.items():
        if units[key] != unit:
            raise WireError(f"{path}.units.{key}: expected {unit!r}, got {_short(units[key])}")

    basis = _decode_basis(doc["basis"], f"{path}.basis")

    atoms = _expect_map(doc["atoms"], f"{path}.atoms", _ATOMS_KEYS)
    numbers = decode_array(
        atoms["numbers"], path=f"{path}.atoms.numbers", dtype="<i4", shape=[None]
    )
    n_atoms = int(numbers.shape[0])
    if n_atoms == 0:
        raise WireError(f"{path}.atoms.numbers: structure has no atoms")
    positions = decode_array(
        atoms["positions"], path=f"{path}.atoms.positions", dtype="<f8", shape=[n_atoms, 3]
    )
    cell = decode_array(atoms["cell"], path=f"{path}.atoms.cell", dtype="<f8", shape=[3, 3])
    pbc = decode_array(atoms["pbc"], path=f"{path}.atoms.pbc", dtype="|b1", shape=[3])
    missing = sorted(set(np.unique(numbers).tolist()) - set(basis.shells))
    if missing:
        raise WireError(f"{path}.atoms.numbers: no basis for element(s) {missing}")

    offsets = decode_array(
        doc["orbital_offsets"], path=f"{path}.orbital_offsets", dtype="<i8", shape=[n_atoms + 1]
    )
    if not np.array_equal(offsets, basis.orbital_offsets(numbers)):
        raise WireError(f"{path}.orbital_offsets: inconsistent with basis and atoms.numbers")

    try:
        structure = Structure.from_arrays(numbers, positions, cell, pbc, validate=False)
    except StructureError as exc:
        raise WireError(f"{path}.atoms: {exc}") from exc

    ctx = _Context(basis=basis, numbers=numbers, pbc=pbc)
    H = _decode_operator(doc["onsite"], doc["hopping"], ctx, path)
    S = None
    if doc["overlap"] is not None:
        overlap = _expect_map(doc["overlap"], f"{path}.overlap", _OPERATOR_KEYS)
        S = _decode_operator(overlap["onsite"], overlap["hopping"], ctx, f"{path}.overlap")

    timing = None
    if doc["timing"] is not None:
        tdoc = _expect_map(doc["timing"], f"{path}.timing", _TIMING_KEYS)
        timing = Timing(*(_expect_number(tdoc[k], f"{path}.timing.{k}") for k in _TIMING_KEYS))

    sh = SparseHamiltonian(structure=structure, basis=basis, H=H, S=S)
    return DecodedResult(hamiltonian=sh, model=model, timing=timing)


@dataclass(frozen=True)
class _Context:
    basis: OrbitalBasis
    numbers: np.ndarray
    pbc: np.ndarray

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])


def _decode_basis(obj: Any, path: str) -> OrbitalBasis:
    if not isinstance(obj, dict):
        raise WireError(f"{path}: expected a map, got {_type(obj)}")
    shells: dict[int, tuple[int, ...]] = {}
    for key, entry in obj.items():
        if (
            not isinstance(key, str)
            or not 0 < len(key) <= 3
            or not key.isdecimal()
            or not key.isascii()
        ):
            raise WireError(f"{path}: species key {_short(key)} is not an atomic number string")
        z = int(key)
        if str(z) != key:
            raise WireError(f"{path}: species key {key!r} is not canonical (write {str(z)!r})")
        entry_path = f"{path}.{key}"
        fields = _expect_map(entry, entry_path, _BASIS_KEYS)
        ells = fields["shells"]
        if not isinstance(ells, list) or not all(_is_int(ell) for ell in ells):
            raise WireError(f"{entry_path}.shells: expected a list of ints, got {_short(ells)}")
        try:
            one = OrbitalBasis({z: tuple(ells)})
        except BasisError as exc:
            raise WireError(f"{entry_path}: {exc}") from exc
        n_orb = fields["n_orb"]
        if not _is_int(n_orb) or n_orb != one.n_orb(z):
            raise WireError(
                f"{entry_path}.n_orb: {_short(n_orb)} does not match shells {ells} "
                f"({one.n_orb(z)} orbitals)"
            )
        shells[z] = one.shells[z]
    return OrbitalBasis(shells)


def _decode_operator(onsite_obj: Any, hopping_obj: Any, ctx: _Context, path: str) -> BlockMatrix:
    if not isinstance(onsite_obj, list):
        raise WireError(f"{path}.onsite: expected a list, got {_type(onsite_obj)}")
    if not isinstance(hopping_obj, list):
        raise WireError(f"{path}.hopping: expected a list, got {_type(hopping_obj)}")
    onsite = tuple(
        _decode_onsite_group(g, ctx, f"{path}.onsite[{k}]") for k, g in enumerate(onsite_obj)
    )
    seen = np.concatenate([g.atoms for g in onsite]) if onsite else np.zeros(0, np.int32)
    if np.unique(seen).shape[0] != seen.shape[0]:
        raise WireError(f"{path}.onsite: an atom appears in more than one block")
    hopping = tuple(
        _decode_hopping_group(g, ctx, f"{path}.hopping[{k}]") for k, g in enumerate(hopping_obj)
    )
    if hopping:
        keys = np.concatenate(
            [np.column_stack([g.i, g.j, g.shift]).astype(np.int64) for g in hopping]
        )
        if np.unique(keys, axis=0).shape[0] != keys.shape[0]:
            raise WireError(f"{path}.hopping: a pair (i, j, shift) appears more than once")
    return BlockMatrix(onsite=onsite, hopping=hopping)


def _decode_onsite_group(obj: Any, ctx: _Context, path: str) -> OnsiteGroup:
    g = _expect_map(obj, path, _ONSITE_KEYS)
    z = _expect_species(g["z"], ctx, f"{path}.z")
    atoms = decode_array(g["atoms"], path=f"{path}.atoms", dtype="<i4", shape=[None])
    _check_atoms(atoms, z, ctx, f"{path}.atoms")
    n_orb = ctx.basis.n_orb(z)
    blocks = decode_array(
        g["blocks"], path=f"{path}.blocks", dtype="<f4", shape=[atoms.shape[0], n_orb, n_orb]
    )
    return OnsiteGroup(z=z, atoms=atoms, blocks=blocks)


def _decode_hopping_group(obj: Any, ctx: _Context, path: str) -> HoppingGroup:
    g = _expect_map(obj, path, _HOPPING_KEYS)
    z_i = _expect_species(g["z_i"], ctx, f"{path}.z_i")
    z_j = _expect_species(g["z_j"], ctx, f"{path}.z_j")
    i = decode_array(g["i"], path=f"{path}.i", dtype="<i4", shape=[None])
    n = int(i.shape[0])
    j = decode_array(g["j"], path=f"{path}.j", dtype="<i4", shape=[n])
    _check_atoms(i, z_i, ctx, f"{path}.i")
    _check_atoms(j, z_j, ctx, f"{path}.j")
    shift = decode_array(g["shift"], path=f"{path}.shift", dtype="<i4", shape=[n, 3])
    off_axis = np.any(shift[:, ~ctx.pbc] != 0, axis=1)
    if np.any(off_axis):
        k = int(np.flatnonzero(off_axis)[0])
        raise WireError(
            f"{path}.shift[{k}]: nonzero shift {shift[k].tolist()} along a non-periodic axis"
        )
    self_pair = (i == j) & np.all(shift == 0, axis=1)
    if np.any(self_pair):
        k = int(np.flatnonzero(self_pair)[0])
        raise WireError(
            f"{path}: pair {k} is the on-site pair ({int(i[k])}, {int(i[k])}, [0, 0, 0])"
        )
    blocks = decode_array(
        g["blocks"],
        path=f"{path}.blocks",
        dtype="<f4",
        shape=[n, ctx.basis.n_orb(z_i), ctx.basis.n_orb(z_j)],
    )
    return HoppingGroup(z_i=z_i, z_j=z_j, i=i, j=j, shift=shift, blocks=blocks)


def _expect_species(obj: Any, ctx: _Context, path: str) -> int:
    if not _is_int(obj):
        raise WireError(f"{path}: expected an int, got {_type(obj)}")
    if obj not in ctx.basis.shells:
        raise WireError(f"{path}: element {obj} is not in the basis")
    return int(obj)


def _check_atoms(idx: np.ndarray, z: int, ctx: _Context, path: str) -> None:
    """Indices in [0, n_atoms) and all of element ``z``."""
    bad = np.flatnonzero((idx < 0) | (idx >= ctx.n_atoms))
    if bad.size:
        k = int(bad[0])
        raise WireError(f"{path}[{k}]: atom index {int(idx[k])} out of range [0, {ctx.n_atoms})")
    wrong = np.flatnonzero(ctx.numbers[idx] != z)
    if wrong.size:
        k = int(wrong[0])
        raise WireError(
            f"{path}[{k}]: atom {int(idx[k])} is element {int(ctx.numbers[idx[k]])}, "
            f"the group is element {z}"
        )


# --------------------------------------------------------------------------------------------
# requests


def encode_request(
    structures: Sequence[tuple[str, str]], outputs: Sequence[str] = DEFAULT_OUTPUTS
) -> bytes:
    """Pack a ``POST /infer`` body from ``(format, text)`` pairs; validated like the decoder."""
    doc = {
        "structures": [{"format": fmt, "data": text} for fmt, text in structures],
        "outputs": list(outputs),
    }
    _validate_request(doc)
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed


def decode_request(
    data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> InferRequest:
    """Unpack and validate a ``POST /infer`` msgpack body."""
    return _validate_request(_unpack(data, max_bytes))


def _validate_request(obj: Any) -> InferRequest:
    if not isinstance(obj, dict):
        raise WireError(f"request: expected a map, got {_type(obj)}")
    unknown = sorted(str(k) for k in obj if k not in ("structures", "outputs", "schema_version"))
    if unknown:
        raise WireError(f"request: unknown key(s) {', '.join(map(repr, unknown))}")
    if "schema_version" in obj:
        _check_schema_version(obj["schema_version"], "schema_version")
    if "structures" not in obj:
        raise WireError("structures: missing")
    items = obj["structures"]
    if not isinstance(items, list) or not items:
        raise WireError(f"structures: expected a non-empty list, got {_short(items)}")
    structures = []
    for k, item in enumerate(items):
        path = f"structures[{k}]"
        s = _expect_map(item, path, _STRUCTURE_KEYS)
        fmt, text = s["format"], s["data"]
        if not isinstance(fmt, str) or fmt not in STRUCTURE_FORMATS:
            raise WireError(
                f"{path}.format: {_short(fmt)} is not one of {', '.join(STRUCTURE_FORMATS)}"
            )
        if not isinstance(text, str):
            raise WireError(f"{path}.data: expected a string, got {_type(text)}")
        if not text.strip():
            raise WireError(f"{path}.data: is empty")
        structures.append((fmt, text))
    outputs = obj.get("outputs", list(DEFAULT_OUTPUTS))
    if (
        not isinstance(outputs, list | tuple)
        or not outputs
        or not all(isinstance(o, str) and o in OUTPUTS for o in outputs)
        or len(set(outputs)) != len(outputs)
    ):
        raise WireError(
            f"outputs: expected distinct names from {list(OUTPUTS)}, got {_short(outputs)}"
        )
    if "H" not in outputs:
        raise WireError("outputs: must include 'H'")
    return InferRequest(
        structures=tuple(structures), outputs=tuple(o for o in OUTPUTS if o in outputs)
    )


# --------------------------------------------------------------------------------------------
# shared helpers


def is_msgpack_content_type(content_type: str | None) -> bool:
    """True for the msgpack content types of §7 (parameters such as ``; charset`` ignored)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in ACCEPTED_CONTENT_TYPES


def _unpack(data: bytes | bytearray | memoryview, max_bytes: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"payload: expected bytes, got {_type(data)}")
    size = memoryview(data).nbytes
    if size > max_bytes:
        raise PayloadTooLargeError(f"payload: {size} bytes is over the limit of {max_bytes}")
    if size == 0:
        raise WireError("payload: empty")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=size,
            max_str_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises ValueError, its own errors, TypeError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "max_ext_len" in reason:
            reason = "msgpack ext types are not allowed"
        elif isinstance(exc, msgpack.exceptions.StackError):
            reason = "nested too deeply"
        raise WireError(f"payload: not valid msgpack ({reason})") from exc


def _expect_map(obj: Any, path: str, keys: Sequence[str]) -> dict[str, Any]:
    """``obj`` as a map with exactly ``keys``; ``path`` "" is the top-level document."""
    where = path or "document"
    if not isinstance(obj, dict):
        raise WireError(f"{where}: expected a map, got {_type(obj)}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise WireError(f"{path}.{missing[0]}: missing" if path else f"{missing[0]}: missing")
    if len(obj) != len(keys):
        unknown = sorted(repr(k) for k in obj if k not in keys)
        raise WireError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return obj


def _expect_str(obj: Any, path: str) -> str:
    if not isinstance(obj, str):
        raise WireError(f"{path}: expected a string, got {_type(obj)}")
    return obj


def _expect_number(obj: Any, path: str) -> float:
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise WireError(f"{path}: expected a number, got {_type(obj)}")
    return float(obj)


def _check_schema_version(obj: Any, path: str) -> None:
    if not _is_int(obj) or obj != SCHEMA_VERSION:
        raise WireError(f"{path}: expected {SCHEMA_VERSION}, got {_short(obj)}")


def _is_int(obj: Any) -> bool:
    return isinstance(obj, int) and not isinstance(obj, bool)


def _type(obj: Any) -> str:
    return "nil" if obj is None else type(obj).__name__


def _short(obj: Any, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt_shape(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(n) for n in dims) + "]"
