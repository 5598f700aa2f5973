"""The root command: global options, the command tree, and the console entry point.

Each command group lives in its own module; this one only puts them together. The global options
go into the invocation's `CliSession` (`blipsearch.cli.context`), where every command finds them.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from blipsearch import __version__
from blipsearch.cli.capfilt import capfilt
from blipsearch.cli.config import config_app
from blipsearch.cli.context import CliSession
from blipsearch.cli.data import data_app
from blipsearch.cli.db import db_app
from blipsearch.cli.demo import demo, demo_assets_app
from blipsearch.cli.eval import eval_command
from blipsearch.cli.index import index_app
from blipsearch.cli.model import model_app
from blipsearch.cli.search import describe, search
from blipsearch.cli.serve import serve
from blipsearch.cli.train import train_app
from blipsearch.errors import BlipsearchError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="blipsearch",
    help="Cross-modal image search on BLIP: index a collection, then find images by text or image, "
    "and text for an image.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command(name="serve")(serve)
app.command(name="demo")(demo)
app.command(name="search")(search)
app.command(name="describe")(describe)
app.command(name="capfilt")(capfilt)
app.command(name="eval")(eval_command)
app.add_typer(model_app, name="model")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(index_app, name="index")
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")
app.add_typer(demo_assets_app, name="demo-assets")


def _print_version(value: bool) -> None:
    # Eager, so that `blipsearch --version` answers without a command.
    if value:
        console.print(f"blipsearch {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (else $BLIPSEARCH_CONFIG_FILE).")
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: setting log_level)."),
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option(
            "--log-json/--log-text", help="JSON or key=value logs on stderr (default: setting log_format)."
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Cross-modal image search on BLIP."""
    if not isinstance(ctx.obj, CliSession):  # `main` passes its own; `app(...)` called directly does not
        ctx.obj = CliSession()
    current: CliSession = ctx.obj
    current.config_file = config
    current.log_level = log_level.upper() if log_level is not None else None
    current.log_format = None if log_json is None else ("json" if log_json else "text")
    current.configure_early_logging()
    _quiet_library_progress_bars()


def _quiet_library_progress_bars() -> None:
    # transformers draws a bar for every shard it reads or writes; noise around our own output.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: known errors become one line on stderr, never a traceback."""
    current = CliSession()
    try:
        app(args=argv, standalone_mode=True, obj=current)
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int | None) else 1
    except BlipsearchError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:
        if current.active_log_level == "DEBUG":
            logging.getLogger("blipsearch").exception("unexpected error")
        err_console.print(
            f"[red]internal error:[/] {type(exc).__name__}: {exc} (rerun with --log-level DEBUG for details; "
            "this is a bug, please report it)",
            highlight=False,
            soft_wrap=True,
        )
        return 70
    return 0


def run() -> NoReturn:
    sys.exit(main())
