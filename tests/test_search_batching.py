"""MicroBatcher and Ticket: requests share calls, keep their own results, and leave when told.

Which requests end up in one call depends on thread timing, so every test that asserts a batch's
contents first pauses the batcher, waits until the known requests are queued, then releases it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from blipsearch.errors import RequestCancelledError, RequestExpiredError
from blipsearch.search.batching import DirectRunner, MicroBatcher, Ticket, current_ticket, holding

from test_search_clock import ManualClock

WAIT_S = 60.0


class Recorder:
    """A batch function that answers each item with item * 10 and remembers every call."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot take {self.fail_on}")
        return [item * 10 for item in items]


def _batcher(run: Callable[[list[int]], list[int]], *, max_items: int = 64) -> MicroBatcher[int, int]:
    return MicroBatcher("test", run, window_seconds=0.0, max_items=max_items, model_lock=threading.Lock())


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


class Request(threading.Thread):
    """One request's thread: submits its items (as `ticket`'s request) and keeps what came back."""

    def __init__(self, batcher: MicroBatcher[int, int], items: list[int], ticket: Ticket | None = None):
        super().__init__(daemon=True)
        self.batcher, self.items, self.ticket = batcher, items, ticket
        self.result: list[int] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        with holding(self.ticket):
            try:
                self.result = self.batcher(self.items)
            except BaseException as exc:
                self.error = exc


def _run_paused(batcher: MicroBatcher[int, int], requests: list[Request]) -> None:
    with batcher.paused():
        for request in requests:
            request.start()
        _wait_until(lambda: batcher.queued() == len(requests))
    for request in requests:
        request.join(WAIT_S)
        assert not request.is_alive()


def test_concurrent_requests_share_one_call_and_each_gets_its_own_results() -> None:
    recorder = Recorder()
    batcher = _batcher(recorder)
    requests = [Request(batcher, [n, n + 100]) for n in range(5)]
    _run_paused(batcher, requests)
    assert len(recorder.calls) == 1 and sorted(recorder.calls[0]) == sorted(
        item for request in requests for item in request.items
    )
    for request in requests:
        assert request.error is None
        assert request.result == [item * 10 for item in request.items]
    assert batcher.calls == 1 and list(batcher.batch_sizes) == [10]


def test_a_call_is_cut_between_requests_never_inside_one() -> None:
    recorder = Recorder()
    batcher = _batcher(recorder, max_items=3)
    sizes = [2, 2, 1, 4]
    requests = []
    with batcher.paused():
        for size in sizes:  # queued one at a time, so the queue's order is known
            request = Request(batcher, list(range(len(requests) * 10, len(requests) * 10 + size)))
            request.start()
            requests.append(request)
            _wait_until(lambda: batcher.queued() == len(requests))
    for request in requests:
        request.join(WAIT_S)
    # first come first served; a request over the limit runs alone rather than being split
    assert [len(call) for call in recorder.calls] == [2, 3, 4]
    assert all(request.result == [item * 10 for item in request.items] for request in requests)


def test_a_failing_item_fails_only_its_own_request() -> None:
    recorder = Recorder(fail_on=7)
    batcher = _batcher(recorder)
    requests = [Request(batcher, [1]), Request(batcher, [7]), Request(batcher, [3, 4])]
    _run_paused(batcher, requests)
    assert requests[0].result == [10] and requests[2].result == [30, 40]
    assert isinstance(requests[1].error, ValueError) and requests[1].result is None
    # the shared call failed, then each request ran alone
    assert len(recorder.calls) == 4 and sorted(map(tuple, recorder.calls[1:])) == [(1,), (3, 4), (7,)]


def test_a_cancelled_request_leaves_the_queue_at_once_and_its_items_never_run() -> None:
    recorder = Recorder()
    batcher = _batcher(recorder)
    leaving = Request(batcher, [5], Ticket())
    staying = Request(batcher, [6], Ticket())
    with batcher.paused():
        leaving.start()
        staying.start()
        _wait_until(lambda: batcher.queued() == 2)
        assert leaving.ticket is not None
        leaving.ticket.cancel()
        # it returns while the batcher is still paused: its place is free before any forward
        leaving.join(WAIT_S)
        assert not leaving.is_alive() and isinstance(leaving.error, RequestCancelledError)
        assert batcher.queued() == 1
    staying.join(WAIT_S)
    assert staying.result == [60]
    assert recorder.calls == [[6]]


def test_a_request_past_its_deadline_is_dropped_with_its_own_error() -> None:
    clock = ManualClock()
    recorder = Recorder()
    batcher = _batcher(recorder)
    late = Request(batcher, [1], Ticket(deadline=clock() + 5.0, clock=clock))
    on_time = Request(batcher, [2], Ticket(deadline=clock() + 500.0, clock=clock))
    with batcher.paused():
        late.start()
        on_time.start()
        _wait_until(lambda: batcher.queued() == 2)
        clock.advance(10.0)
        late.join(WAIT_S)
        assert isinstance(late.error, RequestExpiredError)
    on_time.join(WAIT_S)
    assert on_time.result == [20] and recorder.calls == [[2]]


def test_a_ticket_already_spent_never_queues() -> None:
    recorder = Recorder()
    batcher = _batcher(recorder)
    ticket = Ticket()
    ticket.cancel()
    with holding(ticket), pytest.raises(RequestCancelledError):
        batcher([1])
    assert batcher.queued() == 0 and recorder.calls == []


def test_forwards_of_different_kinds_never_overlap() -> None:
    lock = threading.Lock()
    inside = 0
    most = 0
    guard = threading.Lock()

    def run(items: list[int]) -> list[int]:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.01)
        with guard:
            inside -= 1
        return items

    kinds = [MicroBatcher(f"k{n}", run, window_seconds=0.0, max_items=4, model_lock=lock) for n in range(3)]
    threads = [Request(kinds[n % 3], [n]) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert all(thread.result == thread.items for thread in threads)
    assert most == 1


def test_the_direct_runner_runs_each_request_alone_and_honours_its_ticket() -> None:
    recorder = Recorder()
    runner: DirectRunner[int, int] = DirectRunner("test", recorder)
    assert runner([1, 2]) == [10, 20] and runner([3]) == [30]
    assert recorder.calls == [[1, 2], [3]]
    ticket = Ticket()
    ticket.cancel()
    with holding(ticket), pytest.raises(RequestCancelledError):
        runner([4])
    assert recorder.calls == [[1, 2], [3]]


@pytest.mark.parametrize(
    ("scale", "depth", "left"), [(1.0, 8, 8), (0.5, 8, 4), (0.3, 8, 2), (0.0, 8, 0), (0.99, 1, 0)]
)
def test_a_shed_ticket_keeps_its_share_of_the_depth_rounded_down(scale: float, depth: int, left: int) -> None:
    assert Ticket(rerank_scale=scale).shed_depth(depth) == left


def test_the_ticket_travels_with_the_request_and_is_gone_after() -> None:
    ticket = Ticket()
    seen: list[Any] = []
    with holding(ticket):
        seen.append(current_ticket())
    seen.append(current_ticket())
    assert seen == [ticket, None]


def test_a_closed_batcher_ends_its_thread_and_a_later_call_starts_it_again() -> None:
    recorder = Recorder()
    batcher = _batcher(recorder)
    assert batcher([1]) == [10]
    thread = batcher._thread
    assert thread is not None and thread.is_alive()
    batcher.close()
    assert not thread.is_alive()
    assert batcher([2]) == [20] and recorder.calls == [[1], [2]]
    batcher.close()
