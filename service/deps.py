"""Request dependencies shared by the routes: the engine, the API key, the deadline, the body."""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Mapping

from fastapi import Request

from service.engine import Engine
from service.errors import ServiceError, bad_request, deadline_exceeded

#: relative deadline of an HTTP request in milliseconds (gRPC uses its own deadline)
DEADLINE_HEADER = "X-Request-Timeout-Ms"
API_KEY_HEADER = "X-API-Key"


def api_key_ok(expected: str | None, headers: Mapping[str, str]) -> bool:
    """True when no key is configured, or ``Authorization: Bearer KEY`` / ``X-API-Key: KEY``
    carries it (constant-time comparison). ``headers`` must have lower-case keys."""
    if expected is None:
        return True
    want = expected.encode()
    offered: list[str] = []
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            offered.append(token.strip())
    key = headers.get(API_KEY_HEADER.lower())
    if key is not None:
        offered.append(key.strip())
    ok = False
    for candidate in offered:  # compare all (no early exit on the first match)
        ok |= hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), want)
    return ok


def unauthorized(has_credentials: bool) -> ServiceError:
    what = "wrong API key" if has_credentials else "missing API key"
    return ServiceError(
        401, f"{what}: send 'Authorization: Bearer <key>' or '{API_KEY_HEADER}: <key>'"
    )


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def require_api_key(request: Request) -> None:
    """Dependency of the protected routes (401 without the configured key)."""
    engine = get_engine(request)
    key = engine.settings.api_key
    expected = key.get_secret_value() if key is not None else None
    headers = {k.lower(): v for k, v in request.headers.items()}
    if not api_key_ok(expected, headers):
        raise unauthorized("authorization" in headers or API_KEY_HEADER.lower() in headers)


def request_deadline(request: Request, start: float | None = None) -> float | None:
    """``time.monotonic()`` deadline from ``X-Request-Timeout-Ms`` (None without the header).

    Raises:
        ServiceError: 400 for a value that is not a finite number >= 0; 504 for 0.
    """
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return None
    try:
        ms = float(raw)
    except ValueError:
        ms = math.nan
    if not math.isfinite(ms) or ms < 0:
        raise bad_request(f"{DEADLINE_HEADER}: expected milliseconds >= 0, got {raw[:40]!r}")
    if ms == 0:
        raise deadline_exceeded(f"{DEADLINE_HEADER} is 0")
    return (start if start is not None else time.monotonic()) + ms / 1e3


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes
    (``Content-Length`` first, then counting while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise bad_request(f"Content-Length: not an integer ({declared[:40]!r})") from None
        if size > limit:
            raise ServiceError(413, f"body: {size} bytes is over the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ServiceError(413, f"body: more than {limit} bytes (the limit)")
    return bytes(body)
