"""Crash points: inert unless armed, and then a real SIGKILL on exactly the N-th hit."""

from __future__ import annotations

import signal
import subprocess
import sys

from blipsearch import faults


def test_unarmed_and_other_points_do_nothing() -> None:
    faults.arm(None)
    faults.crash_point("anything")
    faults.arm("somewhere:1")
    faults.crash_point("elsewhere")
    faults.arm(None)


def test_armed_point_kills_the_process_on_the_nth_hit() -> None:
    script = (
        "from blipsearch import faults\n"
        "faults.arm('step:3')\n"
        "for i in range(5):\n"
        "    print(i, flush=True)\n"
        "    faults.crash_point('step')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.split() == ["0", "1", "2"]
