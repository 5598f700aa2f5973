"""The malloc arena cap: applied in a fresh process on glibc, and never over an operator's choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = "from blipsearch.process_memory import limit_malloc_arenas; print(limit_malloc_arenas())"


def _run(extra_env: dict[str, str]) -> str:
    env = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env={**env, **extra_env}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")
def test_the_cap_is_applied_on_glibc() -> None:
    assert _run({}) == "True"


def test_an_operators_malloc_arena_max_wins() -> None:
    assert _run({"MALLOC_ARENA_MAX": "4"}) == "False"
