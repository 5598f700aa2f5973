"""The load bench's report: the issue's targets against the baseline of the same run, and the
figures of every level as markdown tables."""

from __future__ import annotations

from typing import Any

BASELINE_PREFIX = "baseline"
BATCHED_NAME = "batched (defaults)"


def _configs(report: dict[str, Any], subject: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    configs = report.get("subjects", {}).get(subject, {}).get("configs", {})
    baseline = next((value for name, value in configs.items() if name.startswith(BASELINE_PREFIX)), None)
    return configs.get(BATCHED_NAME), baseline


def _text(config: dict[str, Any] | None, group: str, level: str, key: str) -> Any:
    if config is None:
        return None
    return config.get(group, {}).get(level, {}).get("text", {}).get(key)


def _ratio(figure: Any, baseline: Any) -> float | None:
    if isinstance(figure, int | float) and isinstance(baseline, int | float) and baseline > 0:
        return round(figure / baseline, 3)
    return None


def _503_below_saturation(config: dict[str, Any] | None) -> int | None:
    """503 answers in open-loop levels whose rate is below the batched closed-loop peak."""
    if config is None:
        return None
    levels = [level for level in config.get("open", {}).values() if level.get("multiple", 1.0) < 1.0]
    if not levels:
        return None
    return sum(
        level.get(kind, {}).get("statuses", {}).get("503", 0)
        for level in levels
        for kind in ("text", "image")
    )


def targets(report: dict[str, Any], blip_clients: int = 8) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(target: str, figure: Any, baseline: Any, met: bool | None, ratio: float | None = None) -> None:
        rows.append({"target": target, "figure": figure, "baseline": baseline, "ratio": ratio, "met": met})

    if "demo" in report.get("subjects", {}):
        batched, baseline = _configs(report, "demo")
        configs = report["subjects"]["demo"].get("configs", {})
        for name, config in configs.items():
            if name.startswith(BASELINE_PREFIX):
                continue
            figure = _text(config, "closed", "32", "ok_per_s")
            base = _text(baseline, "closed", "32", "ok_per_s")
            ratio = _ratio(figure, base)
            row(
                f"demo, 32 clients, text OK/s >= 3x baseline: {name}",
                figure,
                base,
                None if ratio is None else ratio >= 3,
                ratio,
            )
            p99, base_p99 = _text(config, "closed", "32", "p99_ms"), _text(baseline, "closed", "32", "p99_ms")
            row(
                f"demo, 32 clients, text p99 <= 1000 ms: {name}",
                p99,
                base_p99,
                None if p99 is None else p99 <= 1000,
            )
        refused, base_refused = _503_below_saturation(batched), _503_below_saturation(baseline)
        row(
            "demo, no 503 below the saturation rate (open loop)",
            refused,
            base_refused,
            None if refused is None else refused == 0,
        )
        soak = report["subjects"]["demo"].get("soak")
        if soak and soak.get("ratio") is not None:
            row(
                f"memory: RSS after {soak['seconds']:.0f} s at saturation within 10% of the first minute",
                soak["rss_end_mb"],
                soak["rss_after_1min_mb"],
                abs(soak["ratio"] - 1) <= 0.10,
                soak["ratio"],
            )
        else:
            row("memory: RSS flat (within 10%) after 10 minutes at saturation", None, None, None)
    if "blip-base" in report.get("subjects", {}):
        batched, baseline = _configs(report, "blip-base")
        level = str(blip_clients)
        figure, base = (
            _text(batched, "closed", level, "ok_per_s"),
            _text(baseline, "closed", level, "ok_per_s"),
        )
        ratio = _ratio(figure, base)
        row(
            f"BLIP-base, {level} text clients, OK/s >= 2.5x baseline",
            figure,
            base,
            None if ratio is None else ratio >= 2.5,
            ratio,
        )
        configs = report["subjects"]["blip-base"].get("configs", {})
        itc_batched = configs.get("batched, re-rank off")
        itc_baseline = configs.get("baseline (unbatched, 1 worker), re-rank off")
        if itc_batched is not None and itc_baseline is not None:
            figure = _text(itc_batched, "closed", level, "ok_per_s")
            base = _text(itc_baseline, "closed", level, "ok_per_s")
            ratio = _ratio(figure, base)
            row(
                f"BLIP-base, {level} text clients, re-rank off (query encoder), OK/s >= 2.5x baseline",
                figure,
                base,
                None if ratio is None else ratio >= 2.5,
                ratio,
            )
        equal = report["subjects"]["blip-base"].get("equal_results", {})
        same, queries = equal.get("same"), equal.get("queries")
        row(
            "BLIP-base, equal results (same ids and order, scores within 1e-4)",
            f"{same} of {queries} queries",
            None,
            bool(queries) and same == queries,
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return str(value)


LEVEL_HEADER = (
    "| config | {what} | OK/s | text OK/s | text p50 / p95 / p99 ms | image OK/s | image p50 / p99 ms "
    "| 503 share text / image | other errors | mean re-ranked | shed pages | server RSS MB | load 1m |\n"
    "| --- | ---: | ---: | ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"
)


def _level_row(config: str, what: Any, level: dict[str, Any]) -> str:
    if "skipped" in level:
        return f"| {config} | {what} | skipped: {level['skipped']} |" + " |" * 10
    text, image = level.get("text", {}), level.get("image", {})
    errors = text.get("other_errors", 0) + image.get("other_errors", 0)
    latency = " / ".join(_cell(text.get(f"p{p}_ms")) for p in (50, 95, 99))
    image_latency = " / ".join(_cell(image.get(f"p{p}_ms")) for p in (50, 99)) if image else "-"
    share = f"{_cell(text.get('share_503'))} / {_cell(image.get('share_503')) if image else '-'}"
    return (
        f"| {config} | {what} | {level['ok_per_s']} | {_cell(text.get('ok_per_s'))} | {latency} "
        f"| {_cell(image.get('ok_per_s'))} | {image_latency} | {share} | {errors} "
        f"| {_cell(text.get('mean_reranked_count'))} | {_cell(text.get('rerank_shed_share'))} "
        f"| {level['rss_mb']} | {level['load_1m']} |"
    )


def _subject(key: str, section: dict[str, Any]) -> list[str]:
    out = [f"## {section['title']} ({key})", ""]
    if "saturation_ok_per_s" in section:
        out += [
            f"Measured saturation (the batched closed-loop peak): {section['saturation_ok_per_s']} OK/s.",
            "",
        ]
    out += ["Closed loop (N clients, each sends when answered):", "", LEVEL_HEADER.format(what="clients")]
    for name, config in section["configs"].items():
        out += [_level_row(name, clients, level) for clients, level in config["closed"].items()]
    if any(config["open"] for config in section["configs"].values()):
        out += [
            "",
            "Open loop (Poisson arrivals; latency from when each request was due):",
            "",
            LEVEL_HEADER.format(what="rate/s (x peak)"),
        ]
        for name, config in section["configs"].items():
            out += [
                _level_row(name, f"{level.get('rate', '-')} ({multiple}x)", level)
                for multiple, level in config["open"].items()
            ]
    ready = ", ".join(
        f"{name}: {config.get('seconds_to_ready')} s, {config.get('rss_ready_mb')} MB"
        for name, config in section["configs"].items()
    )
    out += ["", f"Start (to /readyz) and RSS when ready: {ready}."]
    stage_rows = [
        f"- {name}: " + ", ".join(f"{stage} {ms}" for stage, ms in config["stage_mean_ms"].items())
        for name, config in section["configs"].items()
        if config.get("stage_mean_ms")
    ]
    if stage_rows:
        out += [
            "",
            "Where the time goes: mean ms per query stage (the server's /metrics, its whole run):",
            "",
        ]
        out += stage_rows
    equal = section.get("equal_results")
    if equal:
        out += [
            "",
            f"Equal results: {equal['same']} of {equal['queries']} queries answered by both configurations "
            f"returned the same ids in the same order with scores within {equal['tolerance']} "
            f"(largest score difference {equal['max_score_diff']:.2e}).",
        ]
    soak = section.get("soak")
    if soak:
        out += [
            "",
            f"Soak: batched, 32 clients, {soak['seconds']:.0f} s, {soak['level']['ok_per_s']} OK/s; "
            "RSS after "
            f"the first minute {soak['rss_after_1min_mb']} MB, at the end {soak['rss_end_mb']} MB "
            f"(ratio {soak['ratio']}).",
        ]
    return [*out, ""]


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    out = [
        "# Load bench: `blipsearch serve` over loopback",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, GPU: {info['gpu'] or 'none'}; "
        f"{report.get('when', '')}. "
        f"Load average (1 min) at the start {report['load_1m_start']}, at the end {report['load_1m_end']}; "
        "the clients run on the same cores as the server. Baseline: the unbatched single-worker service "
        "(BLIPSEARCH_BATCHING=false BLIPSEARCH_INFERENCE_WORKERS=1, and BLIPSEARCH_RERANK_SHED_FROM=1: "
        "no re-rank shedding, as before batching), measured in the same run.",
        "",
        "## Targets",
        "",
        "| target | figure | baseline | ratio | met? |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in report["targets"]:
        out.append(
            f"| {row['target']} | {_cell(row['figure'])} | {_cell(row['baseline'])} | {_cell(row['ratio'])} "
            f"| {_cell(row['met']) if row['met'] is not None else 'not measured'} |"
        )
    out.append("")
    for key, section in report["subjects"].items():
        out += _subject(key, section)
    settings = ", ".join(f"{key} {value}" for key, value in report["settings"].items())
    out += [f"Settings: {settings}. Latencies are of OK answers; OK/s counts text and image answers.", ""]
    return "\n".join(out)
