"""The root command, run as a user runs it: every command listed, and both ways to start it."""

from __future__ import annotations

from clirun import blipsearch


def test_help_lists_every_command() -> None:
    result = blipsearch("--help")
    assert result.returncode == 0
    for command in ("index", "search", "describe", "serve", "demo", "eval", "model", "db", "config"):
        assert f" {command} " in result.stdout


def test_the_cli_package_runs_as_a_module_too() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "blipsearch.cli", "config", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "show" in result.stdout


def test_version_answers_without_a_command() -> None:
    result = blipsearch("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("blipsearch ") and result.stdout.strip() != "blipsearch"


def test_a_config_file_that_is_not_toml_is_a_one_line_config_error(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("this is not toml = = =\n")
    result = blipsearch("--config", str(config), "config", "show")
    assert result.returncode == 1
    assert "not valid TOML" in result.stderr and "internal error" not in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_migration_revision_is_a_one_line_catalog_error(tmp_path) -> None:
    result = blipsearch("db", "upgrade", "--revision", "nosuchrev", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "nosuchrev" in result.stderr and "internal error" not in result.stderr


def _broken_settings(**overrides: object) -> object:
    raise RuntimeError("a fault injected into the settings")


def test_an_unexpected_error_is_logged_only_at_debug_level(monkeypatch, capsys) -> None:
    """`main` reads the level from its own invocation's session. The fault is injected: a real
    internal error is a bug this suite would have fixed."""
    import logging

    from blipsearch.cli import context
    from blipsearch.cli.app import main

    monkeypatch.setattr(context, "load_settings", _broken_settings)
    assert main(["config", "show"]) == 70
    plain = capsys.readouterr().err
    assert "internal error" in plain and "RuntimeError" in plain
    assert "unexpected error" not in plain and "Traceback" not in plain
    assert main(["--log-level", "DEBUG", "config", "show"]) == 70
    debug = capsys.readouterr().err
    assert "unexpected error" in debug and "a fault injected" in debug
    logging.getLogger("blipsearch").handlers.clear()
