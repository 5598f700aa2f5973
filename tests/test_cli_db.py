"""`blipsearch db`: catalog migrations from the command line."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog

from catalog_rows import FP, indexed_write
from clirun import blipsearch


def test_db_upgrade_then_current(tmp_path: Path) -> None:
    first = blipsearch("db", "upgrade", "--data-dir", str(tmp_path / "data"))
    assert first.returncode == 0, first.stderr
    assert "migrated from empty to" in first.stdout
    assert (tmp_path / "data" / "catalog.sqlite3").is_file()
    again = blipsearch("db", "upgrade", "--data-dir", str(tmp_path / "data"))
    assert again.returncode == 0 and "already at revision" in again.stdout
    current = blipsearch("db", "current", "--data-dir", str(tmp_path / "data"))
    revision = current.stdout.split()[1]
    assert current.stdout.split() == ["current", revision, "head", revision]


def test_db_upgrade_on_unreachable_database_is_one_line() -> None:
    result = blipsearch("db", "upgrade", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "127.0.0.1" in result.stderr


def test_install_pgvector_restores_tables_a_late_extension_needs(tmp_path: Path, postgres_url: str) -> None:
    """A catalog migrated before pgvector existed has no vector tables; the command adds and fills them."""
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    catalog = Catalog.open(Settings(data_dir=tmp_path, database_url=postgres_url))
    [item_id] = catalog.write([indexed_write("/photos/a.jpg", 3)])
    catalog.close()
    with engine.begin() as connection:  # as on a server that had no pgvector when 0009 ran
        connection.execute(text("DROP TABLE text_vectors, item_vectors"))
    installed = blipsearch("db", "install-pgvector", "--database-url", postgres_url)
    assert installed.returncode == 0, installed.stderr
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT item_id, model_fingerprint FROM item_vectors")).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [(item_id, FP)]


def test_install_pgvector_refuses_sqlite(tmp_path: Path) -> None:
    result = blipsearch("db", "install-pgvector", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1 and "not installed" in result.stdout
