"""Progress of long runs: a live bar on a terminal, and a structured log line every few seconds.

The log line is what a service, a CI job or `--log-json` consumer sees when there is no terminal.
A command a person starts and waits on (`blipsearch demo`) can also print a plain line off a
terminal (`lines_off_terminal`), so its output piped to a file or a container log is not silent
for minutes at the default log level.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

log = logging.getLogger(__name__)


class Progress:
    def __init__(
        self,
        *,
        enabled: bool = True,
        log_every: float = 10.0,
        console: Console | None = None,
        lines_off_terminal: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.enabled = enabled
        self.log_every = log_every
        self.lines_off_terminal = lines_off_terminal
        self.clock = clock
        self.console = console or Console(stderr=True)
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._last_log = 0.0
        self._description = ""

    def start(self, *, total: int, description: str) -> None:
        self._total, self._done, self._description = total, 0, description
        self._started = self._last_log = self.clock()
        if self.enabled and self.console.is_terminal:
            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} img/s"),
                TextColumn("[red]{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, rate=0.0, failed=0)

    def advance(self, count: int, *, embedded: int = 0, failed: int = 0) -> None:
        self._done += count
        now = self.clock()
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=count, rate=rate, failed=failed)
        if now - self._last_log >= self.log_every:
            self._last_log = now
            remaining = (self._total - self._done) / rate if rate > 0 else None
            if self.enabled and self.lines_off_terminal and self._bar is None:
                self.console.print(_plain_line(self._description, self._done, self._total, rate, remaining))
            log.info(
                "progress",
                extra={
                    "task": self._description,
                    "done": self._done,
                    "total": self._total,
                    "embedded": embedded,
                    "failed": failed,
                    "per_second": round(rate, 2),
                    "eta_seconds": round(remaining, 1) if remaining is not None else None,
                },
            )

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _plain_line(description: str, done: int, total: int, rate: float, remaining: float | None) -> str:
    share = f" ({100 * done // total}%)" if total else ""
    left = f", about {_duration(remaining)} left" if remaining is not None and done < total else ""
    return f"{description}: {done}/{total}{share}, {rate:.1f} img/s{left}"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"
