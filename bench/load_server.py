"""The load bench's server side: data directories indexed once per subject, and a real
`blipsearch serve` subprocess per configuration on a free 127.0.0.1 port, with its memory (RSS
summed over its process tree, so `--workers N` children count).

Everything runs through the command line in subprocesses (index, serve, the random-init
checkpoint): the bench process stays a client, without torch or a model in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from blipsearch.demo import limited_manifest, rerank_itc_weight_of

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / "demo" / "model" / "retrieval"
DEMO_MANIFEST = REPO / "demo" / "catalog" / "catalog.csv"
READY_TIMEOUT_S = 900.0
STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class Subject:
    """A model and the data directory indexed with it; `env` is what a server needs to serve it."""

    key: str
    title: str
    data_dir: Path
    env: dict[str, str]


@dataclass(frozen=True)
class Config:
    """One server configuration: its BLIPSEARCH_* variables and `serve --workers` (None: not passed)."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    workers: int | None = None


BASELINE = Config(
    "baseline (unbatched, 1 worker)",
    {"BLIPSEARCH_BATCHING": "false", "BLIPSEARCH_INFERENCE_WORKERS": "1", "BLIPSEARCH_RERANK_SHED_FROM": "1"},
)
"""The service before dynamic batching: one request's forwards at a time, and no re-rank shedding (with
it, one worker sheds most of the depth at 32 clients, and its OK/s would measure first-stage search)."""
BATCHED = Config("batched (defaults)")
ONNX_ALL = {
    "BLIPSEARCH_INFERENCE_RUNTIME": "onnxruntime",
    "BLIPSEARCH_INFERENCE_RUNTIME_GRAPHS": '["text", "vision", "itm"]',
}
"""ONNX Runtime on every graph: measured faster on the demo model's three (bench/results/runtimes-*)."""
NO_RERANK = {"BLIPSEARCH_RERANK": "false"}
BLIP_ITC_ONLY = (
    Config("batched, re-rank off", dict(NO_RERANK)),
    Config("baseline (unbatched, 1 worker), re-rank off", {**BASELINE.env, **NO_RERANK}),
)
"""BLIP-base text queries without ITM: the query encoder alone, which batching is for."""


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLIPSEARCH_")}
    env.update({"BLIPSEARCH_OFFLINE": "true", "HF_HUB_OFFLINE": "1", "BLIPSEARCH_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "blipsearch", *args]


def supports_workers() -> bool:
    """Whether this checkout's `blipsearch serve` takes `--workers N` (several server processes)."""
    help_text = subprocess.run(
        _cli("serve", "--help"), capture_output=True, text=True, env=_clean_env({}), check=True
    ).stdout
    return "--workers" in help_text


def _index(model: Path, manifest: Path, data_dir: Path, env: dict[str, str], log: Path) -> None:
    if (data_dir / "catalog.sqlite3").exists():
        return
    command = _cli("index", "run", str(manifest), "--data-dir", str(data_dir), "--model", str(model))
    with log.open("a") as out:
        subprocess.run(command, env=_clean_env(env), stdout=out, stderr=subprocess.STDOUT, check=True)


def serving_env(model: Path, rerank_k: int) -> dict[str, str]:
    """What every configuration serves with. The re-rank depth is fixed: calibrated at each start, it
    would follow the machine's load, and configurations compared in one run must do the same work
    per query. The query cache is off: the clients repeat the query set, and a cached answer
    measures a dictionary, not the model."""
    return {
        "BLIPSEARCH_RETRIEVAL_MODEL": str(model),
        "BLIPSEARCH_RERANK": "true",
        "BLIPSEARCH_RERANK_K": str(rerank_k),
        "BLIPSEARCH_QUERY_CACHE_ENTRIES": "0",
    }


def demo_subject(work: Path, rerank_k: int) -> Subject:
    """The shipped catalog indexed with the shipped demo model, re-ranked as `blipsearch demo` does."""
    env = {
        **serving_env(DEMO_MODEL, rerank_k),
        "BLIPSEARCH_RERANK_ITC_WEIGHT": str(rerank_itc_weight_of(DEMO_MODEL.parent)),
    }
    data_dir = work / "demo-data"
    _index(
        DEMO_MODEL, DEMO_MANIFEST, data_dir, {**env, "BLIPSEARCH_IMAGE_BATCH_SIZE": "64"}, work / "index.log"
    )
    return Subject("demo", "shipped demo model", data_dir, env)


def blip_base_subject(work: Path, products: int, rerank_k: int) -> Subject:
    """BLIP-base's architecture with random weights (the hub is unreachable; cost depends on shapes),
    over the first `products` of the demo catalog."""
    model = work / "blip-base-random"
    if not (model / "config.json").exists():
        code = "import sys, pathlib; from bench.subjects import base_size_checkpoint as b; "
        code += "b(pathlib.Path(sys.argv[1]))"
        subprocess.run([sys.executable, "-c", code, str(model)], env=_clean_env({}), cwd=REPO, check=True)
    manifest = limited_manifest(DEMO_MANIFEST, products, work / f"catalog-first-{products}.csv")
    env = serving_env(model, rerank_k)
    data_dir = work / f"blip-base-data-{products}"
    _index(model, manifest, data_dir, env, work / "index.log")
    return Subject("blip-base", "BLIP-base architecture, random weights", data_dir, env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        return _proc_tree_rss(pid)
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def _proc_tree_rss(pid: int) -> int:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, up in parents.items() if up == parent and child not in family]
        family.update(children)
        frontier.extend(children)
    total = 0
    for member in family:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class Server:
    """`blipsearch serve` for one subject and configuration; a context manager that stops it."""

    def __init__(self, subject: Subject, config: Config, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = _cli(
            "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(subject.data_dir)
        )
        if config.workers is not None:
            command += ["--workers", str(config.workers)]
        self.log = log
        with log.open("a") as out:
            out.write(f"--- {config.name}: {' '.join(command)}\n")
            out.flush()
            self.process = subprocess.Popen(
                command,
                env=_clean_env({**subject.env, **config.env}),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        started = time.monotonic()
        with httpx.Client(timeout=5, trust_env=False) as client:
            while time.monotonic() - started < timeout:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log}")
                try:
                    if client.get(f"{self.base}/readyz").status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise RuntimeError(f"the server was not ready in {timeout:.0f} s; see {self.log}")

    def stage_means_ms(self) -> dict[str, float]:
        """Mean milliseconds per query stage over the server's life, from its own /metrics histograms:
        where a request's time goes (encode, vector, keyword, rerank, fetch, ...)."""
        text = httpx.get(f"{self.base}/metrics", timeout=30, trust_env=False).text
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for line in text.splitlines():
            for suffix, into in (("_sum", sums), ("_count", counts)):
                prefix = f'blipsearch_stage_seconds{suffix}{{stage="'
                if line.startswith(prefix):
                    stage, _, value = line[len(prefix) :].partition('"} ')
                    into[stage] = float(value)
        return {stage: round(1000 * sums[stage] / counts[stage], 1) for stage in sums if counts.get(stage)}

    def rss(self) -> int:
        return tree_rss(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
