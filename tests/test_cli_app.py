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


def test_an_unexpected_error_is_logged_only_at_debug_level(tmp_path) -> None:
    """`main` reads the level from its own invocation's session (here: a config file that is not TOML,
    which the settings do not turn into a readable error)."""
    config = tmp_path / "c.toml"
    config.write_text("this is not toml = = =\n")
    plain = blipsearch("--config", str(config), "config", "show")
    assert plain.returncode == 70 and "internal error" in plain.stderr
    assert "unexpected error" not in plain.stderr and "Traceback" not in plain.stderr
    debug = blipsearch("--log-level", "DEBUG", "--config", str(config), "config", "show")
    assert debug.returncode == 70 and "blipsearch: unexpected error" in debug.stderr
