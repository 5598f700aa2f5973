"""Dynamic batching: the model work of concurrent requests runs in shared forwards.

On a CPU a forward over eight short query texts costs little more than one over a single text (the
weights are read once either way), and on a GPU the difference is one to two orders of magnitude.
Each kind of model work (query texts, ITM pairs, query images, captions) has a `MicroBatcher`: a
request thread hands it its items and waits; one batching thread per kind takes whatever is
waiting, lets a short window pass for more to arrive while the first waits, and runs them as one
call. All kinds share one model lock, so two forwards never fight over the same cores.

A request's `Ticket` travels with its thread (a context variable): its items are dropped before
a forward if its client went away or its deadline passed, and its wait ends at once either way,
so an abandoned request frees its place instead of holding it until the model is done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from blipsearch.errors import BlipsearchError, RequestCancelledError, RequestExpiredError

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")

WAIT_SLICE_SECONDS = 0.05
"""How often a waiting request looks at its ticket: the longest a disconnect goes unnoticed."""


@dataclass
class Ticket:
    """One request's claim on model work: its deadline, whether its client is still there, and the
    share of the re-ranking depth admission left it (below 1 under overload)."""

    deadline: float | None = None
    """On `clock`; None: no deadline (the CLI, tests)."""
    rerank_scale: float = 1.0
    clock: Callable[[], float] = time.monotonic
    cancelled: threading.Event = field(default_factory=threading.Event)
    expired: bool = False

    def cancel(self, *, expired: bool = False) -> None:
        self.expired = self.expired or expired
        self.cancelled.set()

    def check(self) -> None:
        """Raise if this request's work should stop: its client left or its deadline passed."""
        if self.deadline is not None and self.clock() >= self.deadline:
            self.cancel(expired=True)
        if self.cancelled.is_set():
            if self.expired:
                raise RequestExpiredError("The request waited past its deadline.")
            raise RequestCancelledError("The request was cancelled.")

    def live(self) -> bool:
        try:
            self.check()
        except BlipsearchError:
            return False
        return True

    def shed_depth(self, depth: int) -> int:
        """The re-ranking depth left to this request: all of it unless admission shed some."""
        if self.rerank_scale >= 1.0:
            return depth
        return max(0, int(depth * self.rerank_scale))


_current: ContextVar[Ticket | None] = ContextVar("blipsearch_ticket", default=None)


def current_ticket() -> Ticket | None:
    return _current.get()


@contextmanager
def holding(ticket: Ticket | None) -> Iterator[None]:
    """Run the block as the request `ticket` belongs to (its thread's model work carries it)."""
    token = _current.set(ticket)
    try:
        yield
    finally:
        _current.reset(token)


class _Waiting(Generic[In, Out]):
    __slots__ = ("done", "error", "items", "results", "ticket")

    def __init__(self, items: list[In], ticket: Ticket | None) -> None:
        self.items = items
        self.ticket = ticket
        self.done = threading.Event()
        self.results: list[Out] = []
        self.error: BaseException | None = None

    def live(self) -> bool:
        return self.ticket is None or self.ticket.live()


