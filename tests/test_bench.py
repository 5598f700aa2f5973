"""The speed suite's own code: its sections run on the tiny model and its report says what it measured.

Timings are not asserted (speed is measured in bench/, never in tests); the structure, the
baselines beside every figure and the target verdicts are.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from bench import model_bench
from bench.report import markdown, summary, targets
from bench.subjects import default_variant, load_subject
from bench.suite import machine_slug
from blipsearch.machine import cpu_has_native_bf16


@pytest.fixture(scope="module")
def subject(tiny_checkpoints):  # type: ignore[no-untyped-def]
    return load_subject("tiny", tiny_checkpoints.retrieval, torch.device("cpu"))


def test_queries_of_exact_token_lengths(subject) -> None:  # type: ignore[no-untyped-def]
    for length in (8, 35):
        text = model_bench.text_of_length(subject, length)
        assert len(subject.processor.tokenizer(text)["input_ids"]) == length


def test_model_sections_measure_stock_and_fast_variants(subject) -> None:  # type: ignore[no-untyped-def]
    native = "fast bf16" if cpu_has_native_bf16() else "fast fp32"
    assert default_variant(subject) == native, "tiny models are not quantized by default"
    images = model_bench.image_embedding(subject, 4, gemm=100.0)
    assert {"stock per image", "stock batched (8)", "fast fp32", "fast int8-vision"} <= set(
        images["variants"]
    )
    assert all(row["images_per_s"] > 0 for row in images["variants"].values())
    text = model_bench.text_encoding(subject, 3, gemm=100.0)
    assert set(text["latency"]) == {"8 tokens", "35 tokens"}
    assert text["latency"]["8 tokens"]["fast fp32"]["n"] == 3
    assert "stock (padded to 35)" in text["throughput_batch64"]
    itm = model_bench.itm_reranking(subject, [2, 5], 2, gemm=100.0)
    fp32 = itm["by_k"]["5"]["fast fp32"]
    assert fp32["max_abs_diff_vs_stock"] < 1e-5, "the fast fp32 ITM computes what stock computes"


REPORT = {
    "machine": {
        "cpu": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
        "cores": 2,
        "gpu": None,
        "torch": "2",
    },
    "device": "cpu",
    "quick": False,
    "seconds": 1.0,
    "when": "2026-12-01T00:00:00Z",
    "gemm_fp32_gflops": 200.0,
    "models": {
        "blip-base": {
            "title": "BLIP-base",
            "default_variant": "fast int8-vision",
            "image_embedding": {
                "count": 8,
                "gflop_per_image": 111.0,
                "variants": {
                    "stock per image": {"images_per_s": 1.0, "pct_of_fp32_gemm_bound": 50.0},
                    "stock batched (8)": {"images_per_s": 0.9, "pct_of_fp32_gemm_bound": 45.0},
                    "fast int8-vision": {"images_per_s": 4.0, "pct_of_fp32_gemm_bound": 200.0},
                },
            },
            "text_encoding": {
                "latency": {
                    "8 tokens": {
                        "fp32_gemm_bound_ms": 7.0,
                        "stock (padded to 35)": {
                            "p50_ms": 60.0,
                            "p99_ms": 70.0,
                            "pct_of_fp32_gemm_bound": 11.0,
                        },
                        "fast int8-vision": {"p50_ms": 30.0, "p99_ms": 35.0, "pct_of_fp32_gemm_bound": 23.0},
                        "fast int8 (all)": {"p50_ms": 7.0, "p99_ms": 8.0, "pct_of_fp32_gemm_bound": 100.0},
                    }
                },
                "throughput_batch64": {"stock (padded to 35)": 10.0, "fast int8-vision": 30.0},
            },
            "itm": {
                "query_tokens": 8,
                "by_k": {
                    k: {
                        "stock_fp32_gemm_bound_ms": 1.0,
                        "stock (padded to 35)": {
                            "p50_ms": 1000.0,
                            "p99_ms": 1100.0,
                            "pct_of_fp32_gemm_bound": 1.0,
                        },
                        "fast int8-vision": {
                            "p50_ms": 200.0,
                            "p99_ms": 210.0,
                            "pct_of_fp32_gemm_bound": 5.0,
                            "max_abs_diff_vs_stock": 1e-7,
                        },
                    }
                    for k in ("8", "32")
                },
            },
            "indexing": {"model_variant": "fast int8-vision"},
            "search": {},
        }
    },
}


def test_target_verdicts_follow_the_measurements() -> None:
    rows = {what: met for what, _, _, _, met in targets(REPORT)}
    assert rows["BLIP-base text query, 8 tokens, p50"] is False, "30 ms misses 20 ms"
    assert rows["BLIP-base text query, 8 tokens, p50 (opt-in)"] is True
    assert rows["BLIP-base image embedding (tensors)"] is True
    assert rows["BLIP-base ITM k=8, p50"] is True
    slower = copy.deepcopy(REPORT)
    slower["models"]["blip-base"]["image_embedding"]["variants"]["fast int8-vision"]["images_per_s"] = 1.2
    assert {w: m for w, _, _, _, m in targets(slower)}["BLIP-base image embedding (tensors)"] is False


def test_markdown_and_readme_summary_carry_baselines_and_machine() -> None:
    text = markdown(REPORT)
    assert "Intel(R) Xeon(R) Platinum 8375C" in text and "vs stock" in text
    assert "| fast int8-vision | 4.0 | 4.0x |" in text
    short = summary(REPORT, "bench/results/x.md")
    assert short.count("\n| BLIP-base") == 5 and "(bench/results/x.md)" in short
    assert machine_slug(REPORT["machine"]) == "intel-xeon-platinum-2c"


def test_markdown_has_the_vector_store_section_when_measured() -> None:
    cell = {"p50_ms": 2.0, "p95_ms": 3.0, "recall_at_10": 1.0, "rows_mean": 10.0, "rows_min": 10}
    engine = {**cell, "kind": "faiss", "index": "IDMap2,Flat", "build_s": 1.0, "bytes": 4 * 10**6}
    naive = {**engine, "kind": "pgvector", "index": "halfvec HNSW", "load_s": 1.0, "p50_ms": 1.0}
    naive["filtered"] = {"1%": {**cell, "rows_mean": 0.5, "rows_min": 0}}
    naive["uses_hnsw"] = {"all": True, "1%": True}
    report = copy.deepcopy(REPORT)
    report["vector_stores"] = {
        "vectors": 1000,
        "dim": 256,
        "k": 10,
        "queries": 5,
        "filtered_queries": 5,
        "faiss_threads": 2,
        "admitted": {"1%": 10},
        "engines": {"FAISS flat (exact baseline)": {**engine, "filtered": {"1%": cell}}, "naive": naive},
    }
    text = markdown(report)
    assert "## Vector stores, 1,000 vectors" in text and "## Paper estimate" in text
    assert "| naive | 1% (10) | 0.5 (0) | 0.05 | 1.0 | 2.0 | 3.0 | 1.0x | HNSW graph (planner) |" in text
    assert "| naive | halfvec HNSW | 1.0 + 1.0 | 4 (4,000) | 1.0 | 3.0 | 2.0x | 1.0 |" in text
    assert "vector_stores" not in markdown(REPORT) and "## Vector stores" not in markdown(REPORT)


def test_a_section_keeps_a_partial_report_while_it_runs_and_writes_both_files_at_the_end(tmp_path) -> None:
    from bench.common import run_to_results

    seen: list[bool] = []

    def section(save):  # type: ignore[no-untyped-def]
        save({"figures": [1]})
        seen.append((tmp_path / "x.partial.json").is_file())
        return {"figures": [1, 2]}

    report = run_to_results(tmp_path, "x", section, lambda data: f"# {len(data['figures'])} figures\n")
    assert seen == [True] and not (tmp_path / "x.partial.json").exists()
    assert json.loads((tmp_path / "x.json").read_text())["figures"] == [1, 2]
    assert (tmp_path / "x.md").read_text() == "# 2 figures\n"
    assert report["when"] and report["seconds"] >= 0
