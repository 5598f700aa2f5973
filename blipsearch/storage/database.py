"""Engines, sessions and schema migrations for the catalog, on SQLite (embedded) or PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from blipsearch.errors import CatalogError, ConfigError
from blipsearch.storage import keyword, pgvector_rows

log = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets searches read the last committed state while the indexer writes; NORMAL sync is
    # durable at each checkpoint under WAL; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_catalog_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the catalog; for SQLite the parent directory is created on first use."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic `include_object` hook: the keyword and vector tables are made by migrations in SQL
    (per database, or only where pgvector exists) and have no ORM model; autogenerate leaves them be."""
    return keyword.include_object(obj, name, type_, reflected, compare_to) and pgvector_rows.include_object(
        obj, name, type_, reflected, compare_to
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def migrations_directory() -> Path:
    """Where the Alembic scripts live: `alembic/` in a source checkout, `blipsearch/migrations` in a wheel.

    Found by layout rather than import: `alembic/` must not be an importable package, or it would
    shadow the alembic library whenever the repository root is on sys.path.
    """
    package_dir = Path(__file__).resolve().parents[1]
    # Inside our own package first: in an installed wheel, the folder beside the package named
    # `alembic` is the alembic library itself.
    for candidate in (package_dir / "migrations", package_dir.parent / "alembic"):
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    raise ConfigError(f"The catalog migration scripts are missing from {package_dir}; reinstall blipsearch.")


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_directory()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


def _catalog_error(engine: Engine, action: str, exc: SQLAlchemyError) -> CatalogError:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    where = engine.url.render_as_string(hide_password=True)
    return CatalogError(f"Could not {action} the catalog at {where}: {reason}.")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise _catalog_error(engine, "read", exc) from None


def upgrade_database(engine: Engine, revision: str = "head") -> str | None:
    """Apply migrations up to `revision`; returns the revision the database is now at."""
    from alembic.util import CommandError

    from alembic import command

    config = _alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except CommandError as exc:
        raise CatalogError(f"Cannot migrate the catalog to revision {revision!r}: {exc}.") from None
    except SQLAlchemyError as exc:
        raise _catalog_error(engine, "migrate", exc) from None
    now = current_revision(engine)
    log.info(
        "catalog migrated", extra={"revision": now, "url": engine.url.render_as_string(hide_password=True)}
    )
    return now


def ensure_schema(engine: Engine) -> None:
    """Migrate a fresh or outdated catalog on first use, so a new data directory just works."""
    if current_revision(engine) != head_revision():
        upgrade_database(engine)


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())
