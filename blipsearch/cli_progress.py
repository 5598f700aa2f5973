"""The one live progress bar the long-running commands share (eval, train)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def live_bar(console: Console, *, enabled: bool) -> Iterator[Progress | None]:
    """A bar (description, done/total, elapsed, ETA) on a terminal; None elsewhere, where logs report."""
    if not enabled or not console.is_terminal:
        yield None
        return
    with Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        yield bar
