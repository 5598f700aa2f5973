"""The `blipsearch` command line: the composition root, the one package that imports every stage.

`app` is the Typer command tree and `run` the console script (`blipsearch = "blipsearch.cli:run"`).
One module per command group; each command reaches its settings through Typer's context
(`blipsearch.cli.context`), never through module state or an import back into `app`.
"""

from blipsearch.cli.app import app, main, run

__all__ = ("app", "main", "run")
