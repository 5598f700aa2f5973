"""The suite's markdown: a target summary (also copied into the README) and every table in full."""

from __future__ import annotations

from typing import Any

from bench.ray_indexing_report import section_lines
from bench.runtimes_report import section_lines as runtime_lines
from bench.vector_stores_report import paper_estimate, table


def _row(*cells: object) -> str:
    return "| " + " | ".join("" if cell is None else str(cell) for cell in cells) + " |"


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.1f}x" if baseline else "n/a"


def _default(section: dict[str, Any]) -> str:
    return str(section["default_variant"])


def targets(report: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    """(what, target, measured, against the baseline, met) for each target of the speed issue."""
    rows: list[tuple[str, str, str, str, bool | None]] = []
    cpu = report["device"] == "cpu"
    base = report["models"].get("blip-base")
    demo = report["models"].get("demo")
    if base:
        text = base["text_encoding"]["latency"]["8 tokens"]
        stock = text["stock (padded to 35)"]["p50_ms"]
        limit = 20.0 if cpu else 1.0
        shown = [_default(base)] + (["fast int8 (all)"] if cpu and "fast int8 (all)" in text else [])
        for fast in dict.fromkeys(shown):
            ours = text[fast]["p50_ms"]
            rows.append(
                (
                    "BLIP-base text query, 8 tokens, p50" + ("" if fast == _default(base) else " (opt-in)"),
                    f"<= {limit:g} ms" + (", >= 5x" if cpu else ""),
                    f"{ours:.1f} ms ({fast})",
                    f"stock {stock:.1f} ms: {_ratio(stock, ours)}",
                    ours <= limit and (stock / ours >= 5 if cpu else True),
                )
            )
        images = base["image_embedding"]["variants"]
        fast = _default(base)
        stock_best = max(row["images_per_s"] for name, row in images.items() if name.startswith("stock"))
        ours = images[fast]["images_per_s"]
        agreements = (demo or {}).get("int8_quality", {}).get("top10_agreement", {})
        agreement = {
            "fast int8-vision": agreements.get("int8 vision"),
            "fast bf16": agreements.get("bf16"),
        }.get(fast, agreements.get("int8 all") if "int8" in fast else 1.0)
        if cpu:
            met = ours / stock_best >= 1.5 and (agreement is None or agreement >= 0.9)
            rows.append(
                (
                    "BLIP-base image embedding (tensors)",
                    ">= 1.5x stock fp32, top-10 agreement >= 0.9",
                    f"{ours:.2f} img/s ({fast}); agreement {agreement}",
                    f"best stock {stock_best:.2f} img/s: {_ratio(ours, stock_best)}",
                    met,
                )
            )
        else:
            rows.append(
                (
                    "BLIP-base image embedding (tensors)",
                    ">= 3500 img/s bf16",
                    f"{ours:.0f} img/s ({fast})",
                    f"best stock {stock_best:.0f} img/s: {_ratio(ours, stock_best)}",
                    ours >= 3500,
                )
            )
        for k in ("8", "32"):
            itm = base["itm"]["by_k"][k]
            fast = _default(base)
            stock, ours = itm["stock (padded to 35)"]["p50_ms"], itm[fast]["p50_ms"]
            if cpu or k == "32":
                target = ">= 2x stock" if cpu else "<= 5 ms"
                met = stock / ours >= 2 if cpu else ours <= 5
                rows.append(
                    (
                        f"BLIP-base ITM k={k}, p50",
                        target,
                        f"{ours:.0f} ms ({fast})",
                        f"stock {stock:.0f} ms: {_ratio(stock, ours)}",
                        met,
                    )
                )
    if demo:
        http = demo["search"]["http: blipsearch default"]
        stock = demo["search"]["http: stock service"]
        rows.append(
            (
                "demo model, text search over HTTP with re-ranking, p50",
                "<= 50 ms",
                f"{http['p50_ms']:.1f} ms (p99 {http['p99_ms']:.1f}; {http['mean_reranked']} re-ranked)",
                f"stock service {stock['p50_ms']:.1f} ms: {_ratio(stock['p50_ms'], http['p50_ms'])}",
                http["p50_ms"] <= 50,
            )
        )
        indexing = demo["indexing"]
        catalog = indexing.get("demo catalog (64 px PNG + metadata)", {})
        jpeg = indexing.get("jpeg 500x375", {})
        rate = catalog.get("pipeline_images_per_s", 0.0)
        rows.append(
            (
                "demo model, indexing from files",
                ">= 50 img/s",
                f"{rate:.0f} img/s (demo catalog); "
                f"{jpeg.get('pipeline_images_per_s', 0):.0f} img/s (500x375 JPEG)",
                f"naive {jpeg.get('naive_images_per_s', 0):.0f} img/s on JPEG: {jpeg.get('ratio', 0)}x",
                rate >= 50,
            )
        )
    return rows


def summary(report: dict[str, Any], link: str) -> str:
    info = report["machine"]
    lines = [
        f"Latest run: {report['when']} on {info['cpu']} ({info['cores']} cores"
        f"{', GPU ' + info['gpu'] if info.get('gpu') else ', no GPU'}), device {report['device']}; "
        f"measured fp32 GEMM {report['gemm_fp32_gflops']} GFLOP/s. Full tables: [{link}]({link}).",
        "",
        "| What | Target | Measured | Against the baseline (same run) | Met |",
        "|---|---|---|---|---|",
    ]
    for what, target, measured, baseline, met in targets(report):
        mark = "yes" if met else ("no" if met is False else "n/a")
        lines.append(f"| {what} | {target} | {measured} | {baseline} | {mark} |")
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    out = [
        f"# Speed suite: {info['cpu']}, {report['when']}",
        "",
        f"Device {report['device']}; {info['cores']} cores; torch {info['torch']}; "
        f"fp32 GEMM {report['gemm_fp32_gflops']} GFLOP/s"
        + (
            f", int8 dynamic GEMM {report['gemm_int8_dynamic_gflops']} GFLOP/s"
            if "gemm_int8_dynamic_gflops" in report
            else ""
        )
        + (f", bf16 GEMM {report['gemm_bf16_gflops']} GFLOP/s" if "gemm_bf16_gflops" in report else "")
        + f". Run took {report['seconds']} s"
        + (" (quick mode: small counts)." if report["quick"] else "."),
        "",
        "Percent of bound = the stock algorithm's fp32 FLOPs at the measured GEMM rate, divided by the "
        "measured time; above 100% means the variant does less fp32 work than the stock algorithm "
        "(int8 arithmetic, the factorised cross-attention).",
        "",
        "## Targets",
        "",
        summary(report, "this file").split("\n", 2)[2],
    ]
    for key, section in report["models"].items():
        out += ["", f"## {section['title']} (`{key}`)", ""]
        images = section["image_embedding"]
        stock = images["variants"]["stock per image"]["images_per_s"]
        out += [
            f"### Image embedding from tensors ({images['count']} images, "
            f"{images['gflop_per_image']} GFLOP each)",
            "",
            "| Variant | images/s | vs stock per image | % of fp32 GEMM bound |",
            "|---|---|---|---|",
        ]
        for name, row in images["variants"].items():
            rate = row["images_per_s"]
            out.append(_row(name, rate, _ratio(rate, stock), row["pct_of_fp32_gemm_bound"]))
        text = section["text_encoding"]
        for length, rows in text["latency"].items():
            stock_ms = rows["stock (padded to 35)"]["p50_ms"]
            out += ["", f"### Text query, batch 1, {length} (bound {rows['fp32_gemm_bound_ms']} ms)", ""]
            out += ["| Variant | p50 ms | p99 ms | vs stock | % of bound |", "|---|---|---|---|---|"]
            for name, row in rows.items():
                if isinstance(row, dict):
                    p50 = row["p50_ms"]
                    out.append(
                        _row(name, p50, row["p99_ms"], _ratio(stock_ms, p50), row["pct_of_fp32_gemm_bound"])
                    )
        through = text["throughput_batch64"]
        stock_rate = through["stock (padded to 35)"]
        out += ["", "### Text throughput, batch 64", "", "| Variant | texts/s | vs stock |", "|---|---|---|"]
        out += [f"| {name} | {rate} | {_ratio(rate, stock_rate)} |" for name, rate in through.items()]
        out += [
            "",
            f"### ITM re-ranking, vision tokens cached, {section['itm']['query_tokens']}-token query",
            "",
        ]
        out += [
            "| k | Variant | p50 ms | p99 ms | vs stock | % of bound | max abs diff vs stock |",
            "|---|---|---|---|---|---|---|",
        ]
        for k, rows in section["itm"]["by_k"].items():
            stock_ms = rows["stock (padded to 35)"]["p50_ms"]
            for name, row in rows.items():
                if isinstance(row, dict):
                    diff = row.get("max_abs_diff_vs_stock")
                    p50 = row["p50_ms"]
                    shown = None if diff is None else f"{diff:.2e}"
                    bound = row["pct_of_fp32_gemm_bound"]
                    out.append(_row(k, name, p50, row["p99_ms"], _ratio(stock_ms, p50), bound, shown))
        indexing = section["indexing"]
        out += [
            "",
            f"### Indexing from files (`blipsearch index`, {indexing['model_variant']}) "
            "against the naive loop",
            "",
        ]
        out += ["| Files | Count | pipeline images/s | naive images/s | ratio |", "|---|---|---|---|---|"]
        for name, row in indexing.items():
            if isinstance(row, dict):
                rate = row["pipeline_images_per_s"]
                out.append(_row(name, row["indexed"], rate, row.get("naive_images_per_s"), row.get("ratio")))
        out += ["", "### End-to-end text search (default re-rank setting; each query new to the process)", ""]
        out += [
            "| Path | p50 ms | p99 ms | mean re-ranked | repeated query p50 ms |",
            "|---|---|---|---|---|",
        ]
        for name, row in section["search"].items():
            repeated = row.get("repeated_query_p50_ms")
            out.append(_row(name, row["p50_ms"], row["p99_ms"], row["mean_reranked"], repeated))
        quality = section.get("int8_quality")
        if quality:
            recall = quality["text_to_image_recall"]
            out += [
                "",
                f"### int8 against fp32 on the demo catalog ({quality['pairs']} emoji, query = its name)",
                "",
                f"Top-10 agreement with fp32: {quality['top10_agreement']}; text-to-image recall: {recall}.",
            ]
    vectors = report.get("vector_search")
    if vectors:
        out += ["", "## Vector search, 256-d unit vectors, batch-1 queries, k=10", ""]
        out += [
            "| Vectors | Index | p50 ms | p99 ms | recall@10 vs exact | build s |",
            "|---|---|---|---|---|---|",
        ]
        for size, rows in vectors.items():
            for name, row in rows.items():
                recall = row.get("recall_at_10", 1.0)
                out.append(
                    _row(f"{int(size):,}", name, row["p50_ms"], row["p99_ms"], recall, row.get("build_s"))
                )
    ray = report.get("ray_indexing")
    if ray:
        out += ["", "## Ray indexing", "", *section_lines(ray, heading="###")]
    runtimes = report.get("runtimes")
    if runtimes:
        out += ["", "## CPU inference runtimes", "", *runtime_lines(runtimes, heading="###")]
    stores = report.get("vector_stores")
    if stores:
        out += [
            "",
            f"## Vector stores, {stores['vectors']:,} vectors",
            "",
            *table(stores),
            "",
            *paper_estimate(stores),
        ]
    return "\n".join(out) + "\n"
