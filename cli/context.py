"""How a command reaches its settings: one `CliSession` per invocation, in Typer's context.

The root callback fills it from the global options (--config, --log-level, --log-json/--log-text);
each command asks it for settings with its own overrides. Nothing about settings lives at module
level, so two invocations in one process (tests, `main` called twice) never see each other's options.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from blipsearch.settings import Settings, load_settings


@dataclass
class CliSession:
    config_file: Path | None = None
    log_level: str | None = None
    """Upper-cased as given; validated only when settings load, so a bad level is a one-line error."""
    log_format: str | None = None
    active_log_level: str = "WARNING"
    """The level logging runs at now: `main` logs an unexpected error's traceback only at DEBUG."""

    def global_overrides(self) -> dict[str, Any]:
        given = {"config_file": self.config_file, "log_level": self.log_level, "log_format": self.log_format}
        return {key: value for key, value in given.items() if value is not None}

    def settings(self, **overrides: Any) -> Settings:
        """Settings with the global options and the command's overrides (None: not given).

        Loading them also decides how the command logs and arms the configured fault injection,
        so every command that reads settings behaves the same way.
        """
        from blipsearch import faults
        from blipsearch.logs import configure_logging

        settings = load_settings(**{**self.global_overrides(), **overrides})
        configure_logging(settings.log_level, settings.log_format)
        self.active_log_level = settings.log_level
        logging.getLogger("blipsearch").debug(
            "settings loaded",
            extra={"config_file": settings.config_file, "data_dir": str(settings.data_dir)},
        )
        faults.arm(settings.fault_injection)
        return settings

    def configure_early_logging(self) -> None:
        """Until a command loads its settings (which then decide): the flags, else the settings' defaults."""
        from blipsearch.logs import configure_logging

        defaults = Settings.model_fields
        level = self.log_level or defaults["log_level"].default
        configure_logging(
            level if level in logging.getLevelNamesMapping() else "WARNING",
            self.log_format or defaults["log_format"].default,
        )
        self.active_log_level = level


def session(ctx: typer.Context) -> CliSession:
    """The invocation's session, which the root callback put in the context for every command below it."""
    found = ctx.find_object(CliSession)
    if found is None:
        raise RuntimeError("a blipsearch command ran outside the root command, which sets up its session")
    return found
