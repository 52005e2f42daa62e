"""Dynamic batching: a bounded request queue and the single device worker thread.

Requests arrive as `Job`s holding one or more neighbour graphs (one per structure). The
worker takes the oldest job, then — only while more requests are already on their way (being
parsed) or waiting, and for at most ``wait_s`` — keeps taking jobs in arrival order while the
disjoint union of their structures stays within the `Budget` (the largest padding bucket).
The union goes to the device in one call (``run_batch``); each job is resolved when all its
structures are done. A job with more structures than one batch holds is split over
consecutive batches; its results keep the order of its structures.

Cancelled jobs and jobs past their deadline are dropped before compute (the latter resolved
with a 504 `ServiceError`). A full queue refuses new jobs with 503. All JAX work happens on
the worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from service.errors import ServiceError, deadline_exceeded, unavailable

logger = logging.getLogger(__name__)


class GraphSize(Protocol):
    """What batching needs to know about a structure's graph."""

    @property
    def n_atoms(self) -> int: ...

    @property
    def n_edges(self) -> int: ...

    @property
    def n_pairs(self) -> int: ...


@dataclass(frozen=True)
class Budget:
    """Largest disjoint union of real structures one device call takes."""

    n_atoms: int
    n_edges: int
    n_pairs: int
    n_graphs: int

    def fits(self, n_atoms: int, n_edges: int, n_pairs: int, n_graphs: int) -> bool:
        return (
            n_atoms <= self.n_atoms
            and n_edges <= self.n_edges
            and n_pairs <= self.n_pairs
            and n_graphs <= self.n_graphs
        )


@dataclass(frozen=True)
class JobResult[R]:
    """Results of one job in the order of its structures, with per-structure timings."""

    values: list[R]
    queue_ms: list[float]  # enqueued -> start of the batch that took the structure
    compute_ms: list[float]  # duration of that batch's device call


@dataclass(eq=False)
class Job[G: GraphSize, R]:
    """One request: its graphs, what it wants, its deadline and how to report back.

    ``on_done`` is called exactly once from the worker thread (or from `Batcher.stop`) with
    a `JobResult` or an exception, unless the job was cancelled first.
    """

    graphs: Sequence[G]
    overlap: bool
    deadline: float | None  # time.monotonic() seconds, or None
    on_done: Callable[[JobResult[R] | BaseException], None]
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    _values: list[R | None] = field(init=False)
    _queue_ms: list[float] = field(init=False)
    _compute_ms: list[float] = field(init=False)
    _remaining: int = field(init=False)
    _finished: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        n = len(self.graphs)
        self._values = [None] * n
        self._queue_ms = [0.0] * n
        self._compute_ms = [0.0] * n
        self._remaining = n

    def cancel(self) -> None:
        """The caller gave up: drop the job before compute (thread-safe flag)."""
        self.cancelled = True

    @property
    def done(self) -> bool:
        return self._finished or self.cancelled

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def fail(self, error: BaseException) -> None:
        if not self._finished:
            self._finished = True
            if not self.cancelled:
                self.on_done(error)

    def store(self, k: int, value: R, queue_ms: float, compute_ms: float) -> None:
        if self._finished:
            return
        self._values[k] = value
        self._queue_ms[k] = queue_ms
        self._compute_ms[k] = compute_ms
        self._remaining -= 1
        if self._remaining == 0:
            self._finished = True
            if not self.cancelled:
                values: list[R] = [v for v in self._values if v is not None]
                self.on_done(JobResult(values, self._queue_ms, self._compute_ms))


class QueueFullError(ServiceError):
    def __init__(self, max_queue: int) -> None:
        super().__init__(503, f"server busy: {max_queue} requests already queued", retry_after=1)


@dataclass(frozen=True)
class BatchInfo:
    """What one device call held (for metrics)."""

    n_structures: int
    n_requests: int
    seconds: float


class Arrival[G: GraphSize, R]:
    """An announced request (see `Batcher.announce`); submit or withdraw it exactly once."""

    def __init__(self, batcher: Batcher[G, R]) -> None:
        self._batcher = batcher
        self._open = True

    def submit(self, job: Job[G, R]) -> None:
        """Queue ``job`` (raises `QueueFullError`, or 503 when stopping).

        Ignored after `withdraw` (the caller gave up waiting: nobody needs the result).
        """
        b = self._batcher
        with b._cond:
            if not self._open:
                return
            self._open = False
            b._incoming -= 1
            b._enqueue(job)

    def withdraw(self) -> None:
        """The request will not be submitted (idempotent; no-op after `submit`)."""
        b = self._batcher
        with b._cond:
            if self._open:
                self._open = False
                b._incoming -= 1
                b._cond.notify_all()


