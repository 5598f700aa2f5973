"""`blipsearch demo` and `blipsearch serve` as processes a user starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


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


def test_serve_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "blipsearch", "serve", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 0 and "--port" in result.stdout and "--data-dir" in result.stdout
