"""The load bench: `python -m bench load` (from the repository root).

Starts real `blipsearch serve` processes on 127.0.0.1 and drives them over HTTP, each server
configuration in turn in the same run: the batched service (defaults), `--workers 2` when this
checkout's `serve` has it, and the baseline, the unbatched single-worker service
(BLIPSEARCH_BATCHING=false BLIPSEARCH_INFERENCE_WORKERS=1). Two subjects: the shipped demo model
over the demo catalog, and BLIP-base's architecture with random weights over the catalog's first
products (`--blip-products`).

Per level: closed loop (1, 8, 32, 128 clients; text queries, every 9th request an image upload,
reported apart) and open loop (Poisson arrivals at multiples of the batched configuration's
closed-loop peak, to show where 503s begin): OK/s, p50/p95/p99 of OK answers, 503 share, mean
re-rank depth and the share of pages whose depth was shed, the server's RSS (process tree) and the
1-minute load average (the clients share the machine). For BLIP-base, 8 text clients, and the
answers both configurations gave to the same queries are compared. `--soak-seconds S` runs the
batched demo server at 32 clients for S seconds, sampling RSS. Progress: JSON lines on stderr.
Writes bench/results/load-<machine>-<date>.json and .md, with the issue's targets beside the
baseline.

    python -m bench load                         # both subjects, ~25 minutes on 2 cores
    python -m bench load --soak-seconds 600      # and the 10-minute memory soak
    python -m bench load --quick                 # a smoke run: 5 s levels, 1 and 8 clients
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine, machine_slug, run_to_results
from bench.load_client import (
    Outcome,
    Workload,
    closed_loop,
    compare_answers,
    first_answers,
    open_loop,
    summarize,
)
from bench.load_report import markdown, targets
from bench.load_server import (
    BASELINE,
    BATCHED,
    BLIP_ITC_ONLY,
    ONNX_ALL,
    Config,
    Server,
    Subject,
    blip_base_subject,
    demo_subject,
    supports_workers,
)
from bench.subjects import demo_pairs

RSS_SAMPLE_S = 5.0
WARMUP_S = 3.0


def progress(event: str, **fields: Any) -> None:
    print(json.dumps({"t": time.strftime("%H:%M:%S"), "event": event, **fields}), file=sys.stderr, flush=True)


class Budget:
    """The run's total deadline: a level that would end past it is skipped, and says so."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def allows(self, seconds: float) -> bool:
        return time.monotonic() + seconds <= self.deadline


