"""`log_level` and `log_format` decide how every command and `blipsearch serve` log; the CLI flags win."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _blipsearch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("BLIPSEARCH_")}
    return subprocess.run(
        [sys.executable, "-m", "blipsearch", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, **env},
    )


def _json_lines(stderr: str) -> list[dict]:
    """Every non-empty line of stderr as JSON; fails on the first line that is not."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_json_format_and_info_level_from_the_environment(tmp_path: Path) -> None:
    result = _blipsearch(
        "db",
        "upgrade",
        "--data-dir",
        str(tmp_path),
        env={"BLIPSEARCH_LOG_FORMAT": "json", "BLIPSEARCH_LOG_LEVEL": "INFO"},
    )
    assert result.returncode == 0, result.stderr
    events = _json_lines(result.stderr)
    migrated = [event for event in events if event["event"] == "catalog migrated"]
    assert migrated and migrated[0]["level"] == "info" and migrated[0]["revision"]
    assert all(event["level"] != "debug" for event in events)


def test_debug_level_shows_debug_lines(tmp_path: Path) -> None:
    result = _blipsearch("config", "show", "--data-dir", str(tmp_path), env={"BLIPSEARCH_LOG_LEVEL": "DEBUG"})
    assert result.returncode == 0, result.stderr
    assert "debug   blipsearch: settings loaded" in result.stderr


def test_the_default_logs_warnings_only(tmp_path: Path) -> None:
    result = _blipsearch("db", "upgrade", "--data-dir", str(tmp_path), env={})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_cli_flags_override_the_settings(tmp_path: Path) -> None:
    env = {"BLIPSEARCH_LOG_FORMAT": "json", "BLIPSEARCH_LOG_LEVEL": "INFO"}
    text = _blipsearch("--log-text", "db", "upgrade", "--data-dir", str(tmp_path / "a"), env=env)
    assert text.returncode == 0, text.stderr
    assert "info    blipsearch.storage.database: catalog migrated" in text.stderr
    assert not text.stderr.lstrip().startswith("{")

    quiet = _blipsearch("--log-level", "warning", "db", "upgrade", "--data-dir", str(tmp_path / "b"), env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.strip() == ""

    bad = _blipsearch("--log-level", "LOUD", "db", "upgrade", "--data-dir", str(tmp_path / "c"), env={})
    assert bad.returncode == 1 and "log_level" in bad.stderr and "Traceback" not in bad.stderr


def test_serve_logs_json_lines_only_uvicorn_included(tmp_path: Path, tiny_checkpoints) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clean = {key: value for key, value in os.environ.items() if not key.startswith("BLIPSEARCH_")}
    env = {
        **clean,
        "BLIPSEARCH_LOG_FORMAT": "json",
        "BLIPSEARCH_LOG_LEVEL": "INFO",
        "BLIPSEARCH_DATA_DIR": str(tmp_path / "data"),
        "BLIPSEARCH_RETRIEVAL_MODEL": str(tiny_checkpoints.retrieval),
        "BLIPSEARCH_DEVICE": "cpu",
        "BLIPSEARCH_OFFLINE": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "blipsearch", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=60)
    events = _json_lines(stderr)
    loggers = {event["logger"] for event in events}
    assert {"blipsearch.serve", "blipsearch.api.app", "uvicorn.error", "uvicorn.access"} <= loggers, loggers
    assert any(event["logger"] == "uvicorn.access" and "/healthz" in event["event"] for event in events)
    assert "color_message" not in {key for event in events for key in event}
