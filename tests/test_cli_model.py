"""`blipsearch model`: checkpoints inspected, made and tried from the command line, as a user runs it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from clirun import blipsearch


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pictures") / "red.png"
    Image.new("RGB", (48, 32), (200, 20, 20)).save(path)
    return path


def test_make_tiny_then_info(tmp_path: Path) -> None:
    made = blipsearch("model", "make-tiny", str(tmp_path / "m"))
    assert made.returncode == 0, made.stderr
    info = blipsearch("model", "info", str(tmp_path / "m" / "retrieval"), "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["architecture"] == "BlipForImageTextRetrieval"
    assert data["embedding_dim"] == 256
    assert data["image_size"] == 32 and data["vision_tokens"] == 17
    assert data["parameters"]["total"] == sum(v for k, v in data["parameters"].items() if k != "total")
    assert data["fingerprint"].startswith("blip-")
    table = blipsearch("model", "info", str(tmp_path / "m" / "caption"))
    assert (
        table.returncode == 0
        and "BlipForConditionalGeneration" in table.stdout
        and "fingerprint" in table.stdout
    )


def test_missing_model_is_one_line_and_nonzero(tmp_path: Path) -> None:
    result = blipsearch("model", "info", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(tmp_path / "nowhere") in lines[0] and "Traceback" not in result.stderr


def test_uncached_hub_id_offline_is_one_line(tmp_path: Path) -> None:
    result = blipsearch("model", "info", "Salesforce/blip-itm-base-coco", env={"HF_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert len([ln for ln in result.stderr.splitlines() if ln.strip()]) == 1, result.stderr
    assert "Salesforce/blip-itm-base-coco" in result.stderr


def test_embed_match_caption_ask(tiny_checkpoints, picture: Path) -> None:
    embedded = blipsearch(
        "model",
        "embed",
        "--model",
        str(tiny_checkpoints.retrieval),
        "--text",
        "a red square",
        "--image",
        str(picture),
        "--json",
    )
    assert embedded.returncode == 0, embedded.stderr
    data = json.loads(embedded.stdout)
    assert len(data["vectors"]) == 2 and len(data["vectors"][0]) == 256
    assert data["cosine"][0][0] == pytest.approx(1.0, abs=1e-5)

    matched = blipsearch(
        "model",
        "match",
        str(picture),
        "a red square",
        "a dog",
        "--model",
        str(tiny_checkpoints.retrieval),
        "--json",
    )
    assert matched.returncode == 0, matched.stderr
    results = json.loads(matched.stdout)["results"]
    assert {r["text"] for r in results} == {"a red square", "a dog"}
    assert results[0]["itm"] >= results[1]["itm"]
    assert all(r["score"] == pytest.approx(r["itm"]) for r in results)  # rerank_itc_weight 0: ITM alone

    args = (
        "model",
        "match",
        str(picture),
        "a red square",
        "a dog",
        "--model",
        str(tiny_checkpoints.retrieval),
    )
    weighted = blipsearch(*args, "--json", env={"BLIPSEARCH_RERANK_ITC_WEIGHT": "5"})
    data = json.loads(weighted.stdout)
    assert data["rerank_itc_weight"] == 5 and data["score"] == "ITM log-odds + 5 x ITC cosine"
    for r in data["results"]:
        assert r["score"] == pytest.approx(math.log(r["itm"] / (1 - r["itm"])) + 5 * r["itc"], abs=1e-4)
    assert [r["score"] for r in data["results"]] == sorted(
        (r["score"] for r in data["results"]), reverse=True
    )
    piped = blipsearch(*args, env={"BLIPSEARCH_RERANK_ITC_WEIGHT": "5"})
    header, *lines = piped.stdout.splitlines()
    assert header == "rank\ttext\tscore\titm\titc"
    assert [line.split("\t")[:2] for line in lines] == [
        [str(n), r["text"]] for n, r in enumerate(data["results"], 1)
    ]
    assert "score = ITM log-odds + 5 x ITC cosine" in piped.stderr

    captioned = blipsearch(
        "model",
        "caption",
        str(picture),
        "--model",
        str(tiny_checkpoints.caption),
        "--strategy",
        "greedy",
        "--json",
    )
    assert captioned.returncode == 0, captioned.stderr
    assert json.loads(captioned.stdout)[0]["caption"].strip()

    asked = blipsearch("model", "ask", str(picture), "what colour?", "--model", str(tiny_checkpoints.vqa))
    assert asked.returncode == 0, asked.stderr


def test_ask_without_vqa_model_is_unavailable(picture: Path) -> None:
    result = blipsearch("model", "ask", str(picture), "what colour?")
    assert result.returncode == 1
    assert "not configured" in result.stderr and "BLIPSEARCH_VQA_MODEL" in result.stderr


def test_bad_image_is_a_clear_error(tiny_checkpoints, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    result = blipsearch("model", "embed", "--model", str(tiny_checkpoints.retrieval), "--image", str(broken))
    assert result.returncode == 1
    assert str(broken) in result.stderr and "Traceback" not in result.stderr
