"""`blipsearch index`: build, inspect, verify and rebuild as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from clirun import blipsearch


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
