"""`blipsearch demo` as a process a user starts, and `blipsearch demo-assets`, its steps one by one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from blipsearch.cli import app
from blipsearch.demo import DEMO_RERANKS, demo_assets, demo_rerank_itc_weight


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLIPSEARCH_")}
    return {**env, "BLIPSEARCH_DEVICE": "cpu", "BLIPSEARCH_OFFLINE": "1", **extra}


def test_demo_indexes_the_shipped_catalog_with_the_shipped_model_and_serves(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blipsearch",
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--port",
            str(port),
            "--limit",
            "40",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert ready is not None, process.stdout.read() if process.stdout else ""
        assert ready["items"] == 40
        base = f"http://127.0.0.1:{port}/v1/search"
        sku = httpx.get(base, params={"q": "NOTO-1F600", "mode": "keyword"}).json()
        assert sku["hits"][0]["sku"] == "NOTO-1F600" and sku["hits"][0]["caption"]
        # the shipped model, not noise: a face the catalog never words this way, by vector search alone
        titles = {
            hit["title"]
            for hit in httpx.get(base, params={"q": "a grinning face", "mode": "vector", "k": 3}).json()[
                "hits"
            ]
        }
        assert "Grinning face (Noto)" in titles
        assert "<html" in httpx.get(f"http://127.0.0.1:{port}/").text.lower()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def test_demo_assets_rerank_settings_prints_what_the_quickstart_reads() -> None:
    result = CliRunner().invoke(app, ["demo-assets", "rerank-settings"])
    assert result.exit_code == 0, result.output
    rerank, weight = result.output.split()
    assert rerank == str(DEMO_RERANKS).lower()
    demo_dir = Path(__file__).resolve().parents[1] / "demo"
    assert float(weight) == demo_rerank_itc_weight(demo_assets(demo_dir))


def test_demo_assets_broken_files_writes_three_files_that_fail(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo-assets", "broken-files", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    broken = tmp_path / "work" / "broken"
    assert str(broken) in result.output and "catalog.csv" in result.output
    assert sorted(path.name for path in broken.iterdir()) == [
        "empty.png",
        "not-an-image.png",
        "truncated.png",
    ]
    assert (broken / "empty.png").stat().st_size == 0


def test_demo_assets_honours_the_root_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'demo_dir = "{tmp_path / "nowhere"}"\n')
    result = CliRunner().invoke(app, ["--config", str(config), "demo-assets", "rerank-settings"])
    assert result.exit_code == 1 and "nowhere" in str(result.exception)
