"""The command line's surface (commands, arguments, options, defaults) is a user contract.

`tests/data/cli_help_tree.json` was recorded from the command tree before the CLI moved into its own
package; any change to a command, option name, flag, default or the first line of a help text shows
up here as a diff a reviewer must accept by re-recording (`python tests/test_cli_help_tree.py`).
Commands added since are allowed only when named in `ADDED_COMMANDS`; every recorded command must
still read exactly as recorded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

GOLDEN = Path(__file__).parent / "data" / "cli_help_tree.json"

ADDED_COMMANDS: frozenset[tuple[str, ...]] = frozenset(
    {
        # scripts/quickstart.sh's steps that `python -m blipsearch.demo` (an argparse CLI) used to do
        ("demo-assets",),
        ("demo-assets", "rerank-settings"),
        ("demo-assets", "broken-files"),
        # issue 29: the pgvector tables where the extension arrived after the catalog was migrated
        ("db", "install-pgvector"),
    }
)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


def _default(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_default(v) for v in value]
    return str(value)


def _type_name(param: Any) -> str:
    annotation = param.type_descriptor.annotation
    return getattr(annotation, "__name__", None) or str(annotation)


def describe_command(command: Any) -> dict[str, Any]:
    params = []
    for param in command.params:
        entry: dict[str, Any] = {
            "name": param.name,
            "kind": param.param_type_name,
            "opts": sorted(param.opts),
            "secondary": sorted(getattr(param, "secondary_opts", []) or []),
            "required": param.required,
            "multiple": bool(getattr(param, "multiple", False)),
            "type": _type_name(param),
        }
        if param.param_type_name == "option":
            entry["is_flag"] = bool(param.is_flag)
            entry["default"] = _default(param.default)
            entry["help"] = _first_line(param.help)
        params.append(entry)
    node: dict[str, Any] = {"help": _first_line(command.help), "params": params}
    if hasattr(command, "commands"):
        node["commands"] = {
            name: describe_command(sub) for name, sub in sorted(command.commands.items()) if not sub.hidden
        }
    return node


def command_tree() -> dict[str, Any]:
    from blipsearch.cli import app

    return describe_command(typer.main.get_command(app))


def without_added(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """The tree as it was recorded: the commands in `ADDED_COMMANDS` left out."""
    if "commands" not in node:
        return node
    kept = {
        name: without_added(sub, (*prefix, name))
        for name, sub in node["commands"].items()
        if (*prefix, name) not in ADDED_COMMANDS
    }
    return {**node, "commands": kept}


def _paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, sub in node.get("commands", {}).items():
        found += _paths(sub, (*prefix, name))
    return found


def test_command_tree_matches_the_recorded_contract() -> None:
    recorded = json.loads(GOLDEN.read_text())
    current = command_tree()
    assert not ADDED_COMMANDS & set(_paths(recorded)), "a recorded command is listed as added"
    assert sorted(_paths(current)) == sorted([*_paths(recorded), *ADDED_COMMANDS]), (
        "commands were removed, or added without being listed in ADDED_COMMANDS"
    )
    assert without_added(current) == recorded


def test_every_command_answers_help() -> None:
    from blipsearch.cli import app

    runner = CliRunner()
    tree = json.loads(GOLDEN.read_text())
    paths = [*_paths(tree), *sorted(ADDED_COMMANDS)]
    assert len(paths) > 20
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output, path


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(without_added(command_tree()), indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"recorded {GOLDEN}\n")
