"""The console script, run as a user runs it: a subprocess with the HF hub switched off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def blipsearch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "blipsearch", *args], capture_output=True, text=True, env=full_env, timeout=300
    )


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pictures") / "red.png"
    Image.new("RGB", (48, 32), (200, 20, 20)).save(path)
    return path


def test_help_lists_every_command() -> None:
    result = blipsearch("--help")
    assert result.returncode == 0
    for command in ("index", "search", "describe", "serve", "demo", "eval", "model", "db", "config"):
        assert f" {command} " in result.stdout


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


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('caption_model = "/my/captioner"\n')
    result = blipsearch(
        "--config",
        str(config),
        "config",
        "show",
        "--json",
        env={"BLIPSEARCH_API_KEY": "hunter2", "BLIPSEARCH_DEVICE": "cpu"},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["caption_model"] == "/my/captioner" and data["device"] == "cpu"
    assert data["api_key"] == "********" and "hunter2" not in result.stdout


def test_invalid_setting_is_one_line(tmp_path: Path) -> None:
    result = blipsearch("config", "show", env={"BLIPSEARCH_DEVICE": "abacus"})
    assert result.returncode == 1
    assert "device" in result.stderr and "Traceback" not in result.stderr


def test_db_upgrade_then_current(tmp_path: Path) -> None:
    first = blipsearch("db", "upgrade", "--data-dir", str(tmp_path / "data"))
    assert first.returncode == 0, first.stderr
    assert "migrated from empty to" in first.stdout
    assert (tmp_path / "data" / "catalog.sqlite3").is_file()
    again = blipsearch("db", "upgrade", "--data-dir", str(tmp_path / "data"))
    assert again.returncode == 0 and "already at revision" in again.stdout
    current = blipsearch("db", "current", "--data-dir", str(tmp_path / "data"))
    revision = current.stdout.split()[1]
    assert current.stdout.split() == ["current", revision, "head", revision]


def test_db_upgrade_on_unreachable_database_is_one_line() -> None:
    result = blipsearch("db", "upgrade", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "127.0.0.1" in result.stderr


def test_index_help_names_every_subcommand_and_option() -> None:
    result = blipsearch("index", "--help")
    assert result.returncode == 0
    for word in ("run", "status", "verify", "rebuild"):
        assert word in result.stdout
    run_help = blipsearch("index", "run", "--help")
    for option in ("--data-dir", "--model", "--captions", "--index-kind", "--prune"):
        assert option in run_help.stdout


def test_index_status_verify_rebuild_through_the_cli(tiny_checkpoints, tmp_path: Path) -> None:
    from imagesets import write_broken_images, write_valid_images

    write_valid_images(tmp_path / "photos", 5, seed=3)
    write_broken_images(tmp_path / "photos" / "bad")
    env = {
        "BLIPSEARCH_RETRIEVAL_MODEL": str(tiny_checkpoints.retrieval),
        "BLIPSEARCH_DEVICE": "cpu",
        "BLIPSEARCH_OFFLINE": "1",
    }
    data = str(tmp_path / "data")
    indexed = blipsearch("index", str(tmp_path / "photos"), "--data-dir", data, "--no-progress", env=env)
    assert indexed.returncode == 0, indexed.stderr
    assert "embedded" in indexed.stdout and "failed" in indexed.stdout and "Traceback" not in indexed.stderr

    status = json.loads(blipsearch("index", "status", "--data-dir", data, "--json", env=env).stdout)
    assert status["items"]["indexed"] == 5 and status["items"]["failed"] >= 10
    assert status["indexes"]["images"]["state"] == "current"
    assert status["indexes"]["images"]["vectors"] == 5 and status["indexes"]["images"]["kind"] == "flat"
    assert all(failure["error"] for failure in status["failures"])

    verified = blipsearch("index", "verify", "--data-dir", data, env=env)
    assert verified.returncode == 0 and "OK" in verified.stdout

    rebuilt = blipsearch("index", "rebuild", "--data-dir", data, "--index-kind", "hnsw", "--json", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["images"] == {"kind": "hnsw", "vectors": 5}
    again = json.loads(
        blipsearch("index", str(tmp_path / "photos"), "--data-dir", data, "--json", env=env).stdout
    )
    assert again["embedded"] == 0 and again["unchanged"] == 5


def test_index_bad_arguments_are_one_line_errors(tiny_checkpoints, tmp_path: Path) -> None:
    env = {"BLIPSEARCH_RETRIEVAL_MODEL": str(tiny_checkpoints.retrieval), "BLIPSEARCH_OFFLINE": "1"}
    missing = blipsearch("index", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path / "d"), env=env)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    kind = blipsearch(
        "index", str(tmp_path), "--index-kind", "lsh", "--data-dir", str(tmp_path / "d"), env=env
    )
    assert kind.returncode == 1 and "--index-kind must be one of" in kind.stderr
