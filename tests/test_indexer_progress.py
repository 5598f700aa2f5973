"""Progress: a structured log line with rate and ETA when there is no terminal."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from blipsearch.indexer.progress import Progress


def test_without_a_terminal_progress_is_logged_with_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(log_every=0.0, console=Console(file=io.StringIO(), force_terminal=False))
    with caplog.at_level(logging.INFO, logger="blipsearch.indexer.progress"):
        progress.start(total=10, description="Indexing photos")
        progress.advance(4, embedded=3, failed=1)
        progress.advance(6, embedded=8, failed=2)
        progress.finish()
    records = [r for r in caplog.records if r.getMessage() == "progress"]
    assert [r.done for r in records] == [4, 10]  # type: ignore[attr-defined]
    last = records[-1]
    assert (last.total, last.embedded, last.failed) == (10, 8, 2)  # type: ignore[attr-defined]
    assert last.per_second > 0 and last.eta_seconds == 0  # type: ignore[attr-defined]


def test_on_a_terminal_a_bar_is_drawn() -> None:
    out = io.StringIO()
    progress = Progress(log_every=1e9, console=Console(file=out, force_terminal=True, width=120))
    progress.start(total=3, description="Indexing photos")
    progress.advance(3, embedded=3)
    progress.finish()
    assert "Indexing photos" in out.getvalue() and "3/3" in out.getvalue()


def test_disabled_progress_draws_nothing() -> None:
    out = io.StringIO()
    progress = Progress(enabled=False, log_every=1e9, console=Console(file=out, force_terminal=True))
    progress.start(total=2, description="quiet")
    progress.advance(2)
    progress.finish()
    assert out.getvalue() == ""


def test_off_a_terminal_a_waiting_person_can_ask_for_plain_lines() -> None:
    now = [100.0]
    out = io.StringIO()
    progress = Progress(
        log_every=10.0,
        console=Console(file=out, force_terminal=False, width=200),
        lines_off_terminal=True,
        clock=lambda: now[0],
    )
    progress.start(total=300, description="Indexing the demo catalog")
    now[0] += 5.0
    progress.advance(50)  # before log_every: nothing yet
    now[0] += 5.0
    progress.advance(50)  # 100 in 10 s: 10 img/s, 200 left: 20 s
    now[0] += 190.0
    progress.advance(200)
    progress.finish()
    assert out.getvalue().splitlines() == [
        "Indexing the demo catalog: 100/300 (33%), 10.0 img/s, about 20s left",
        "Indexing the demo catalog: 300/300 (100%), 1.5 img/s",
    ]


def test_plain_lines_are_off_unless_asked_for() -> None:
    out = io.StringIO()
    progress = Progress(log_every=0.0, console=Console(file=out, force_terminal=False))
    progress.start(total=2, description="quiet")
    progress.advance(2)
    progress.finish()
    assert out.getvalue() == ""
