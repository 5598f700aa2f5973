"""The load bench's clients, counting and report, against the real app under uvicorn on loopback
(tiny BLIP, a real catalog). Every count is checked against the server's own request counter;
no timing is asserted."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.load_client import (
    Outcome,
    Workload,
    arrivals,
    check_loopback,
    closed_loop,
    compare_answers,
    first_answers,
    open_loop,
    percentile,
    summarize,
)
from bench.load_report import markdown, targets
from bench.load_server import Server, tree_rss
from blipsearch.api.app import create_app
from blipsearch.indexer.pipeline import Indexer

from imagesets import noise_png, write_valid_images
from live_server import serving

QUERIES = ("a red apple", "two dogs", "blue sky", "a green car")


@pytest.fixture
def served(tmp_path: Path, indexer_settings) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    """The real app over an indexed folder of six images; yields its URL and the app."""
    settings = indexer_settings(inference_workers=1, inference_queue=0)
    indexer = Indexer(settings)
    try:
        indexer.run(write_valid_images(tmp_path / "images", 6, seed=3)[0].parent)
    finally:
        indexer.catalog.close()
    app = create_app(settings)
    with serving(app) as base:
        yield base, app


def _server_counts(base: str) -> dict[tuple[str, str], int]:
    """(route, status) -> requests, from the server's Prometheus counter."""
    text = httpx.get(f"{base}/metrics", trust_env=False).text
    pattern = r'blipsearch_requests_total\{method="\w+",route="([^"]+)",status="(\d+)"\} ([0-9.]+)'
    return {(route, status): int(float(n)) for route, status, n in re.findall(pattern, text)}


def _route_counts(summary: dict[str, Any], kind: str, route: str) -> dict[tuple[str, str], int]:
    return {(route, status): count for status, count in summary[kind]["statuses"].items()}


def test_closed_loop_counts_match_the_servers_own(served: tuple[str, Any]) -> None:
    base, _ = served
    load = Workload(QUERIES, (noise_png(1), noise_png(2)), image_every=3, k=4)
    outcomes, elapsed = asyncio.run(closed_loop(base, load, 2, 2.0, max_requests=40))
    summary = summarize(outcomes, elapsed)
    assert 0 < len(outcomes) <= 40
    server = _server_counts(base)
    expected = {
        **_route_counts(summary, "text", "/v1/search"),
        **_route_counts(summary, "image", "/v1/search/image"),
    }
    assert {key: server.get(key, 0) for key in expected} == expected
    assert summary["text"]["requests"] + summary["image"]["requests"] == len(outcomes)
    for kind in ("text", "image"):
        row = summary[kind]
        assert row["ok"] + row["statuses"].get("503", 0) + row["other_errors"] == row["requests"]
        if row["ok"]:
            assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    answered = [o for o in outcomes if o.kind == "text" and o.status == 200]
    assert all(o.hits is not None and len(o.hits) <= 4 and o.query in QUERIES for o in answered)


def test_refused_requests_are_counted_as_503(served: tuple[str, Any]) -> None:
    base, app = served
    app.state.blip.gate.capacity = 0  # no model slot at all: every search is refused at once
    load = Workload(QUERIES, (noise_png(1),), image_every=2)
    outcomes, elapsed = asyncio.run(open_loop(base, load, 20.0, 1.0, max_requests=10, poisson=False))
    summary = summarize(outcomes, elapsed)
    assert len(outcomes) == 10
    for kind in ("text", "image"):
        assert summary[kind]["ok"] == 0 and summary[kind]["ok_per_s"] == 0
        assert summary[kind]["statuses"] == {"503": 5} and summary[kind]["share_503"] == 1.0
        assert summary[kind]["p99_ms"] is None and summary[kind]["other_errors"] == 0
    assert _server_counts(base)[("/v1/search", "503")] == 5
    assert all(outcome.retry_after is not None and outcome.retry_after > 0 for outcome in outcomes)


def test_a_level_stops_at_its_request_count(served: tuple[str, Any]) -> None:
    base, _ = served
    outcomes, _ = asyncio.run(closed_loop(base, Workload(QUERIES), 2, 600.0, max_requests=6))
    assert len(outcomes) == 6 and {o.kind for o in outcomes} == {"text"}


def test_only_loopback_is_driven() -> None:
    check_loopback("http://127.0.0.1:8080")
    for base in ("http://localhost:8080", "http://10.0.0.1:8080", "http://example.com"):
        with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
            asyncio.run(closed_loop(base, Workload(QUERIES), 1, 1.0, max_requests=1))


def test_workload_sends_every_nth_request_as_an_image() -> None:
    load = Workload(("q0", "q1"), (b"A", b"B"), image_every=3)
    assert [load.request(n) for n in range(6)] == [
        ("text", "q0"), ("text", "q1"), ("image", b"A"), ("text", "q1"), ("text", "q0"), ("image", b"B"),
    ]  # fmt: skip
    assert Workload(("q",), (b"A",), image_every=0).request(2) == ("text", "q")


def test_percentile_is_a_measured_value() -> None:
    values = [float(n) for n in range(100, 0, -1)]
    assert (
        percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    )
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_arrivals_stay_within_the_level() -> None:
    even = arrivals(4.0, 2.0, poisson=False, seed=0, limit=100)
    assert len(even) == 7 and even[0] == pytest.approx(0.25)
    poisson = arrivals(50.0, 3.0, poisson=True, seed=1, limit=100)
    assert len(poisson) == 100 or poisson[-1] < 3.0
    assert poisson == sorted(poisson) and arrivals(50.0, 3.0, poisson=True, seed=1, limit=100) == poisson
    assert len(arrivals(1000.0, 10.0, poisson=True, seed=0, limit=25)) == 25


