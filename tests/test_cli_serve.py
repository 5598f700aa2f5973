"""`blipsearch serve` as a process a user starts."""

from __future__ import annotations

import os
import subprocess
import sys


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLIPSEARCH_")}
    return {**env, "BLIPSEARCH_DEVICE": "cpu", "BLIPSEARCH_OFFLINE": "1", **extra}


def test_serve_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "blipsearch", "serve", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 0 and "--port" in result.stdout and "--data-dir" in result.stdout
