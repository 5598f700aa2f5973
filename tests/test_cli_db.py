"""`blipsearch db`: catalog migrations from the command line."""

from __future__ import annotations

from pathlib import Path

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
