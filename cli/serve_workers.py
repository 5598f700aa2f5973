"""`blipsearch serve --workers N`: N serving processes on one port, started and kept up by a parent.

The parent binds the listening socket once and hands it to N spawned processes; the kernel
spreads connections among them. Each worker loads its own model and builds its own app from the
settings (so uvicorn's import-string `workers=` does not fit). Worker 0 alone cleans the image
store, commits index checkpoints and runs ingest jobs (api/workers.py); every worker answers
reads and writes.

The parent restarts a worker that dies, after a pause that doubles while restarts keep failing
(a worker that served a while starts the count again), and stops them all on SIGINT or SIGTERM.
A worker that cannot start the first time ends the server: a wrong setting would only crash
again. Workers run in their own process group, so a terminal's Ctrl-C reaches the parent alone
and each worker gets exactly one SIGTERM (a second signal would make uvicorn skip the final
checkpoint); a worker whose parent is gone stops by itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from typing import Any

import uvicorn

from blipsearch.process_memory import limit_malloc_arenas
from blipsearch.settings import Settings

log = logging.getLogger("blipsearch.serve")

STARTUP_FAILURE = 3
"""uvicorn's exit status when the app cannot start; the parent ends with it too."""
FIRST_RESTART_SECONDS = 1.0
MOST_RESTART_SECONDS = 30.0
STABLE_SECONDS = 60.0
"""A worker that served this long died of something new: its next restart waits the least again."""
STOP_GRACE_SECONDS = 60.0
"""How long workers get to finish requests, the last checkpoint and a job's chunk at a stop."""
PARENT_CHECK_SECONDS = 1.0


def restart_delay(quick_deaths: int) -> float:
    """The pause before restarting a worker that died `quick_deaths` times in a row soon after starting."""
    return min(MOST_RESTART_SECONDS, FIRST_RESTART_SECONDS * 2 ** max(0, quick_deaths - 1))


