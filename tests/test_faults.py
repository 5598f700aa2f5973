"""Crash points: inert unless armed, and then a real SIGKILL on exactly the N-th hit."""

from __future__ import annotations

import signal
import subprocess
import sys


def test_unarmed_other_and_not_yet_due_points_do_nothing() -> None:
    """In a child process, so that a point that wrongly fires kills the child, not the test run."""
    script = (
        "from blipsearch import faults\n"
        "faults.crash_point('anything')\n"  # never armed
        "faults.arm('somewhere:1')\n"
        "faults.crash_point('elsewhere')\n"  # another point
        "faults.arm('step:2')\n"
        "faults.crash_point('step')\n"  # first of two hits
        "faults.arm('step:2')\n"  # arming again starts the count again
        "faults.crash_point('step')\n"
        "faults.arm(None)\n"
        "faults.crash_point('step')\n"  # disarmed
        "print('alive', flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "alive"), result.stderr


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