def test_answers_compare_by_ids_order_and_scores() -> None:
    shed = Outcome("text", 200, 0.1, 4, True, "c", ((9, 0.9),))
    left = first_answers([Outcome("text", 200, 0.1, 4, False, "a", ((1, 0.5), (2, 0.4))), shed])
    assert set(left) == {"a"}
    right = {"a": [(1, 0.50005), (2, 0.4)], "b": [(3, 0.1)]}
    assert compare_answers(left, right)["same"] == 1 and compare_answers(left, right)["queries"] == 1
    assert compare_answers(left, {"a": [(2, 0.4), (1, 0.5)]})["differing"] == ["a"]
    assert compare_answers(left, {"a": [(1, 0.6), (2, 0.4)]})["same"] == 0


def test_tree_rss_counts_this_process() -> None:
    own = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024
    assert tree_rss(os.getpid()) >= own // 2


def _level(text_ok: int, p99: float, elapsed: float = 10.0, **extra: Any) -> dict[str, Any]:
    statuses = {"200": text_ok, **({"503": extra.pop("refused")} if "refused" in extra else {})}
    text = {
        "ok": text_ok,
        "ok_per_s": text_ok / elapsed,
        "p50_ms": p99 / 2,
        "p95_ms": p99,
        "p99_ms": p99,
        "statuses": statuses,
        "share_503": 0.0,
        "other_errors": 0,
        "mean_reranked_count": 8.0,
        "rerank_shed_share": 0.0,
    }
    return {
        "elapsed_s": elapsed,
        "text": text,
        "ok_per_s": text_ok / elapsed,
        "rss_mb": 500.0,
        "load_1m": 1.0,
        **extra,
    }


def _report() -> dict[str, Any]:
    def config(ok32: int, p99: float, refused: int, ok8: int) -> dict[str, Any]:
        return {
            "closed": {"32": _level(ok32, p99, clients=32), "8": _level(ok8, p99, clients=8)},
            "open": {"0.5": _level(10, p99, rate=5.0, multiple=0.5, refused=refused)},
        }

    return {
        "machine": {"cpu": "Some CPU", "cores": 2, "gpu": None},
        "when": "2026-12-07T00:00:00Z",
        "load_1m_start": 1.0,
        "load_1m_end": 2.0,
        "settings": {"seconds": 10},
        "subjects": {
            "demo": {
                "title": "shipped demo model",
                "saturation_ok_per_s": 30.0,
                "configs": {
                    "batched (defaults)": config(300, 800.0, 0, 100),
                    "baseline (unbatched, 1 worker)": config(100, 1500.0, 3, 50),
                },
                "soak": {
                    "seconds": 600,
                    "rss_after_1min_mb": 500.0,
                    "rss_end_mb": 560.0,
                    "ratio": 1.12,
                    "level": {"ok_per_s": 30.0},
                },
            },
            "blip-base": {
                "title": "BLIP-base",
                "configs": {
                    "batched (defaults)": config(0, 900.0, 0, 20),
                    "baseline (unbatched, 1 worker)": config(0, 900.0, 0, 10),
                },
                "equal_results": {"queries": 5, "same": 5, "max_score_diff": 0.0, "tolerance": 1e-4},
            },
        },
    }


def _target(words: str) -> dict[str, Any]:
    return next(row for row in targets(_report(), 8) if words in row["target"])


def test_targets_stand_beside_the_baseline_of_the_same_run() -> None:
    demo = _target("demo, 32 clients, text OK/s")
    assert (demo["figure"], demo["baseline"], demo["ratio"], demo["met"]) == (30.0, 10.0, 3.0, True)
    p99 = _target("p99")
    assert (p99["figure"], p99["baseline"], p99["met"]) == (800.0, 1500.0, True)
    refused = _target("no 503")
    assert (refused["figure"], refused["baseline"], refused["met"]) == (0, 3, True)
    memory = _target("memory")
    assert (memory["ratio"], memory["met"]) == (1.12, False)
    blip = _target("BLIP-base, 8 text clients")
    assert (blip["figure"], blip["baseline"], blip["ratio"], blip["met"]) == (2.0, 1.0, 2.0, False)
    equal = _target("equal results")
    assert equal["figure"] == "5 of 5 queries" and equal["met"] is True


def test_markdown_has_the_targets_and_every_level() -> None:
    report = _report()
    report["targets"] = targets(report, 8)
    text = markdown(report)
    assert (
        "| demo, 32 clients, text OK/s >= 3x baseline: batched (defaults) | 30.0 | 10.0 | 3.0 | yes |" in text
    )
    assert "| 1.12 | **no** |" in text
    assert (
        text.count("| batched (defaults) | 32 |") == 2
        and "| baseline (unbatched, 1 worker) | 5.0 (0.5x) |" in text
    )
    assert "Load average (1 min) at the start 1.0, at the end 2.0" in text
    assert "5 of 5 queries answered by both configurations" in text


def test_stage_means_come_from_the_servers_histograms(served: tuple[str, Any]) -> None:
    base, _ = served
    asyncio.run(closed_loop(base, Workload(QUERIES), 1, 600.0, max_requests=3))
    server = Server.__new__(Server)
    server.base = base
    stages = server.stage_means_ms()
    assert "encode" in stages and all(ms >= 0 for ms in stages.values())