def torch_threads(settings: Settings, workers: int, cores: int) -> int | None:
    """The setting when given; with several workers the cores shared among them (each worker's
    forwards would otherwise use every core, and N of them would fight over each); else None
    (torch's default)."""
    if settings.torch_threads is not None:
        return settings.torch_threads
    return max(1, cores // workers) if workers > 1 else None


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (IPv4 or IPv6, as the host names)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class SharedDepth:
    """The re-rank depth agreed among the workers: the first one decided is everyone's.

    Calibration times the model, so two workers (or one restarted under other load) could decide
    different depths and order the same query differently. Each worker adopts a depth already
    agreed; a worker that finds none calibrates and offers its own, and the first offer stands.
    The shared slot's lock is held only to read or write it, never while calibrating.
    """

    def __init__(self, slot: Any) -> None:
        self.slot = slot
        """A `multiprocessing` Array('d', 3): depth (0: none yet), seconds per candidate, budget ms."""

    def __call__(self, decide: Callable[[], Any]) -> Any:
        from blipsearch.search.rerank_depth import RerankDepth

        agreed = self._read()
        if agreed is not None:
            return agreed
        mine: RerankDepth = decide()
        if mine.source == "setting":
            return mine
        with self.slot.get_lock():
            if self.slot[0] == 0:
                self.slot[0] = mine.depth
                self.slot[1] = mine.seconds_per_candidate or 0.0
                self.slot[2] = mine.budget_ms or 0.0
        return self._read()

    def _read(self) -> Any:
        from blipsearch.search.rerank_depth import RerankDepth

        with self.slot.get_lock():
            depth, cost, budget = self.slot[0], self.slot[1], self.slot[2]
        if depth == 0:
            return None
        return RerankDepth(int(depth), "calibrated", cost, budget)


@dataclass
class WorkerSpec:
    """What a worker process gets from the parent (pickled into the spawned process)."""

    settings: Settings
    index: int
    workers: int
    sock: socket.socket
    depth_slot: Any
    ready: Any
    """A `multiprocessing` Event the worker sets once it serves."""


def _device_for(settings: Settings, index: int) -> Settings:
    """With several GPUs and the device left to choose, worker i takes GPU i modulo their count."""
    if settings.device not in ("auto", "cuda"):
        return settings
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return settings
    return settings.model_copy(update={"device": f"cuda:{index % count}"})


def worker_main(spec: WorkerSpec) -> None:
    """A worker process: its own process group, model and app, serving on the parent's socket."""
    os.setpgid(0, 0)
    from blipsearch import faults
    from blipsearch.logs import configure_logging, uvicorn_log_config

    settings = spec.settings
    limit_malloc_arenas()
    configure_logging(settings.log_level, settings.log_format)
    faults.arm(settings.fault_injection)
    threads = torch_threads(settings, spec.workers, machine_cores())
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    settings = _device_for(settings, spec.index)

    from blipsearch.api.app import create_app
    from blipsearch.api.limits import server_protocol_options
    from blipsearch.api.workers import WorkerRole

    role = WorkerRole(index=spec.index, upkeep=spec.index == 0, rerank_depth=SharedDepth(spec.depth_slot))
    config = uvicorn.Config(
        create_app(settings, worker=role),
        log_config=uvicorn_log_config(settings.log_level, settings.log_format),
        log_level=settings.log_level.lower(),
        **server_protocol_options(),
    )
    server = _ReportingServer(config, spec.ready)
    # uvicorn re-raises the stop signal once it has shut down; exiting through Python then runs
    # the exit handlers (libraries' multiprocessing locks are released, not reported leaked)
    signal.signal(signal.SIGTERM, _exit_after_shutdown)
    parent = os.getppid()
    threading.Thread(target=_stop_when_orphaned, args=(server, parent), daemon=True).start()
    server.run(sockets=[spec.sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _exit_after_shutdown(sig: int, frame: object) -> None:
    sys.exit(0)


def _stop_when_orphaned(server: uvicorn.Server, parent: int) -> None:
    while not server.should_exit:
        if os.getppid() != parent:
            server.should_exit = True
            return
        time.sleep(PARENT_CHECK_SECONDS)


class _ReportingServer(uvicorn.Server):
    """Tells the parent when the app has started (the lifespan loaded the model)."""

    def __init__(self, config: uvicorn.Config, ready: Any) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.ready.set()


@dataclass
class _Slot:
    """One worker index: its current process and its restart history."""

    index: int
    process: SpawnProcess | None = None
    ready: Any = None
    started_at: float = 0.0
    announced: bool = False
    """This life's readiness was logged."""
    ever_ready: bool = False
    quick_deaths: int = 0
    restart_at: float | None = None


@dataclass
class Supervisor:
    settings: Settings
    workers: int
    sock: socket.socket
    clock: Callable[[], float] = time.monotonic
    slots: list[_Slot] = field(default_factory=list)
    stop_signal: int | None = None

    def __post_init__(self) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.depth_slot = self.context.Array("d", 3)
        self.slots = [_Slot(index) for index in range(self.workers)]

    def run(self) -> int:
        """Serve until a signal; the exit status: 0 after a clean stop, else why not."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for slot in self.slots:
                self._start(slot)
            status = self._watch()
        finally:
            stopped_cleanly = self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if status == 0 and not stopped_cleanly:
            return 1
        return status

    def _on_signal(self, sig: int, frame: object) -> None:
        self.stop_signal = sig

    def _start(self, slot: _Slot) -> None:
        slot.ready = self.context.Event()
        spec = WorkerSpec(self.settings, slot.index, self.workers, self.sock, self.depth_slot, slot.ready)
        process = self.context.Process(
            target=worker_main, args=(spec,), name=f"blipsearch-worker-{slot.index}", daemon=False
        )
        process.start()
        slot.process, slot.started_at, slot.restart_at, slot.announced = process, self.clock(), None, False
        log.info("worker started", extra={"worker": slot.index, "pid": process.pid})

    def _watch(self) -> int:
        while self.stop_signal is None:
            running = [slot.process.sentinel for slot in self.slots if slot.process is not None]
            wait(running, timeout=0.25)
            now = self.clock()
            for slot in self.slots:
                process = slot.process
                if process is not None and not slot.announced and slot.ready.is_set():
                    slot.ever_ready = slot.announced = True
                    log.info("worker ready", extra={"worker": slot.index, "pid": process.pid})
                if process is not None and process.exitcode is not None and self.stop_signal is None:
                    failed = self._died(slot, process, now)
                    if failed is not None:
                        return failed
                if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                    self._start(slot)
        log.info("stopping workers", extra={"signal": signal.Signals(self.stop_signal).name})
        return 0

    def _died(self, slot: _Slot, process: SpawnProcess, now: float) -> int | None:
        """Schedule the restart of a dead worker; a status to end with if it never started at all."""
        served = slot.ready.is_set()
        slot.ever_ready = slot.ever_ready or served
        slot.process = None
        if not slot.ever_ready:
            log.error(
                "worker could not start; stopping the server",
                extra={"worker": slot.index, "pid": process.pid, "exit_code": process.exitcode},
            )
            return STARTUP_FAILURE
        quick = not served or now - slot.started_at < STABLE_SECONDS
        slot.quick_deaths = slot.quick_deaths + 1 if quick else 1
        delay = restart_delay(slot.quick_deaths)
        slot.restart_at = now + delay
        log.warning(
            "worker exited; restarting it",
            extra={
                "worker": slot.index,
                "pid": process.pid,
                "exit_code": process.exitcode,
                "restart_in_seconds": delay,
            },
        )
        return None

    def _stop_all(self) -> bool:
        """SIGTERM to every worker, SIGKILL to those still running after the grace; True if none needed it."""
        alive = [slot.process for slot in self.slots if slot.process is not None and slot.process.is_alive()]
        for process in alive:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        clean = True
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                clean = False
                log.error("worker did not stop in time; killing it", extra={"pid": process.pid})
                process.kill()
                process.join()
        return clean


def serve_workers(settings: Settings, workers: int) -> int:
    """Run `workers` serving processes until a signal; returns the exit status.

    The catalog is created or migrated here first: workers starting together on a new catalog
    would each run the migrations, and all but one fail on tables the first one made.
    """
    from blipsearch.storage.catalog import Catalog

    Catalog.open(settings).close()
    sock = bind_socket(settings.host, settings.port)
    try:
        return Supervisor(settings, workers, sock).run()
    finally:
        sock.close()
