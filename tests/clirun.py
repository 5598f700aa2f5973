"""The console script, run as a user runs it: a subprocess with the HF hub switched off."""

from __future__ import annotations

import os
import subprocess
import sys


def blipsearch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "blipsearch", *args], capture_output=True, text=True, env=full_env, timeout=300
    )
