"""Prometheus metrics of one app, in their own `CollectorRegistry` (several apps per process
in tests do not collide). Exposed at ``GET /metrics``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_FRACTION = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
_COUNT = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)


class Metrics:
    """The service's metrics (names prefixed ``gearsh_``).

    Durations are per request (queue: enqueued until its batch starts; serialise: building
    the result documents) or per device call (compute: pad + run + decode of one batch).
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "gearsh_requests",
            "Finished requests by route (HTTP path template or 'grpc:Infer') and HTTP status",
            ["route", "status"],
            registry=r,
        )
        self.queue_seconds = Histogram(
            "gearsh_queue_seconds",
            "Time a request waited for its first batch",
            buckets=_SECONDS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "gearsh_compute_seconds",
            "Time of one device call (padding, network, decoding blocks)",
            buckets=_SECONDS,
            registry=r,
        )
        self.serialize_seconds = Histogram(
            "gearsh_serialize_seconds",
            "Time to encode one response",
            buckets=_SECONDS,
            registry=r,
        )
        self.batch_structures = Histogram(
            "gearsh_batch_structures",
            "Structures per device call",
            buckets=_COUNT,
            registry=r,
        )
        self.batch_requests = Histogram(
            "gearsh_batch_requests",
            "Requests contributing to one device call",
            buckets=_COUNT,
            registry=r,
        )
        self.padding_efficiency = Histogram(
            "gearsh_padding_efficiency",
            "Real / padded slots of one device call ('atoms': nodes, 'pairs': hopping pairs)",
            ["kind"],
            buckets=_FRACTION,
            registry=r,
        )
        self.compilations = Gauge(
            "gearsh_compilations",
            "Buckets compiled by the predictor (equals the ladder size after warm-up)",
            registry=r,
        )
        self.xla_compilations = Gauge(
            "gearsh_xla_compilations",
            "XLA backend compilations in this process since start-up (any jitted function)",
            registry=r,
        )
        self.in_flight = Gauge(
            "gearsh_in_flight_requests", "Inference requests being handled", registry=r
        )
        self.queue_depth = Gauge(
            "gearsh_queue_depth", "Requests waiting for the device worker", registry=r
        )
        self.ready = Gauge("gearsh_ready", "1 when ready to serve, else 0", registry=r)

    def bind(
        self,
        *,
        compilations: Callable[[], float],
        xla_compilations: Callable[[], float],
        queue_depth: Callable[[], float],
        ready: Callable[[], float],
    ) -> None:
        """Gauges read at scrape time."""
        self.compilations.set_function(compilations)
        self.xla_compilations.set_function(xla_compilations)
        self.queue_depth.set_function(queue_depth)
        self.ready.set_function(ready)

    def observe_request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
