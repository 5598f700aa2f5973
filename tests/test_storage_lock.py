from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blipsearch.errors import IndexLockedError
from blipsearch.storage.lock import WriterLock


def test_second_writer_is_refused_with_who_holds_it(tmp_path: Path) -> None:
    holder = WriterLock(tmp_path, "index /photos")
    with holder, pytest.raises(IndexLockedError, match=r"pid \d+, index /photos"):
        WriterLock(tmp_path, "index /other").acquire()
    with WriterLock(tmp_path, "again") as lock:  # released on exit
        assert lock.held


def test_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys; from pathlib import Path; from blipsearch.storage.lock import WriterLock;"
        f"WriterLock(Path({str(tmp_path)!r}), 'doomed').acquire(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == -9
    with WriterLock(tmp_path, "after crash") as lock:
        assert lock.held