class MicroBatcher(Generic[In, Out]):
    """Runs `run(items)` over the items of every request waiting, at most `max_items` per call.

    `run` must return one result per item, in order, and answer each item as it would alone (the
    equality tests hold every batched path to that). A request's items always go in the same
    call, so one request larger than `max_items` runs on its own. When a call fails, its requests
    are retried one by one, so a bad input fails only its own request.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[list[In]], Sequence[Out]],
        *,
        window_seconds: float,
        max_items: int,
        model_lock: threading.Lock,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.run = run
        self.window_seconds = window_seconds
        self.max_items = max_items
        self.model_lock = model_lock
        self.clock = clock
        self.calls = 0
        """Batched calls made (for tests and metrics)."""
        self.batch_sizes: deque[int] = deque(maxlen=1024)
        """Items per recent call."""
        self.observer: Callable[[str, int], None] | None = None
        """Told (kind, items) after every call."""
        self._queue: deque[_Waiting[In, Out]] = deque()
        self._arrived: dict[int, float] = {}
        self._condition = threading.Condition()
        self._paused = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def __call__(self, items: Sequence[In]) -> list[Out]:
        """The results of `items`, computed in a shared call; raises what the request's own
        ticket says (cancelled, expired) the moment it says it."""
        if not items:
            return []
        ticket = current_ticket()
        if ticket is not None:
            ticket.check()
        waiting: _Waiting[In, Out] = _Waiting(list(items), ticket)
        with self._condition:
            self._queue.append(waiting)
            self._arrived[id(waiting)] = self.clock()
            self._start()
            self._condition.notify_all()
        while not waiting.done.wait(WAIT_SLICE_SECONDS):
            if ticket is not None and not ticket.live():
                with self._condition:
                    if waiting in self._queue:
                        self._queue.remove(waiting)
                        self._arrived.pop(id(waiting), None)
                ticket.check()
        if waiting.error is not None:
            raise waiting.error
        return waiting.results

    def queued(self) -> int:
        """Requests waiting for a call (not counting one running)."""
        with self._condition:
            return len(self._queue)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No call starts inside the block; what arrives meanwhile waits and then goes together.

        Tests use it to put known requests in one batch without depending on timing.
        """
        with self._condition:
            self._paused += 1
        try:
            yield
        finally:
            with self._condition:
                self._paused -= 1
                self._condition.notify_all()

    def close(self) -> None:
        """End the batching thread once nothing waits; a later call starts it again."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def _start(self) -> None:
        self._closed = False
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=f"batch-{self.name}", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            live = []
            for waiting in batch:
                if waiting.live():
                    live.append(waiting)
                else:
                    waiting.error = _stopped(waiting.ticket)
                    waiting.done.set()
            if live:
                self._execute(live)

    def _next_batch(self) -> list[_Waiting[In, Out]]:
        with self._condition:
            while True:
                while not self._queue or self._paused:
                    if self._closed and not self._queue:
                        self._thread = None  # decided under the lock: the next call starts another
                        return []
                    self._condition.wait()
                left = self._arrived[id(self._queue[0])] + self.window_seconds - self.clock()
                if left <= 0 or sum(len(w.items) for w in self._queue) >= self.max_items:
                    break
                self._condition.wait(left)
            batch = [self._queue.popleft()]
            size = len(batch[0].items)
            while self._queue and size + len(self._queue[0].items) <= self.max_items:
                size += len(self._queue[0].items)
                batch.append(self._queue.popleft())
            for waiting in batch:
                self._arrived.pop(id(waiting), None)
            return batch

    def _execute(self, batch: list[_Waiting[In, Out]]) -> None:
        items = [item for waiting in batch for item in waiting.items]
        try:
            with self.model_lock:
                results = list(self.run(items))
            self.calls += 1
            self.batch_sizes.append(len(items))
            if self.observer is not None:
                self.observer(self.name, len(items))
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done.set()
                return
            log.warning("batched call failed; retrying its requests one by one", extra={"kind": self.name})
            for waiting in batch:
                self._execute([waiting])
            return
        start = 0
        for waiting in batch:
            waiting.results = results[start : start + len(waiting.items)]
            start += len(waiting.items)
            waiting.done.set()


def _stopped(ticket: Ticket | None) -> BlipsearchError:
    if ticket is not None and ticket.expired:
        return RequestExpiredError("The request waited past its deadline.")
    return RequestCancelledError("The request was cancelled.")


class DirectRunner(Generic[In, Out]):
    """The unbatched path (`batching=false`): each request runs its own call, in its own thread."""

    def __init__(self, name: str, run: Callable[[list[In]], Sequence[Out]]) -> None:
        self.name = name
        self.run = run
        self.calls = 0

    def __call__(self, items: Sequence[In]) -> list[Out]:
        if not items:
            return []
        ticket = current_ticket()
        if ticket is not None:
            ticket.check()
        self.calls += 1
        return list(self.run(list(items)))
