"""Named crash points for the crash-safety tests: the process kills itself with SIGKILL on cue.

Production code calls `crash_point(name)` at the moments where a crash is most dangerous (inside
a SQL transaction, between writing an index file and committing its manifest). Nothing happens
unless the `fault_injection` setting armed a point, which only the crash tests do.
"""

from __future__ import annotations

import os
import signal

_armed: tuple[str, int] | None = None
_hits: dict[str, int] = {}


def arm(spec: str | None) -> None:
    """`spec` is `NAME` or `NAME:N` (die on the N-th time NAME is reached, 1-based)."""
    global _armed
    _hits.clear()
    if not spec:
        _armed = None
        return
    name, _, count = spec.partition(":")
    _armed = (name.strip(), int(count) if count.strip() else 1)


def crash_point(name: str) -> None:
    if _armed is None or _armed[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)
