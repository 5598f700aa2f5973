"""The live progress bars of the long-running commands (eval, train): drawn on a terminal only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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


@contextmanager
def stage_bars(console: Console, *, enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A bar per stage, added when the stage first reports; None without a terminal, so the
    evaluation logs its own lines."""
    with live_bar(console, enabled=enabled) as bar:
        if bar is None:
            yield None
            return
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        yield update


@contextmanager
def training_bar(
    console: Console, *, enabled: bool, total: int | None
) -> Iterator[Callable[[int, int, dict[str, float]], None] | None]:
    """One bar with the current losses; nothing without a terminal (history.jsonl has it all)."""
    with live_bar(console, enabled=enabled) as bar:
        if bar is None:
            yield None
            return
        task = bar.add_task("training", total=total)

        def update(step: int, steps: int, losses: dict[str, float]) -> None:
            text = " ".join(f"{key} {value:.3f}" for key, value in losses.items())
            bar.update(task, completed=step, total=steps, description=f"training {text}")

        yield update
