"""`blipsearch db`: the catalog database's migrations (they also run by themselves on first use)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from blipsearch.cli.context import session
from blipsearch.cli.options import DatabaseUrlOpt, DataDirOpt

console = Console()

db_app = typer.Typer(help="Manage the catalog database (migrations).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply catalog migrations up to the newest revision (runs by itself on a fresh data directory)."""
    from blipsearch.storage.database import create_catalog_engine, current_revision, upgrade_database

    settings = session(ctx).settings(data_dir=data_dir, database_url=database_url)
    engine = create_catalog_engine(settings.effective_database_url)
    try:
        before = current_revision(engine)
        after = upgrade_database(engine, revision)
    finally:
        engine.dispose()
    where = settings.masked()["database_url"]
    if before == after:
        console.print(f"catalog at {where} is already at revision {after}")
    else:
        console.print(f"catalog at {where} migrated from {before or 'empty'} to {after}")


@db_app.command("current")
def db_current(ctx: typer.Context, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Print the catalog's migration revision and the newest one this version knows."""
    from blipsearch.storage.database import create_catalog_engine, current_revision, head_revision

    settings = session(ctx).settings(data_dir=data_dir, database_url=database_url)
    engine = create_catalog_engine(settings.effective_database_url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    console.print(f"current {current or 'empty'}  head {head_revision()}")


@db_app.command("install-pgvector")
def db_install_pgvector(
    ctx: typer.Context, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None
) -> None:
    """Create the pgvector extension and blipsearch's vector tables, filled from the catalog.

    Migration 0009 does this once; run this when pgvector was installed on the server after the
    catalog was migrated. Safe to run again (rows are re-derived). Exits 1 where PostgreSQL has no
    pgvector or the role may not create the extension.
    """
    from blipsearch.storage.database import create_catalog_engine
    from blipsearch.storage.pgvector_rows import install_vector_tables

    settings = session(ctx).settings(data_dir=data_dir, database_url=database_url)
    engine = create_catalog_engine(settings.effective_database_url)
    try:
        with engine.begin() as connection:
            installed = install_vector_tables(connection)
    finally:
        engine.dispose()
    where = settings.masked()["database_url"]
    if not installed:
        console.print(f"[red]not installed[/]: {where} is not a PostgreSQL where pgvector can be created")
        raise typer.Exit(1)
    console.print(f"pgvector tables ready at {where}; vector_store=auto now uses them")