def workload(image_every: int, images: int = 64) -> Workload:
    paths, names = demo_pairs()
    queries = tuple(dict.fromkeys(names))
    uploads = tuple(path.read_bytes() for path in paths[:: max(1, len(paths) // images)][:images])
    return Workload(queries, uploads if image_every else (), image_every)


def _total_ok_per_s(level: dict[str, Any]) -> float:
    return round(
        sum(level[kind]["ok"] for kind in ("text", "image") if kind in level) / level["elapsed_s"], 2
    )


def _level(outcomes: list[Outcome], elapsed: float, server: Server, **extra: Any) -> dict[str, Any]:
    level = {**extra, **summarize(outcomes, elapsed)}
    level["ok_per_s"] = _total_ok_per_s(level)
    level["rss_mb"] = round(server.rss() / 2**20, 1)
    level["load_1m"] = round(os.getloadavg()[0], 2)
    return level


def drive_config(
    subject: Subject,
    config: Config,
    load: Workload,
    args: argparse.Namespace,
    budget: Budget,
    clients: list[int],
    seconds: float,
    peak: float | None,
    rates: list[float],
) -> tuple[dict[str, Any], dict[str, list[tuple[int, float]]]]:
    """One server configuration: start, warm up, closed-loop levels, then open-loop levels at
    `rates` x `peak` (its own closed-loop peak when `peak` is None)."""
    result: dict[str, Any] = {"env": config.env, "workers": config.workers, "closed": {}, "open": {}}
    answers: dict[str, list[tuple[int, float]]] = {}
    with Server(subject, config, args.work / f"server-{subject.key}.log") as server:
        result["seconds_to_ready"] = round(server.wait_ready(), 1)
        result["rss_ready_mb"] = round(server.rss() / 2**20, 1)
        asyncio.run(closed_loop(server.base, load, 4, WARMUP_S, max_requests=args.max_requests))
        progress("ready", subject=subject.key, config=config.name, rss_mb=result["rss_ready_mb"])
        for count in clients:
            if not budget.allows(seconds + 30):
                result["closed"][str(count)] = {"skipped": "total deadline"}
                continue
            outcomes, elapsed = asyncio.run(
                closed_loop(server.base, load, count, seconds, max_requests=args.max_requests)
            )
            for query, hits in first_answers(outcomes).items():
                answers.setdefault(query, hits)
            level = result["closed"][str(count)] = _level(outcomes, elapsed, server, clients=count)
            progress("closed", subject=subject.key, config=config.name, **_brief(level))
        measured = [level["ok_per_s"] for level in result["closed"].values() if "ok_per_s" in level]
        result["closed_peak_ok_per_s"] = max(measured, default=0.0)
        base_rate = peak if peak is not None else result["closed_peak_ok_per_s"]
        for multiple in rates:
            rate = round(multiple * base_rate, 2)
            if rate <= 0 or not budget.allows(args.open_seconds + 30):
                result["open"][str(multiple)] = {"skipped": "no peak" if rate <= 0 else "total deadline"}
                continue
            outcomes, elapsed = asyncio.run(
                open_loop(
                    server.base,
                    load,
                    rate,
                    args.open_seconds,
                    max_requests=args.max_requests,
                    seed=len(result["open"]),
                )
            )
            level = result["open"][str(multiple)] = _level(
                outcomes, elapsed, server, rate=rate, multiple=multiple
            )
            progress("open", subject=subject.key, config=config.name, **_brief(level))
        result["stage_mean_ms"] = server.stage_means_ms()
    return result, answers


def _brief(level: dict[str, Any]) -> dict[str, Any]:
    text = level.get("text", {})
    keys = ("clients", "rate", "ok_per_s", "rss_mb", "load_1m")
    return {
        **{key: level[key] for key in keys if key in level},
        **{key: text.get(key) for key in ("p50_ms", "p99_ms", "share_503", "mean_reranked_count")},
    }


def soak(subject: Subject, load: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """The batched server at 32 clients for `--soak-seconds`, its RSS sampled every few seconds."""
    samples: list[tuple[float, float]] = []
    with Server(subject, BATCHED, args.work / f"server-{subject.key}-soak.log") as server:
        server.wait_ready()

        async def run() -> tuple[list[Outcome], float]:
            started = time.monotonic()
            driver = asyncio.ensure_future(
                closed_loop(server.base, load, 32, args.soak_seconds, max_requests=10**7)
            )
            while not driver.done():
                samples.append((round(time.monotonic() - started, 1), round(server.rss() / 2**20, 1)))
                await asyncio.wait({driver}, timeout=RSS_SAMPLE_S)
            return driver.result()

        outcomes, elapsed = asyncio.run(run())
        level = _level(outcomes, elapsed, server, clients=32)
    after_minute = next((rss for at, rss in samples if at >= 60), samples[-1][1] if samples else None)
    end = level["rss_mb"]
    ratio = round(end / after_minute, 3) if after_minute else None
    progress("soak", rss_after_1min_mb=after_minute, rss_end_mb=end, ratio=ratio)
    return {
        "seconds": args.soak_seconds,
        "level": level,
        "rss_samples": samples,
        "rss_after_1min_mb": after_minute,
        "rss_end_mb": end,
        "ratio": ratio,
    }


def onnx_runtime_installed() -> bool:
    try:
        __import__("onnxruntime")
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    budget = Budget(args.deadline_minutes * 60)
    report: dict[str, Any] = {"machine": machine(), "quick": args.quick, "settings": _settings(args)}
    report["load_1m_start"] = round(os.getloadavg()[0], 2)
    configs = [BATCHED]
    if supports_workers():
        configs.append(Config("batched, --workers 2", workers=2))
        if onnx_runtime_installed():
            configs.append(
                Config("batched, --workers 2, ONNX Runtime (all graphs)", dict(ONNX_ALL), workers=2)
            )
    configs.append(BASELINE)
    report["subjects"] = {}
    if "demo" in args.subjects:
        subject = demo_subject(args.work, args.rerank_k)
        progress("indexed", subject="demo", data_dir=str(subject.data_dir))
        load = workload(args.image_every)
        section: dict[str, Any] = {"title": subject.title, "configs": {}}
        peak = None
        for config in configs:
            result, _ = drive_config(
                subject, config, load, args, budget, args.clients, args.seconds, peak, args.open_rates
            )
            section["configs"][config.name] = result
            peak = peak if peak is not None else result["closed_peak_ok_per_s"]
        section["saturation_ok_per_s"] = peak
        report["subjects"]["demo"] = section
        save(report)
    if "blip-base" in args.subjects:
        subject = blip_base_subject(args.work, args.blip_products, args.rerank_k)
        progress("indexed", subject="blip-base", data_dir=str(subject.data_dir))
        load = workload(0)
        section = {"title": subject.title, "products": args.blip_products, "configs": {}}
        answers = {}
        peak = None
        for config in (BATCHED, BASELINE):
            result, answers[config.name] = drive_config(
                subject,
                config,
                load,
                args,
                budget,
                [args.blip_clients],
                args.blip_seconds,
                peak,
                args.blip_open_rates,
            )
            section["configs"][config.name] = result
            peak = peak if peak is not None else result["closed_peak_ok_per_s"]
        section["equal_results"] = compare_answers(answers[BASELINE.name], answers[BATCHED.name])
        for config in BLIP_ITC_ONLY:
            result, _ = drive_config(
                subject, config, load, args, budget, [args.blip_clients], args.blip_seconds, None, []
            )
            section["configs"][config.name] = result
        report["subjects"]["blip-base"] = section
        save(report)
    if "demo" in args.subjects and args.soak_seconds:  # last: a short deadline trims it first
        demo = report["subjects"]["demo"]
        if budget.allows(args.soak_seconds + 60):
            demo["soak"] = soak(demo_subject(args.work, args.rerank_k), workload(args.image_every), args)
        else:
            demo["soak_skipped"] = "total deadline"
    report["load_1m_end"] = round(os.getloadavg()[0], 2)
    report["targets"] = targets(report, args.blip_clients)
    return report


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "clients",
        "seconds",
        "open_rates",
        "open_seconds",
        "image_every",
        "blip_clients",
        "blip_seconds",
        "blip_open_rates",
        "blip_products",
        "max_requests",
        "soak_seconds",
    )
    return {name: getattr(args, name) for name in names}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--subjects", nargs="+", default=["demo", "blip-base"], choices=["demo", "blip-base"])
    p.add_argument(
        "--clients", nargs="+", type=int, default=[1, 8, 32, 128], help="closed-loop levels (demo)"
    )
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per closed-loop level (default 20)")
    p.add_argument(
        "--open-rates",
        nargs="+",
        type=float,
        default=[0.5, 0.8, 1.0, 1.3],
        help="open-loop arrival rates, as multiples of the batched closed-loop peak",
    )
    p.add_argument("--open-seconds", type=float, default=20.0, help="seconds per open-loop level")
    p.add_argument(
        "--image-every", type=int, default=9, help="every Nth demo request is an image upload; 0: none"
    )
    p.add_argument("--blip-clients", type=int, default=8, help="BLIP-base: concurrent text clients")
    p.add_argument("--blip-seconds", type=float, default=30.0, help="BLIP-base: seconds of its closed loop")
    p.add_argument("--blip-open-rates", nargs="*", type=float, default=[0.8, 1.3], help="BLIP-base open loop")
    p.add_argument("--blip-products", type=int, default=48, help="BLIP-base: catalog products indexed")
    p.add_argument(
        "--rerank-k",
        type=int,
        default=8,
        help="re-rank depth of every server (default 8, the CPU default's most)",
    )
    p.add_argument("--max-requests", type=int, default=20_000, help="most requests per level")
    p.add_argument(
        "--soak-seconds", type=float, default=0.0, help="batched demo server at 32 clients this long"
    )
    p.add_argument(
        "--deadline-minutes", type=float, default=90.0, help="the whole run's limit; later levels skipped"
    )
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: 5 s levels, 1 and 8 clients, one open rate"
    )
    p.add_argument(
        "--work", type=Path, default=None, help="scratch folder, reused across runs (default: temp)"
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and markdown go")
    p.add_argument("--suffix", default="", help="appended to the report's name (a second run the same day)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.open_seconds, args.open_rates = [1, 8], 5.0, 5.0, [1.0]
        args.blip_seconds, args.blip_open_rates = 10.0, []
    args.work = args.work or Path(tempfile.mkdtemp(prefix="blipsearch-bench-load-"))
    args.work.mkdir(parents=True, exist_ok=True)
    stem = f"load-{machine_slug(machine())}-{time.strftime('%Y-%m-%d')}" + ("-quick" if args.quick else "")
    stem += f"-{args.suffix}" if args.suffix else ""
    run_to_results(args.out, stem, lambda save: run(args, save), markdown)


if __name__ == "__main__":
    main()
