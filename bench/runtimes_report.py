"""The runtimes section's markdown: one table per subject and graph, ratios against torch fp32 and
against the torch path blipsearch's defaults run, and the adoption rule applied to each graph."""

from __future__ import annotations

from typing import Any

GRAPH_TITLES = {
    "text": "text ITC (8-token query; throughput: 8 texts)",
    "vision": "ViT + projection (throughput: 8 images)",
    "itm": "ITM on cached vision tokens (8-token query; throughput: 32 pairs)",
}
UNITS = {"text": "texts/s", "vision": "images/s", "itm": "pairs/s"}


def _x(value: float) -> str:
    return f"{value:.2f}x"


def fastest(section: dict[str, Any], graph: str, agreement: float) -> str | None:
    """The runtime with the best batch-1 latency among those at or above `agreement`."""
    rows = {name: row for name, row in section["runtimes"].items() if row["agreement"][graph] >= agreement}
    if not rows:
        return None
    return min(rows, key=lambda name: rows[name]["speed"][graph]["p50_ms"])


def graph_table(section: dict[str, Any], graph: str, heading: str = "###") -> list[str]:
    rows = section["runtimes"]
    fp32 = rows["torch fp32"]["speed"][graph]
    default_name = section["default_torch"][graph]
    default = rows[default_name]["speed"][graph]
    agreement_header = "ITM order agreement (max abs diff)" if graph == "itm" else "top-10 agreement"
    out = [
        f"{heading} {section['title']}: {GRAPH_TITLES[graph]}",
        "",
        f"| Runtime | p50 ms (batch 1) | x torch fp32 | x default ({default_name}) | {UNITS[graph]} "
        f"| x torch fp32 | x default | {agreement_header} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        speed, agree = row["speed"][graph], row["agreement"]
        shown = (
            f"{agree['itm']:.3f} ({agree['itm_max_abs_diff']:.1e})"
            if graph == "itm"
            else f"{agree[graph]:.3f}"
        )
        out.append(
            f"| {name}{' (default)' if name == default_name else ''} | {speed['p50_ms']:.2f} "
            f"| {_x(fp32['p50_ms'] / speed['p50_ms'])} | {_x(default['p50_ms'] / speed['p50_ms'])} "
            f"| {speed['items_per_s']:.1f} | {_x(speed['items_per_s'] / fp32['items_per_s'])} "
            f"| {_x(speed['items_per_s'] / default['items_per_s'])} | {shown} |"
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    out = [
        f"# CPU inference runtimes: {info['cpu']}, {info['cores']} cores, {report['when']}",
        "",
        f"Run took {report['seconds']} s" + (" (quick mode: small counts)." if report["quick"] else "."),
        "",
        *section_lines(report, heading="##"),
    ]
    return "\n".join(out) + "\n"


def section_lines(report: dict[str, Any], heading: str) -> list[str]:
    """The tables under `heading`-level titles (`##` alone, `###` inside the suite's report)."""
    info = report["machine"]
    versions = report["versions"]
    rule = report["rule"]
    out = [
        f"torch {versions['torch']} ({info['torch_threads']} threads), "
        f"ONNX Runtime {versions['onnxruntime']}, "
        f"OpenVINO {versions['openvino']}, onnx {versions['onnx']}; native bf16: "
        f"{'yes' if report['native_bf16'] else 'no (torch bf16 left out)'}.",
        "",
        "Each runtime runs the same three graphs on the same inputs (ONNX exported from torch fp32 with "
        "SDPA attention). Ratios are against torch fp32 and against the torch path blipsearch's defaults "
        "run on this CPU, from the same run (above 1: faster). Agreement is with torch fp32 on the demo "
        "catalog (emoji names as queries): text-to-image top-10 overlap with this runtime's vectors for "
        "that graph (the other side torch fp32's); for ITM, the share of positions of fp32's ITC top 10, "
        "re-ranked by ITM, that hold the same candidate. Torch int8 is `quantize=all`; the default's "
        "ViT int8 is the same quantisation of the ViT.",
        "",
        f"Adoption rule: a runtime replaces the default torch path for a graph only at >= {rule['speedup']}x "
        f"its speed (latency and throughput) with agreement >= {rule['agreement']}.",
    ]
    for section in report["subjects"].values():
        out += [
            "",
            f"{heading} {section['title']}",
            "",
            f"Catalog: {section['catalog_images']} images, {section['itm_queries']} ITM queries; ONNX export "
            f"{section['export_s']} s, int8 quantisation {section['onnx_int8_quantize_s']} s; "
            "ONNX sizes (MB): "
            + ", ".join(f"{graph} {size}" for graph, size in section["onnx_mb"].items())
            + "."
            + (
                " Machine load (1-minute load average, before and after): "
                f"{section['load_average_1min'][0]} and {section['load_average_1min'][1]}."
                if "load_average_1min" in section
                else ""
            ),
        ]
        for graph in GRAPH_TITLES:
            out += ["", *graph_table(section, graph, heading + "#")]
        out += ["", "| Graph | default torch path | qualifying runtimes | fastest at agreement >= 0.98 |"]
        out.append("|---|---|---|---|")
        for graph, decision in section["decision"].items():
            qualifying = ", ".join(decision["qualifying"]) or "none"
            out.append(
                f"| {graph} | {decision['default']} | {qualifying} "
                f"| {fastest(section, graph, rule['agreement']) or 'none'} |"
            )
    return out
