"""Structured logging: key=value text for people, one JSON object a line for log pipelines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# uvicorn adds `color_message` (the message with ANSI colours) to its records: not a field of ours.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{record.levelname.lower():7s} {record.name}: {record.getMessage()}"
        return f"{line} {extras}".rstrip()


def _formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else KeyValueFormatter()


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Route blipsearch logs to stderr; quiet the libraries' progress chatter below WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(fmt))
    root = logging.getLogger("blipsearch")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for noisy in ("transformers", "huggingface_hub", "httpx"):
        # Their retry chatter ("... thrown while requesting HEAD") precedes our own clear error.
        logging.getLogger(noisy).setLevel(logging.ERROR)


def uvicorn_log_config(level: str, fmt: str) -> dict[str, Any]:
    """uvicorn's loggers (server events, access lines) in the same format and level as ours, so that
    a JSON log pipeline never meets uvicorn's own plain-text lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"blipsearch": {"()": _formatter, "fmt": fmt}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "blipsearch",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            name: {"handlers": ["stderr"], "level": level, "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
        },
    }
