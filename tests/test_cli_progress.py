"""The shared live bar: drawn on a terminal, absent elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from blipsearch.cli.progress import live_bar


def test_no_bar_without_a_terminal_or_when_disabled() -> None:
    with live_bar(Console(file=io.StringIO(), force_terminal=False), enabled=True) as bar:
        assert bar is None
    with live_bar(Console(file=io.StringIO(), force_terminal=True), enabled=False) as bar:
        assert bar is None


def test_bar_on_a_terminal_shows_progress() -> None:
    out = io.StringIO()
    with live_bar(Console(file=out, force_terminal=True, width=100), enabled=True) as bar:
        assert bar is not None
        task = bar.add_task("embedding images", total=4)
        bar.update(task, completed=4)
    assert "embedding images" in out.getvalue() and "4/4" in out.getvalue()
