"""`blipsearch serve --workers 2` as a process a user starts: consistent answers from both workers.

The real server runs as a subprocess on a free loopback port. A request's worker is told by
`/readyz` on the same connection (one connection per client, checked again after the request);
fresh connections are opened until both worker pids have answered. Uploads go through one worker
and are checked on both, deletes too; the upkeep worker commits index generations for writes made
through the other one; a killed worker comes back; SIGTERM to the parent stops every process.
Nothing here is timed: every wait polls against a generous deadline.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from blipsearch.cli.serve_workers import (
    FIRST_RESTART_SECONDS,
    MOST_RESTART_SECONDS,
    SharedDepth,
    restart_delay,
    torch_threads,
)
from blipsearch.search.rerank_depth import RerankDepth
from blipsearch.settings import Settings
from blipsearch.storage.snapshots import IndexStore

from imagesets import TEST_MAX_PIXELS, noise_png

KEY = "workers-key"
AUTH = {"X-API-Key": KEY}
CATEGORY = "workers-test"
JOB_SEEDS = (500, 501, 502)
"""Images of the folder an ingest job indexes."""
DEADLINE = 240.0
"""Seconds any wait may take: two workers import torch and load a model each on a loaded 2-core machine."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    data_dir: Path
    log: Path

    def client(self) -> httpx.Client:
        """A client on one connection of its own: the kernel hands it to either worker."""
        return httpx.Client(
            base_url=self.base, timeout=60, headers=AUTH, limits=httpx.Limits(max_connections=1)
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _start(tmp_path: Path, model: Path, *extra: str, database_url: str | None = None) -> Server:
    """FAISS indexes on either catalog: what each worker holds in memory and must keep current."""
    data_dir = tmp_path / "data"
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLIPSEARCH_")}
    env.update(
        BLIPSEARCH_DATA_DIR=str(data_dir),
        BLIPSEARCH_DATABASE_URL=database_url or f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        BLIPSEARCH_VECTOR_STORE="faiss",
        BLIPSEARCH_RETRIEVAL_MODEL=str(model),
        BLIPSEARCH_DEVICE="cpu",
        BLIPSEARCH_DTYPE="float32",
        BLIPSEARCH_OFFLINE="1",
        BLIPSEARCH_MAX_IMAGE_PIXELS=str(TEST_MAX_PIXELS),
        BLIPSEARCH_API_KEY=KEY,
        BLIPSEARCH_HOST="127.0.0.1",
        BLIPSEARCH_PORT=str(port),
        BLIPSEARCH_API_CHECKPOINT_CHANGES="3",
        BLIPSEARCH_API_CHECKPOINT_SECONDS="1",
        BLIPSEARCH_LOG_FORMAT="json",
        BLIPSEARCH_INGEST_ROOTS=json.dumps([str(tmp_path / "photos")]),
    )
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    for seed in JOB_SEEDS:
        (photos / f"{seed}.png").write_bytes(noise_png(seed))
    log = tmp_path / "server.log"
    with open(log, "ab") as output:  # a file, not a pipe: a full pipe would stall the server
        process = subprocess.Popen(
            [sys.executable, "-m", "blipsearch", "serve", "--workers", "2", *extra],
            env=env,
            stdout=output,
            stderr=output,
        )
    return Server(process, f"http://127.0.0.1:{port}", data_dir, log)


def _worker(client: httpx.Client) -> dict[str, Any] | None:
    try:
        answer = client.get("/readyz")
    except httpx.HTTPError:
        return None
    return answer.json()["worker"] if answer.status_code == 200 else None


def _on_each_worker(server: Server, check: Callable[[httpx.Client], None]) -> dict[int, int]:
    """Run `check` on fresh connections until each worker index has run it; their pids.

    A sample counts only if the connection's worker was the same before and after the check.
    """
    seen: dict[int, int] = {}
    deadline = time.monotonic() + DEADLINE
    while len(seen) < 2:
        assert time.monotonic() < deadline, f"not every worker answered: {seen}\n{server.tail()}"
        assert server.process.poll() is None, server.tail()
        with server.client() as client:
            before = _worker(client)
            if before is None or before["index"] in seen:
                time.sleep(0.05)
                continue
            check(client)
            if _worker(client) == before:
                seen[before["index"]] = before["pid"]
    return seen


@contextmanager
def _pinned(server: Server, index: int) -> Iterator[httpx.Client]:
    """A client whose connection is served by worker `index`."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        with server.client() as client:
            worker = _worker(client)
            if worker is not None and worker["index"] == index:
                yield client
                assert _worker(client) == worker, "the connection moved to another worker"
                return
        time.sleep(0.05)
    raise AssertionError(f"worker {index} never answered\n{server.tail()}")


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture
def server(tmp_path: Path, tiny_checkpoints: Any) -> Iterator[Server]:
    started = _start(tmp_path, tiny_checkpoints.retrieval)
    try:
        yield started
    finally:
        _stop(started)


@pytest.fixture
def server_on_each_database(tmp_path: Path, tiny_checkpoints: Any, database_url: str) -> Iterator[Server]:
    started = _start(tmp_path, tiny_checkpoints.retrieval, database_url=database_url)
    try:
        yield started
    finally:
        _stop(started)


@dataclass
class Ledger:
    """What the writers were told, by image seed (SQLite hands a deleted highest id to the next
    item, so an id alone does not name an upload); a write still unanswered may go either way."""

    live: dict[int, int] = field(default_factory=dict)
    """seed -> item id of every acknowledged upload not being deleted"""
    deleted: set[int] = field(default_factory=set)
    """seeds of every acknowledged delete"""
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _writes(server: Server, ledger: Ledger, seeds: range) -> None:
    """Uploads, and every third write a delete of one of this writer's uploads, each on a fresh
    connection (so through either worker)."""
    mine: list[int] = []
    for step, seed in enumerate(seeds):
        with server.client() as client:
            if step % 3 == 2 and mine:
                victim = mine.pop(0)
                with ledger.lock:
                    item_id = ledger.live.pop(victim)  # in flight: no longer asserted either way
                answer = client.delete(f"/v1/items/{item_id}")
                if answer.status_code != 204:
                    ledger.errors.append(f"delete {item_id}: {answer.status_code} {answer.text[:200]}")
                    return
                with ledger.lock:
                    ledger.deleted.add(victim)
                continue
            answer = client.post(
                "/v1/items",
                files={"file": (f"{seed}.png", noise_png(seed), "image/png")},
                data={"category": CATEGORY, "title": f"noise {seed}"},
            )
            if answer.status_code != 201:
                ledger.errors.append(f"upload {seed}: {answer.status_code} {answer.text[:200]}")
                return
            mine.append(seed)
            with ledger.lock:
                ledger.live[seed] = int(answer.json()["item_id"])


def _upload(client: httpx.Client, seed: int) -> int:
    answer = client.post(
        "/v1/items",
        files={"file": (f"{seed}.png", noise_png(seed), "image/png")},
        data={"category": CATEGORY, "title": f"noise {seed}"},
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["item_id"])


def _category_by_vectors(client: httpx.Client) -> list[int]:
    """Every item of the category through the vector index (a filtered vector search)."""
    answer = client.get(
        "/v1/search",
        params={"q": "noise", "mode": "vector", "filter": f"category={CATEGORY}", "k": 100},
    )
    assert answer.status_code == 200, answer.text
    return sorted(hit["item_id"] for hit in answer.json()["hits"])


def _category_seeds(client: httpx.Client) -> set[int]:
    """The images of the category the vector index returns, named by their seed (in the title)."""
    answer = client.get(
        "/v1/search",
        params={"q": "noise", "mode": "vector", "filter": f"category={CATEGORY}", "k": 100},
    )
    assert answer.status_code == 200, answer.text
    return {int(hit["title"].split()[-1]) for hit in answer.json()["hits"]}


def _category_by_browse(client: httpx.Client) -> list[int]:
    answer = client.get("/v1/search", params={"filter": f"category={CATEGORY}", "k": 100})
    assert answer.status_code == 200, answer.text
    return sorted(hit["item_id"] for hit in answer.json()["hits"])


def _first_by_image(client: httpx.Client, seed: int) -> list[int]:
    answer = client.post(
        "/v1/search/image", params={"k": 3}, files={"file": ("q.png", noise_png(seed), "image/png")}
    )
    assert answer.status_code == 200, answer.text
    return [hit["item_id"] for hit in answer.json()["hits"]]


def _agrees(live: dict[int, int], deleted: dict[int, int], client: httpx.Client) -> None:
    """Every acknowledged upload is there and found, no acknowledged delete is returned."""
    for item_id in live:
        assert client.get(f"/v1/items/{item_id}").status_code == 200, item_id
    newest = max(live)
    assert _first_by_image(client, live[newest])[0] == newest
    for item_id, seed in deleted.items():
        assert client.get(f"/v1/items/{item_id}").status_code == 404, item_id
        assert item_id not in _first_by_image(client, seed)
    assert _category_by_vectors(client) == sorted(live)
    assert _category_by_browse(client) == sorted(live)


def _committed_change(data_dir: Path) -> int:
    manifest = IndexStore(data_dir / "indexes", "images").read_manifest()
    return manifest.last_change_id if manifest is not None else 0


@pytest.mark.timeout(1200)
def test_two_workers_answer_consistently_while_items_come_and_go(server_on_each_database: Server) -> None:
    server = server_on_each_database
    pids = _on_each_worker(server, lambda client: None)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    roles = {}
    for index in (0, 1):
        with _pinned(server, index) as client:
            roles[index] = client.get("/readyz").json()["worker"]
    assert roles[0]["upkeep"] is True and roles[1]["upkeep"] is False, roles

    live: dict[int, int] = {}
    deleted: dict[int, int] = {}
    for round_number in range(4):
        seeds = [100 + round_number * 10 + offset for offset in range(3)]
        # uploads through worker 1, which commits nothing itself
        with _pinned(server, 1) as writer:
            for seed in seeds:
                live[_upload(writer, seed)] = seed
            if round_number % 2 == 1:
                victim = sorted(live)[0]
                assert writer.delete(f"/v1/items/{victim}").status_code == 204
                deleted[victim] = live.pop(victim)
        _on_each_worker(server, functools.partial(_agrees, dict(live), dict(deleted)))

    # two writers at once, through both workers, while both answer searches
    ledger = Ledger(live={seed: item_id for item_id, seed in live.items()}, deleted=set(deleted.values()))
    writers = [
        threading.Thread(target=_writes, args=(server, ledger, range(first, first + 12)))
        for first in (300, 400)
    ]
    for writer in writers:
        writer.start()
    answered: collections.Counter[int] = collections.Counter()
    deadline = time.monotonic() + DEADLINE
    while any(writer.is_alive() for writer in writers) or min(answered[0], answered[1]) < 3:
        assert time.monotonic() < deadline, f"searches answered by {answered}\n{server.tail()}"
        with ledger.lock:  # acknowledged before the search is sent: it must reflect them
            live_before, must_not_find = set(ledger.live), set(ledger.deleted)
        with server.client() as client:
            before = _worker(client)
            found = _category_seeds(client)
            after = _worker(client)
        with ledger.lock:  # an upload whose delete began meanwhile may be gone
            must_find = live_before & set(ledger.live)
        assert must_find <= found, f"acknowledged uploads missing: {sorted(must_find - found)}"
        assert not must_not_find & found, f"deleted images returned: {sorted(must_not_find & found)}"
        if before is not None and before == after:
            answered[before["index"]] += 1
    for writer in writers:
        writer.join()
    assert not ledger.errors, ledger.errors
    live = {item_id: seed for seed, item_id in ledger.live.items()}
    _on_each_worker(server, functools.partial(_agrees, dict(live), {}))

    def finds_every_seed(client: httpx.Client) -> None:
        assert _category_seeds(client) == set(ledger.live)

    _on_each_worker(server, finds_every_seed)

    # the same query, the same answer, whichever worker runs it (re-ranked: both use one depth)
    answers: dict[int, list[tuple[int, float]]] = {}
    depths: dict[int, Any] = {}

    def ask(client: httpx.Client) -> None:
        index = client.get("/readyz").json()["worker"]["index"]
        page = client.get("/v1/search", params={"q": "noise image", "k": 50})
        assert page.status_code == 200, page.text
        answers[index] = [(hit["item_id"], round(hit["score"], 4)) for hit in page.json()["hits"]]
        depths[index] = client.get("/readyz").json()["rerank_depth"]

    _on_each_worker(server, ask)
    assert answers[0] == answers[1] and sorted(item_id for item_id, _ in answers[0]) == sorted(live)
    assert depths[0] == depths[1] is not None

    # worker 0 commits a generation covering writes made through worker 1
    with _pinned(server, 1) as writer:
        last_write = writer.get("/readyz").json()["last_change_id"]
    assert last_write > 0
    deadline = time.monotonic() + DEADLINE
    while _committed_change(server.data_dir) < last_write:
        assert time.monotonic() < deadline, f"no generation covers change {last_write}\n{server.tail()}"
        time.sleep(0.2)

    # a job requested through worker 1 (which runs none) is run by worker 0, seen by both
    with _pinned(server, 1) as writer:
        job = writer.post("/v1/jobs", json={"path": str(server.data_dir.parent / "photos")})
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + DEADLINE
        while (status := writer.get(f"/v1/jobs/{job.json()['id']}").json())["status"] != "succeeded":
            assert status["status"] in ("queued", "running"), status
            assert time.monotonic() < deadline, f"the job never ran: {status}\n{server.tail()}"
            time.sleep(0.2)

    def finds_the_folder(client: httpx.Client) -> None:
        for seed in JOB_SEEDS:
            top = client.post(
                "/v1/search/image", params={"k": 1}, files={"file": ("q.png", noise_png(seed), "image/png")}
            ).json()["hits"][0]
            assert top["item_id"] not in live and top["itc_score"] > 0.99, (seed, top)

    _on_each_worker(server, finds_the_folder)


def _wait_for_new_pid(server: Server, index: int, old_pid: int) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        assert time.monotonic() < deadline, f"worker {index} was not restarted\n{server.tail()}"
        assert server.process.poll() is None, server.tail()
        with server.client() as client:
            worker = _worker(client)
        if worker is not None and worker["index"] == index and worker["pid"] != old_pid:
            return worker
        time.sleep(0.1)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie child of the parent still answers kill 0 until reaped; the parent reaps its workers
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" in status.read_text()


@pytest.mark.timeout(1200)  # three worker starts, each importing torch, on a loaded 2-core machine
def test_killed_workers_come_back_and_sigterm_stops_all(server: Server) -> None:
    pids = _on_each_worker(server, lambda client: None)

    os.kill(pids[1], signal.SIGKILL)
    second = _wait_for_new_pid(server, 1, pids[1])
    assert second["upkeep"] is False

    os.kill(pids[0], signal.SIGKILL)
    first = _wait_for_new_pid(server, 0, pids[0])
    assert first["upkeep"] is True
    # the restarted upkeep worker checkpoints again: writes through worker 1 get committed
    with _pinned(server, 1) as writer:
        for seed in (900, 901, 902, 903):
            _upload(writer, seed)
        last_write = writer.get("/readyz").json()["last_change_id"]
    deadline = time.monotonic() + DEADLINE
    while _committed_change(server.data_dir) < last_write:
        assert time.monotonic() < deadline, f"no generation after the restart\n{server.tail()}"
        time.sleep(0.2)

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=120) == 0, server.tail()
    deadline = time.monotonic() + DEADLINE
    for pid in (first["pid"], second["pid"]):
        while not _gone(pid):
            assert time.monotonic() < deadline, f"worker {pid} outlived the parent"
            time.sleep(0.1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.base}/healthz", timeout=5)
    assert server.log.read_text().count("worker exited; restarting it") == 2


def test_a_worker_that_cannot_start_ends_the_server(tmp_path: Path) -> None:
    broken = _start(tmp_path, tmp_path / "no-such-model")
    try:
        assert broken.process.wait(timeout=DEADLINE) == 3, broken.tail()
    finally:
        _stop(broken)


# the parent's rules, without processes ------------------------------------------------------------


def test_restarts_back_off_while_they_keep_failing() -> None:
    delays = [restart_delay(deaths) for deaths in range(1, 10)]
    assert delays[0] == FIRST_RESTART_SECONDS
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    assert delays[1] > delays[0] and delays[-1] == MOST_RESTART_SECONDS


def test_workers_share_the_cores_unless_the_threads_are_set() -> None:
    assert torch_threads(Settings(), 1, 16) is None, "one worker keeps torch's own default"
    assert torch_threads(Settings(), 4, 16) == 4
    assert torch_threads(Settings(), 3, 2) == 1
    assert torch_threads(Settings(torch_threads=6), 4, 16) == 6


def test_every_worker_uses_the_first_depth_decided() -> None:
    slot = multiprocessing.get_context("spawn").Array("d", 3)
    first = SharedDepth(slot)(lambda: RerankDepth(5, "calibrated", 0.08, 400.0))
    calibrations: list[int] = []

    def slower() -> RerankDepth:
        calibrations.append(1)
        return RerankDepth(2, "calibrated", 0.2, 400.0)

    later = SharedDepth(slot)(slower)  # another worker, or worker 0 restarted on a busier machine
    assert first == later == RerankDepth(5, "calibrated", 0.08, 400.0)
    assert not calibrations, "a depth already agreed is adopted without calibrating"
    assert SharedDepth(slot)(lambda: RerankDepth(12, "setting")) == RerankDepth(5, "calibrated", 0.08, 400.0)
