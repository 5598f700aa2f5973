"""`blipsearch config`: the settings a command would run with, as the user configured them."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from blipsearch.cli.context import session
from blipsearch.cli.options import DataDirOpt, JsonOpt, print_json

console = Console()

config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)


@config_app.command("show")
def config_show(ctx: typer.Context, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective settings (environment, config file, defaults), secrets masked."""
    settings = session(ctx).settings(data_dir=data_dir)
    data = settings.masked()
    if as_json:
        print_json(data)
        return
    table = Table(title="blipsearch settings", show_header=True)
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)
