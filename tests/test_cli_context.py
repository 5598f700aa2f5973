"""Settings reach a command only through Typer's context: the root's options, per invocation."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blipsearch.cli import app, main

CLI = Path(__file__).resolve().parents[1] / "cli"


def _config(path: Path, caption_model: str) -> Path:
    path.write_text(f'caption_model = "{caption_model}"\n')
    return path


def _shown(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "config", "show", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_root_config_reaches_a_nested_command_and_does_not_outlive_its_invocation(tmp_path: Path) -> None:
    first = _config(tmp_path / "first.toml", "/models/first")
    second = _config(tmp_path / "second.toml", "/models/second")
    default = _shown()["caption_model"]
    assert default not in ("/models/first", "/models/second")

    assert _shown("--config", str(first))["caption_model"] == "/models/first"
    assert _shown("--config", str(second))["caption_model"] == "/models/second"
    assert _shown()["caption_model"] == default


def test_main_gives_each_call_its_own_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path / "c.toml", "/models/configured")
    assert main(["--config", str(config), "config", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["caption_model"] == "/models/configured"
    assert main(["config", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["caption_model"] != "/models/configured"


def test_the_root_log_flags_reach_the_command(tmp_path: Path) -> None:
    shown = _shown("--log-level", "debug", "--log-json")
    assert shown["log_level"] == "DEBUG" and shown["log_format"] == "json"
    assert _shown()["log_level"] != "DEBUG"


def test_a_bad_root_option_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-level", "LOUD", "config", "show"]) == 1
    err = capsys.readouterr().err
    assert "log_level" in err and "Traceback" not in err


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(CLI.glob("*.py"))]


def test_no_command_module_imports_the_root_back() -> None:
    for path, tree in _modules():
        if path.name in ("__init__.py", "__main__.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module not in ("blipsearch.cli", "blipsearch.cli.app"), (path.name, node.module)
            if isinstance(node, ast.Import):
                assert all(alias.name != "blipsearch.cli.app" for alias in node.names), path.name


def test_no_module_level_mutable_state() -> None:
    for path, tree in _modules():
        for node in tree.body:
            value = getattr(node, "value", None)
            assert not isinstance(value, ast.List | ast.Dict | ast.Set), (path.name, node.lineno)
            assert not isinstance(node, ast.Global), path.name
        assert not any(isinstance(node, ast.Global) for node in ast.walk(tree)), path.name
