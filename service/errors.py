"""One error type for both protocols: an HTTP status, a one-line message, optional Retry-After.

HTTP renders it as ``{"error": message}`` with the status; gRPC maps the status to a status
code (`service.grpc_server.GRPC_CODES`) with the same message.
"""

from __future__ import annotations

MAX_MESSAGE_CHARS = 1000


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class ServiceError(Exception):
    """A request the service refuses or cannot complete.

    Attributes:
        status: HTTP status code (400, 401, 404, 413, 415, 422, 500, 503, 504).
        message: one line for the client.
        retry_after: seconds for ``Retry-After`` (503 only), or None.
        close: ask the client to close the connection (sent while draining).
    """

    def __init__(
        self, status: int, message: str, *, retry_after: int | None = None, close: bool = False
    ) -> None:
        self.status = status
        self.message = one_line(message)
        self.retry_after = retry_after
        self.close = close
        super().__init__(f"{status}: {self.message}")

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers of the error response."""
        out: dict[str, str] = {}
        if self.retry_after is not None:
            out["Retry-After"] = str(self.retry_after)
        if self.status == 401:
            out["WWW-Authenticate"] = 'Bearer realm="gearsh-serve"'
        if self.close:
            out["Connection"] = "close"
        return out


def bad_request(message: str) -> ServiceError:
    return ServiceError(400, message)


def unavailable(message: str, retry_after: int = 1, *, close: bool = False) -> ServiceError:
    return ServiceError(503, message, retry_after=retry_after, close=close)


def deadline_exceeded(
    message: str = "deadline exceeded before the result was ready",
) -> ServiceError:
    return ServiceError(504, message)
