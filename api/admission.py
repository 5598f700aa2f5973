"""Admission: how many requests do model work at once, and what happens when more arrive.

Overload degrades in three steps, cheapest loss first:

1. Below `rerank_shed_from` of the capacity (`workers` running plus `queue` waiting) a request
   gets everything.
2. Above it, a request is admitted with a share of the re-ranking depth that shrinks linearly to
   none at a full queue: ITM is most of a text query's cost, and its first-stage order is still a
   good answer. The page says `rerank_shed`, and `reranked_count` says how many were scored.
3. Only past the capacity is a request refused: 503 `overloaded` with Retry-After.

A request that waits past `request_deadline_ms` is answered 503 `deadline_exceeded`, and a client
that disconnects gives its place back at once: in both cases its ticket is cancelled, so its
queued model work is dropped before any forward (search/batching.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from starlette.requests import Request

from blipsearch.api.errors import ApiError
from blipsearch.api.metrics import Metrics
from blipsearch.errors import RequestCancelledError, RequestExpiredError
from blipsearch.search.batching import Ticket, holding
from blipsearch.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

DISCONNECT_POLL_SECONDS = 0.05


def rerank_scale(load: float, shed_from: float) -> float:
    """The share of the re-ranking depth a request admitted at `load` (admitted / capacity, this
    request included) keeps: all of it up to `shed_from`, then linearly less, none at 1."""
    if load <= shed_from or shed_from >= 1.0:
        return 1.0
    return max(0.0, (1.0 - load) / (1.0 - shed_from))


class InferenceGate:
    """Runs model work off the event loop, `workers` at a time, with a bounded waiting line."""

    def __init__(
        self,
        workers: int,
        queue: int,
        *,
        shed_from: float = 1.0,
        deadline_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.limiter = anyio.CapacityLimiter(workers)
        self.capacity = workers + queue
        self.shed_from = shed_from
        self.deadline_seconds = deadline_seconds
        self.clock = clock
        self.admitted = 0
        self.shed = 0
        """Requests admitted with less than their full re-ranking depth (for /metrics)."""
        self.refused = 0
        self._lock = threading.Lock()

    def _admit(self) -> Ticket:
        with self._lock:
            if self.admitted >= self.capacity:
                self.refused += 1
                if self.metrics is not None:
                    self.metrics.refused.inc()
                raise ApiError(503, "overloaded", "The server is busy; retry in a moment.")
            self.admitted += 1
            scale = rerank_scale(self.admitted / self.capacity, self.shed_from)
            self.shed += scale < 1.0
            if self.metrics is not None:
                self.metrics.in_progress.set(self.admitted)
                if scale < 1.0:
                    self.metrics.shed.inc()
        deadline = self.clock() + self.deadline_seconds if self.deadline_seconds is not None else None
        return Ticket(deadline=deadline, rerank_scale=scale, clock=self.clock)

    async def run(
        self, function: Callable[..., T], *args: Any, request: Request | None = None, write: bool = False
    ) -> T:
        """`function(*args)` in a worker thread, as one admitted request; with `request`, its
        client's disconnect cancels the work and frees the place. A `write` has no deadline: once
        admitted it runs to its end, so a 503 never hides a write that went through."""
        ticket = self._admit()
        if write:
            ticket.deadline = None
        results: list[T] = []
        failure: Exception | None = None
        try:
            with anyio.fail_after(None if write else self.deadline_seconds):
                async with anyio.create_task_group() as group:
                    if request is not None:
                        group.start_soon(_watch_disconnect, request, ticket, group.cancel_scope)
                    try:
                        results.append(
                            await anyio.to_thread.run_sync(
                                _as_request,
                                ticket,
                                function,
                                args,
                                limiter=self.limiter,
                                abandon_on_cancel=True,
                            )
                        )
                    except Exception as exc:  # raised below, not wrapped in the group's ExceptionGroup
                        failure = exc
                    group.cancel_scope.cancel()
            if failure is not None:
                raise failure
        except TimeoutError:
            ticket.cancel(expired=True)
            raise _expired() from None
        except RequestExpiredError:
            raise _expired() from None
        except RequestCancelledError:
            raise ApiError(503, "cancelled", "The request was cancelled.") from None
        finally:
            ticket.cancel()  # whatever of it still waits in a batcher is dropped
            with self._lock:
                self.admitted -= 1
                if self.metrics is not None:
                    self.metrics.in_progress.set(self.admitted)
        if not results:  # the client went away: nobody reads this answer
            raise ApiError(503, "cancelled", "The request was cancelled.")
        return results[0]


def gate_for(settings: Settings, metrics: Metrics | None = None) -> InferenceGate:
    """With batching, many requests may be in progress (their forwards are shared, one at a time),
    so that with the default queue re-ranking is shed only past 32 requests and 503s begin past 64;
    without, each would run its own forward on the whole CPU, so one at a time."""
    workers = settings.inference_workers or (48 if settings.batching else 1)
    return InferenceGate(
        workers,
        settings.inference_queue,
        shed_from=settings.rerank_shed_from if settings.rerank else 1.0,
        deadline_seconds=settings.request_deadline_ms / 1000.0,
        metrics=metrics,
    )


def _as_request(ticket: Ticket, function: Callable[..., T], args: tuple[Any, ...]) -> T:
    with holding(ticket):
        return function(*args)


def _expired() -> ApiError:
    return ApiError(503, "deadline_exceeded", "The server could not answer in time; retry in a moment.")


async def _watch_disconnect(request: Request, ticket: Ticket, scope: anyio.CancelScope) -> None:
    while not await request.is_disconnected():
        await anyio.sleep(DISCONNECT_POLL_SECONDS)
    log.info("client disconnected; request cancelled", extra={"path": request.url.path})
    ticket.cancel()
    scope.cancel()