class Batcher[G: GraphSize, R]:
    """Bounded queue plus the device worker thread.

    Args:
        run_batch: the device call: graphs and per-graph "wants S" -> one result per graph.
        budget: largest union per call.
        max_queue: requests waiting at most, queued or announced (being prepared); `announce`
            and `submit` raise `QueueFullError` beyond.
        wait_s: longest wait for more jobs once the first one is taken.
        batching: False: every call holds the structures of a single job.
        on_batch: called after every device call (metrics).
    """

    def __init__(
        self,
        run_batch: Callable[[list[G], list[bool]], list[R]],
        budget: Budget,
        *,
        max_queue: int,
        wait_s: float,
        batching: bool = True,
        on_batch: Callable[[BatchInfo], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.budget = budget
        self.max_queue = max_queue
        self.wait_s = wait_s
        self.batching = batching
        self._on_batch = on_batch
        self._queue: deque[Job[G, R]] = deque()
        self._pending: deque[tuple[Job[G, R], int]] = deque()  # structures of taken jobs
        self._cond = threading.Condition()
        self._incoming = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- producer side (any thread) -----------------------------------------------------------
    @property
    def depth(self) -> int:
        """Jobs waiting in the queue (not yet taken by the worker)."""
        return len(self._queue)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def announce(self) -> Arrival[G, R]:
        """Admit a request that is about to be prepared (parsed, graphs built).

        Admission is the queue bound: announced requests count against ``max_queue`` with
        the queued jobs, so a request is refused (`QueueFullError`, a fast 503) on arrival,
        not after waiting its turn for a preparation thread. (Measured at 2x saturation of
        the default model on 2 cores, when the bound applied only to the device queue:
        preparation became the bottleneck, its backlog grew without bound and 503s took
        11 s instead of milliseconds.)

        While announced requests are on their way, the worker waits (up to ``wait_s``) for
        them to merge into the batch it is forming. The request then calls
        `Arrival.submit` or `Arrival.withdraw` (from any thread).
        """
        with self._cond:
            if self._stopping:
                raise unavailable("server is shutting down", close=True)
            if self._incoming + len(self._queue) >= self.max_queue:
                raise QueueFullError(self.max_queue)
            self._incoming += 1
        return Arrival(self)

    def submit(self, job: Job[G, R]) -> None:
        """Queue ``job``; raises `QueueFullError` or 503 when stopping."""
        with self._cond:
            self._enqueue(job)

    def _enqueue(self, job: Job[G, R]) -> None:  # holds self._cond
        self._cond.notify_all()
        if not job.graphs:
            raise ValueError("a job needs at least one structure")
        if self._stopping:
            raise unavailable("server is shutting down", close=True)
        if len(self._queue) >= self.max_queue:
            raise QueueFullError(self.max_queue)
        self._queue.append(job)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="gearsh-device", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work; fail queued jobs with 503; wait for the current batch."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            leftovers = [*self._queue, *(job for job, _ in self._pending)]
            self._queue.clear()
            self._pending.clear()
        error = unavailable("server is shutting down", close=True)
        for job in leftovers:
            job.fail(error)

    # -- worker ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._queue and not self._pending:
                    self._cond.wait()
                if self._stopping:
                    return
            batch = self._collect()
            if batch:
                self._run(batch)

    def _take(self) -> bool:
        """Move the oldest queued job's structures to the pending list (worker thread)."""
        with self._cond:
            if not self._queue:
                return False
            job = self._queue.popleft()
        if job.cancelled:
            return True
        if job.expired(time.monotonic()):
            job.fail(deadline_exceeded("deadline exceeded while queued"))
            return True
        self._pending.extend((job, k) for k in range(len(job.graphs)))
        return True

    def _collect(self) -> list[tuple[Job[G, R], int]]:
        """Structures of the next device call (possibly none, if all were dropped)."""
        items: list[tuple[Job[G, R], int]] = []
        atoms = edges = pairs = 0
        first: Job[G, R] | None = None
        until: float | None = None
        while True:
            full = False
            while self._pending:
                job, k = self._pending[0]
                if job.done:
                    self._pending.popleft()
                    continue
                if first is not None and not self.batching and job is not first:
                    full = True
                    break
                g = job.graphs[k]
                if items and not self.budget.fits(
                    atoms + g.n_atoms, edges + g.n_edges, pairs + g.n_pairs, len(items) + 1
                ):
                    full = True
                    break
                self._pending.popleft()
                items.append((job, k))
                atoms, edges, pairs = atoms + g.n_atoms, edges + g.n_edges, pairs + g.n_pairs
                first = first or job
            if full or (items and not self.batching):
                return items
            if not items:  # nothing yet: take the next job without waiting
                if not self._take():
                    return items
                continue
            if until is None:
                until = time.monotonic() + self.wait_s
            with self._cond:
                while not self._queue and not self._stopping:
                    left = until - time.monotonic()
                    if self._incoming == 0 or left <= 0:
                        return items
                    self._cond.wait(left)
                if self._stopping:
                    return items
            self._take()

    def _run(self, items: list[tuple[Job[G, R], int]]) -> None:
        now = time.monotonic()
        live: list[tuple[Job[G, R], int]] = []
        for job, k in items:  # last chance to drop: cancelled or past the deadline
            if job.done:
                continue
            if job.expired(now):
                job.fail(deadline_exceeded("deadline exceeded while queued"))
                continue
            live.append((job, k))
        if not live:
            return
        start = time.monotonic()
        graphs = [job.graphs[k] for job, k in live]
        try:
            values = self._run_batch(graphs, [job.overlap for job, _ in live])
        except Exception as exc:
            logger.exception("device call failed for a batch of %d structure(s)", len(graphs))
            error = ServiceError(500, f"internal error during inference: {exc}")
            for job, _ in live:
                job.fail(error)
            return
        end = time.monotonic()
        compute_ms = (end - start) * 1e3
        for (job, k), value in zip(live, values, strict=True):
            job.store(k, value, (start - job.enqueued) * 1e3, compute_ms)
        if self._on_batch is not None:
            n_requests = len({id(job) for job, _ in live})
            self._on_batch(BatchInfo(len(live), n_requests, end - start))
