"""The Ray indexing benchmark's own code: both engines index the same images on a private local
cluster, the report shows both, and the 10M-image estimate's arithmetic is right. Timings are not
asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.ray_indexing_report import (
    GpuAssumption,
    checkpoint_bytes,
    estimate,
    markdown,
    paper_estimate,
    section_lines,
)
from bench.report import markdown as suite_markdown

GPU = GpuAssumption("test card", peak_bf16_tflops=100.0, sustained_share=0.5)
"""100 TFLOP/s x 0.5 over 10 GFLOP per image: 5000 images/s per GPU."""


REPO = Path(__file__).resolve().parent.parent


def test_estimate_is_gpu_bound_until_the_driver_caps_it() -> None:
    one, four = estimate(
        images=18_000_000,
        gflop_per_image=10.0,
        read_ms_per_image=2.0,
        commit_ms_per_image=0.1,
        startup_s=0.0,
        gpu=GPU,
        gpu_counts=(1, 4),
    )
    assert one["gpu_images_per_s"] == 5000.0 and one["cluster_images_per_s"] == 5000.0
    assert one["decode_cores_per_gpu"] == 10, "5000 images/s x 2 ms of a core each"
    assert one["bound"] == "GPUs" and one["gpu_busy"] == 1.0
    assert one["hours"] == 1.0 and one["hours_if_driver_kept_up"] == 1.0
    assert four["cluster_images_per_s"] == 10_000.0, "one driver commits 1 / 0.1 ms"
    assert four["bound"] == "driver commit" and four["gpu_busy"] == 0.5
    assert four["decode_cores_total"] == 20 and four["decode_cores_per_gpu"] == 10
    assert four["hours"] == 0.5 and four["hours_if_driver_kept_up"] == 0.25


def test_estimate_adds_the_start_up_and_has_no_cap_without_a_commit_cost() -> None:
    (row,) = estimate(
        images=9_000_000,
        gflop_per_image=10.0,
        read_ms_per_image=0.5,
        commit_ms_per_image=0.0,
        startup_s=1800.0,
        gpu=GPU,
        gpu_counts=(2,),
    )
    assert row["cluster_images_per_s"] == 10_000.0 and row["bound"] == "GPUs"
    assert row["decode_cores_per_gpu"] == 3, "2.5 cores round up"
    assert row["hours"] == 0.75, "half an hour of start-up, 900 s of work"


def test_every_checkpoint_writes_the_whole_index_so_far() -> None:
    assert checkpoint_bytes(10, 2, 1.0) == 2 + 4 + 6 + 8 + 10
    assert checkpoint_bytes(11, 4, 3.0) == (4 + 8) * 3.0, "no checkpoint for the last 3"


def _base_section() -> dict[str, Any]:
    return {
        "gflop_per_image": 111.0,
        "read_ms_per_image": 20.0,
        "commit_ms_per_image": 1.0,
        "embedding_dim": 256,
        "commit_run": {"checkpoint_items": 2000},
        "ray": {"startup_s": 5.0, "first_chunk_s": 15.0},
    }


def test_paper_estimate_takes_its_inputs_from_the_base_section() -> None:
    paper = paper_estimate(_base_section(), images=1000)
    assert paper["inputs"] == {
        "images": 1000,
        "gflop_per_image": 111.0,
        "read_ms_per_image": 20.0,
        "commit_ms_per_image": 1.0,
        "startup_s": 20.0,
    }
    assert {row["gpu"] for row in paper["rows"]} == {"H100 SXM", "A100 SXM"}
    assert [row["gpus"] for row in paper["rows"]] == [1, 8, 32, 1, 8, 32]
    assert "Assumed, not measured" in paper["assumption"]
    assert paper["checkpoints"]["bytes_per_vector"] == 1024


@pytest.fixture(scope="module")
def section(tiny_checkpoints, tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Run in a process of its own: the bench starts and stops a private Ray cluster, and a Ray
    connection started and shut down inside this test worker left the worker's later Ray tests
    (on the session's cluster) with actors cancelled before they ran."""
    work: Path = tmp_path_factory.mktemp("ray-indexing")
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from bench import ray_indexing\n"
        "section = ray_indexing.run({'tiny': Path(sys.argv[1])}, Path(sys.argv[2]), counts={'tiny': 6},"
        " commit_files=70, size=(96, 64), log=lambda _: None)\n"
        "Path(sys.argv[3]).write_text(json.dumps(section))\n"
    )
    out = work / "section.json"
    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_checkpoints.retrieval), str(work), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def test_both_engines_index_the_same_images(section: dict[str, Any]) -> None:
    row = section["models"]["tiny"]
    local, ray = row["local"], row["ray"]
    assert local["embedded"] == ray["embedded"] == 6
    assert row["commit_run"]["embedded"] == 70 and row["commit_run"]["writer_seconds"] > 0
    assert local["failed"] == ray["failed"] == 0
    assert local["rerun"]["embedded"] == ray["rerun"]["embedded"] == 0, "the re-runs find nothing new"
    assert ray["workers"] >= 1 and ray["cpus_per_worker"] > 0
    figures = [
        local["images_per_s"],
        local["first_chunk_s"],
        ray["images_per_s"],
        ray["images_per_s_with_startup"],
        ray["startup_s"],
        ray["first_chunk_s"],
        row["ray_over_local"],
        row["read_ms_per_image"],
        row["embed_ms_per_image"],
        row["commit_ms_per_image"],
        row["gflop_per_image"],
    ]
    assert all(value >= 0 for value in figures), figures
    assert row["gflop_per_image"] > 0 and local["images_per_s"] > 0 and ray["images_per_s"] > 0
    assert ray["first_chunk_s"] <= ray["seconds"] + 1e-6
    assert "estimate" not in section, "the estimate is made from BLIP-base only"


def test_reports_show_both_engines(section: dict[str, Any]) -> None:
    report: dict[str, Any] = {"machine": {"cpu": "Some CPU", "cores": 2}, "when": "2026-12-07T00:00:00Z"}
    text = markdown({**report, "ray_indexing": section})
    assert "Some CPU, 2 cores" in text
    assert "| local |" in text and "| ray |" in text and "No paper estimate" in text
    suite = suite_markdown(
        {
            **report,
            "machine": {**report["machine"], "torch": "2"},
            "device": "cpu",
            "quick": True,
            "seconds": 1.0,
            "gemm_fp32_gflops": 1.0,
            "models": {},
            "ray_indexing": {**section, "estimate": paper_estimate(_base_section())},
        }
    )
    assert "## Ray indexing" in suite and "### Paper estimate: 10,000,000 images" in suite
    assert "R = min(G x R_gpu, 1 / t_commit)" in suite and "25.6 TB for 10,000,000 images" in suite


def test_a_missing_ray_is_said_not_raised() -> None:
    lines = section_lines({"ray_missing": "pip install ray"})
    assert lines == ["No Ray rows: pip install ray"]
