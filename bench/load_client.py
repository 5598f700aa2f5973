"""The load bench's clients: closed loop (N clients, each waits for its answer) and open loop (a
fixed arrival rate, whether or not earlier requests were answered), over loopback only.

Open-loop latency counts from the moment a request was due, not when it was sent: a client that
falls behind must not hide the server's queueing (coordinated omission). Every request is bounded:
a level stops at its duration or its request count, whichever comes first, and an open loop never
has more than `max_in_flight` requests out (the rest are counted as `not_sent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

Clock = Callable[[], float]
NOT_SENT = -1
"""Status of an open-loop arrival the client dropped because `max_in_flight` were out."""
NO_ANSWER = 0
"""Status of a request that got no HTTP answer (refused connection, timeout)."""
REQUEST_TIMEOUT_S = 120.0


def check_loopback(base: str) -> None:
    """The bench talks to the server it started and to nothing else."""
    if urlsplit(base).hostname != "127.0.0.1":
        raise ValueError(f"the load bench only connects to 127.0.0.1, not {base}")


@dataclass(frozen=True)
class Workload:
    """What the clients send: text queries in turn, and every `image_every`-th request an image upload
    (none when `images` is empty or `image_every` is 0)."""

    queries: tuple[str, ...]
    images: tuple[bytes, ...] = ()
    image_every: int = 9
    k: int = 10

    def request(self, number: int) -> tuple[str, str | bytes]:
        if self.images and self.image_every and number % self.image_every == self.image_every - 1:
            return "image", self.images[(number // self.image_every) % len(self.images)]
        return "text", self.queries[number % len(self.queries)]


@dataclass
class Outcome:
    kind: str
    status: int
    seconds: float
    reranked_count: int | None = None
    rerank_shed: bool = False
    query: str | None = None
    hits: tuple[tuple[int, float], ...] | None = None
    retry_after: float | None = None


async def send(
    client: httpx.AsyncClient, base: str, workload: Workload, number: int, due: float, clock: Clock
) -> Outcome:
    kind, payload = workload.request(number)
    try:
        if kind == "image":
            response = await client.post(
                f"{base}/v1/search/image",
                params={"k": workload.k},
                files={"file": ("query.png", payload, "image/png")},
            )
        else:
            response = await client.get(f"{base}/v1/search", params={"q": payload, "k": workload.k})
    except httpx.HTTPError:
        return Outcome(kind, NO_ANSWER, clock() - due)
    outcome = Outcome(kind, response.status_code, clock() - due)
    if response.status_code == 503:
        with contextlib.suppress(ValueError):
            outcome.retry_after = float(response.headers.get("retry-after", ""))
    if response.status_code == 200:
        page = response.json()
        outcome.reranked_count = page.get("reranked_count")
        outcome.rerank_shed = bool(page.get("rerank_shed", False))
        if kind == "text":
            outcome.query = str(payload)
            outcome.hits = tuple((hit["item_id"], hit["score"]) for hit in page["hits"])
    return outcome


def _client(connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    # trust_env off: no proxy variable may route loopback traffic elsewhere
    return httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S, trust_env=False)


async def closed_loop(
    base: str,
    workload: Workload,
    clients: int,
    seconds: float,
    *,
    max_requests: int,
    retry_after_cap: float = 1.0,
    clock: Clock = time.perf_counter,
) -> tuple[list[Outcome], float]:
    """`clients` clients, each sending its next request when the last is answered; until `seconds`
    have passed or `max_requests` were sent. Returns the outcomes and the elapsed seconds (until the
    last answer).

    A client refused with 503 waits its Retry-After (at most `retry_after_cap` s) as a polite
    client does: retrying at once would spin on the refusals and take CPU from the server it shares
    the machine with."""
    check_loopback(base)
    outcomes: list[Outcome] = []
    numbers = iter(range(max_requests))
    async with _client(clients) as client:
        started = clock()
        end = started + seconds

        async def one_client() -> None:
            while clock() < end:
                number = next(numbers, None)
                if number is None:
                    return
                outcome = await send(client, base, workload, number, clock(), clock)
                outcomes.append(outcome)
                if outcome.retry_after:
                    await asyncio.sleep(max(0.0, min(outcome.retry_after, retry_after_cap, end - clock())))

        await asyncio.gather(*(one_client() for _ in range(clients)))
        return outcomes, clock() - started


def arrivals(rate: float, seconds: float, *, poisson: bool, seed: int, limit: int) -> list[float]:
    """Due times (seconds from the start) of a `rate` per second arrival process over `seconds`."""
    rng = random.Random(seed)
    times: list[float] = []
    moment = 0.0
    while len(times) < limit:
        moment += rng.expovariate(rate) if poisson else 1.0 / rate
        if moment >= seconds:
            break
        times.append(moment)
    return times


async def open_loop(
    base: str,
    workload: Workload,
    rate: float,
    seconds: float,
    *,
    max_requests: int,
    max_in_flight: int = 256,
    poisson: bool = True,
    seed: int = 0,
    clock: Clock = time.perf_counter,
) -> tuple[list[Outcome], float]:
    """Requests at `rate` per second for `seconds` (Poisson or evenly spaced), each on its own task."""
    check_loopback(base)
    outcomes: list[Outcome] = []
    tasks: set[asyncio.Task[None]] = set()
    async with _client(max_in_flight) as client:
        started = clock()

        async def one(number: int, due: float) -> None:
            outcomes.append(await send(client, base, workload, number, due, clock))

        for number, offset in enumerate(
            arrivals(rate, seconds, poisson=poisson, seed=seed, limit=max_requests)
        ):
            delay = started + offset - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_in_flight:
                outcomes.append(Outcome(workload.request(number)[0], NOT_SENT, 0.0))
                continue
            task = asyncio.create_task(one(number, started + offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        return outcomes, max(clock() - started, seconds)


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (`share` in 0..100): a value that was measured, never interpolated."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share / 100 * len(ordered)) - 1)]


def summarize(outcomes: list[Outcome], elapsed: float) -> dict[str, Any]:
    """Per request kind: throughput of OK answers, latency percentiles of OK answers (ms), statuses,
    503 share, re-rank depth and shedding of the OK pages."""
    result: dict[str, Any] = {"elapsed_s": round(elapsed, 2)}
    for kind in sorted({outcome.kind for outcome in outcomes}):
        mine = [outcome for outcome in outcomes if outcome.kind == kind]
        ok = [outcome for outcome in mine if outcome.status == 200]
        latencies = [outcome.seconds * 1000 for outcome in ok]
        statuses = Counter(outcome.status for outcome in mine)
        depths = [outcome.reranked_count for outcome in ok if outcome.reranked_count is not None]
        answered = len(mine) - statuses[NOT_SENT]
        result[kind] = {
            "requests": len(mine),
            "ok": len(ok),
            "ok_per_s": round(len(ok) / elapsed, 2) if elapsed > 0 else 0.0,
            **{f"p{p}_ms": _round(percentile(latencies, p)) for p in (50, 95, 99)},
            "statuses": {str(status): count for status, count in sorted(statuses.items())},
            "share_503": round(statuses[503] / answered, 4) if answered else 0.0,
            "other_errors": answered - len(ok) - statuses[503],
            "mean_reranked_count": round(sum(depths) / len(depths), 2) if depths else None,
            "rerank_shed_share": round(sum(o.rerank_shed for o in ok) / len(ok), 4) if ok else None,
        }
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def first_answers(outcomes: list[Outcome]) -> dict[str, list[tuple[int, float]]]:
    """Each text query's first full-depth answer (pages whose re-rank depth was shed left out)."""
    answers: dict[str, list[tuple[int, float]]] = {}
    for outcome in outcomes:
        if outcome.query is not None and outcome.hits is not None and not outcome.rerank_shed:
            answers.setdefault(outcome.query, list(outcome.hits))
    return answers


def compare_answers(
    left: dict[str, list[tuple[int, float]]],
    right: dict[str, list[tuple[int, float]]],
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Queries both sides answered: how many returned the same ids in the same order with scores
    within `tolerance`; the largest score difference among same-id answers."""
    common = sorted(set(left) & set(right))
    same, worst, differing = 0, 0.0, []
    for query in common:
        a, b = left[query], right[query]
        if [item for item, _ in a] != [item for item, _ in b]:
            differing.append(query)
            continue
        gap = max((abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)), default=0.0)
        worst = max(worst, gap)
        if gap <= tolerance:
            same += 1
        else:
            differing.append(query)
    return {
        "queries": len(common),
        "same": same,
        "max_score_diff": worst,
        "tolerance": tolerance,
        "differing": differing[:10],
    }
