"""The pgvector writer lock: one holder per database, released when its holder's session ends."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from blipsearch.errors import IndexLockedError
from blipsearch.storage.database import create_catalog_engine
from blipsearch.storage.pgvector_lock import pgvector_writer_lock

_HOLDER = """
import sys, time
from blipsearch.storage.database import create_catalog_engine
from blipsearch.storage.pgvector_lock import pgvector_writer_lock
with pgvector_writer_lock(create_catalog_engine(sys.argv[1]), "holder-test"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_is_refused_with_the_holders_name(postgres_url: str) -> None:
    first, second = create_catalog_engine(postgres_url), create_catalog_engine(postgres_url)
    try:
        with (
            pgvector_writer_lock(first, "index"),
            pytest.raises(IndexLockedError, match="blipsearch index pid"),
            pgvector_writer_lock(second, "x"),
        ):
            pass
        with pgvector_writer_lock(second, "again"):  # released on exit
            pass
        with first.connect() as connection:  # and the pooled connection kept no lock or name
            names = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'blipsearch %'")
            ).scalar()
        assert names == 0
    finally:
        first.dispose()
        second.dispose()


def test_the_lock_dies_with_a_killed_holder(postgres_url: str) -> None:
    engine = create_catalog_engine(postgres_url)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, postgres_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(IndexLockedError, match="holder-test"), pgvector_writer_lock(engine, "waiting"):
            pass
        holder.kill()
        holder.wait()
        for _attempt in range(200):  # the server notices the dead client's socket at once
            try:
                with pgvector_writer_lock(engine, "after the kill"):
                    break
            except IndexLockedError:
                time.sleep(0.05)
        else:
            pytest.fail("the advisory lock outlived its killed holder")
    finally:
        holder.kill()
        holder.wait()
        engine.dispose()
