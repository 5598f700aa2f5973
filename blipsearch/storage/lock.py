"""One writer per data directory: an advisory `flock` that the kernel drops when the holder dies.

A lock file alone would survive a SIGKILL and block every later run; `flock` is released with the
process, so a crashed indexer never needs manual cleanup. The file's content (pid, command, start
time) is only there to tell the next writer who is in the way.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from blipsearch.errors import IndexLockedError

LOCK_NAME = "writer.lock"


class WriterLock:
    def __init__(self, data_dir: Path, purpose: str) -> None:
        self.path = data_dir / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise IndexLockedError(
                f"Another blipsearch writer holds {self.path} ({holder}); wait for it to finish or stop it."
            ) from None
        info = {"pid": os.getpid(), "purpose": self.purpose, "argv": sys.argv[1:], "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _describe(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return "holder unknown"
    if not info:
        return "holder unknown"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("since", 0))))
    return f"pid {info.get('pid')}, {info.get('purpose')}, since {since}"
