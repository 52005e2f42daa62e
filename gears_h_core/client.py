"""A small Python client for ``gearsh-serve`` and for ``.msgpack`` result files (SPEC §7, §8).

Decode bytes you already have (a response body or ``gears_h infer -o x.msgpack``)::

    from gears_h_core.client import decode, to_csr_per_shift

    (result,) = decode(Path("x.msgpack").read_bytes())
    H_T = to_csr_per_shift(result)          # {(n1, n2, n3): scipy.sparse.csr_array}, eV

or talk to a running service (needs ``httpx``, part of the ``serve`` extra)::

    from gears_h_core.client import GearsHClient

    with GearsHClient("http://127.0.0.1:8000", api_key="...") as client:
        if client.ready():
            results = client.infer([atoms, "structure.cif"], outputs=("H", "S"))
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from gears_h_core.io.wire import (
    CONTENT_TYPE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_OUTPUTS,
    DecodedResult,
    encode_request,
    is_msgpack_content_type,
)
from gears_h_core.io.wire import decode_response as _decode_response

if TYPE_CHECKING:
    import httpx
    import scipy.sparse
    from ase import Atoms

__all__ = ["ClientError", "DecodedResult", "GearsHClient", "decode", "to_csr_per_shift"]

INFER_PATH = "/infer"
READY_PATH = "/v2/health/ready"
API_KEY_HEADER = "X-API-Key"
DEFAULT_TIMEOUT_S = 60.0


class ClientError(RuntimeError):
    """The service answered with an error (or not with msgpack).

    Attributes:
        status_code: the HTTP status code.
        message: the server's ``{"error": ...}`` message, or the start of the body.
    """

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message


def decode(data: bytes, *, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> list[DecodedResult]:
    """Decode a response body (or a ``.msgpack`` result file); one result per structure."""
    return _decode_response(data, max_bytes=max_bytes)


def to_csr_per_shift(
    decoded: DecodedResult, operator: Literal["H", "S"] = "H"
) -> dict[tuple[int, int, int], scipy.sparse.csr_array]:
    """The operator ``H`` (eV) or ``S`` as one scipy CSR matrix per lattice shift.

    Raises:
        ValueError: ``operator`` is ``"S"`` and the result carries no overlap.
    """
    from gears_h_core.assemble.sparse import to_csr_per_shift as _to_csr_per_shift

    if operator == "H":
        bm = decoded.H
    elif operator == "S":
        if decoded.S is None:
            raise ValueError("this result has no overlap S (request outputs=('H', 'S'))")
        bm = decoded.S
    else:
        raise ValueError(f"operator must be 'H' or 'S', got {operator!r}")
    return _to_csr_per_shift(bm, decoded.basis, decoded.structure.numbers)


class GearsHClient:
    """HTTP client of ``gearsh-serve``.

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000"``.
        api_key: sent as ``X-API-Key`` when given.
        timeout: seconds for connect/read/write.
        max_bytes: largest response body accepted.
        transport: an ``httpx`` transport (tests use ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx

        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.max_bytes = max_bytes
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def __enter__(self) -> GearsHClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def ready(self) -> bool:
        """True when ``GET /v2/health/ready`` answers 200; False on any other answer or no answer."""
        import httpx

        try:
            response = self._http.get(READY_PATH)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def infer(
        self,
        structures: Sequence[Atoms | str | os.PathLike[str]],
        outputs: Sequence[str] = DEFAULT_OUTPUTS,
    ) -> list[DecodedResult]:
        """Predict H (and S) for each structure.

        Args:
            structures: ASE ``Atoms`` objects or paths of files readable by ASE; every frame
                of a multi-frame file is one structure.
            outputs: ``("H",)`` or ``("H", "S")``.

        Returns:
            One `DecodedResult` per structure (per frame), in order.

        Raises:
            ClientError: non-2xx status (with the server's error message) or a non-msgpack body.
            gears_h_core.io.wire.WireError: the body is not a valid response.
        """
        body = encode_request([("extxyz", text) for text in _to_extxyz(structures)], outputs)
        response = self._http.post(
            INFER_PATH,
            content=body,
            headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
        )
        if not response.is_success:
            raise ClientError(response.status_code, _error_message(response))
        if not is_msgpack_content_type(response.headers.get("content-type")):
            raise ClientError(
                response.status_code,
                f"expected a msgpack body, got {response.headers.get('content-type')!r}",
            )
        return decode(response.content, max_bytes=self.max_bytes)


def _to_extxyz(structures: Sequence[Atoms | str | os.PathLike[str]]) -> list[str]:
    """One extxyz text per structure (per frame for files)."""
    import ase.io
    from ase import Atoms

    frames: list[Atoms] = []
    for s in structures:
        if isinstance(s, Atoms):
            frames.append(s)
        elif isinstance(s, str | os.PathLike):
            read = ase.io.read(os.fspath(s), index=":")
            frames.extend(read if isinstance(read, list) else [read])
        else:
            raise TypeError(f"expected ase.Atoms or a path, got {type(s).__name__}")
    texts = []
    for atoms in frames:
        buf = io.StringIO()
        ase.io.write(buf, atoms, format="extxyz")
        texts.append(buf.getvalue())
    return texts


def _error_message(response: httpx.Response) -> str:
    """The ``error`` field of a JSON error body, else the start of the body text."""
    try:
        payload: Any = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return str(payload["error"])
    text = response.text.strip()
    return text[:500] if text else (response.reason_phrase or "no message")
