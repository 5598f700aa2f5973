"""How long `blipsearch demo` takes to serve: `python -m bench.demo_serve`.

Runs the real command on a fresh directory (index the shipped catalog, caption every product, start
the server) and times it until `/readyz` answers 200, the moment a person can search. Twice in
the same run: the naive baseline (captions generated 8 images per call, the library default the
demo used before) and the demo as it ships (a whole indexing chunk per call, texts embedded in
length-sorted batches); the two catalogs' captions are compared, so the speed-up is known not to
change what the demo writes. The baseline cannot undo the length-sorted text batches (they are
not a setting), so the ratio understates the gain over the old demo. The load average before and
after is recorded: on a shared machine the absolute figures move, the ratio much less.
Writes bench/results/demo-serve-<machine>-<date>.json and .md.

    python -m bench.demo_serve              # the whole catalog, both variants: ~10 minutes on 2 cores
    python -m bench.demo_serve --limit 200  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import machine
from bench.suite import RESULTS, machine_slug

VARIANTS: dict[str, dict[str, str]] = {
    "baseline: caption batch 8": {"BLIPSEARCH_CAPTION_BATCH_SIZE": "8"},
    "as shipped": {},
}
READY_TIMEOUT_S = 3600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_once(directory: Path, extra_env: dict[str, str], limit: int | None) -> dict[str, Any]:
    """Start `blipsearch demo` on an empty directory; seconds until indexed and until /readyz is 200."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLIPSEARCH_")}
    env.update(extra_env)
    command = [sys.executable, "-m", "blipsearch", "demo", "--dir", str(directory), "--port", str(port)]
    if limit is not None:
        command += ["--limit", str(limit)]
    log_path = directory.with_suffix(".log")
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with log_path.open("w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            ready = _wait_ready(f"http://127.0.0.1:{port}", server, started)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    text = log_path.read_text()
    indexed_line = next((line for line in text.splitlines() if line.startswith("indexed ")), "")
    return {
        "seconds_to_serve": round(ready, 1),
        "progress_lines": sum(": " in line and "img/s" in line for line in text.splitlines()),
        "indexed": indexed_line.split(" into")[0],
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def _wait_ready(base: str, server: subprocess.Popen[bytes], started: float) -> float:
    with httpx.Client(timeout=5) as client:
        while time.monotonic() - started < READY_TIMEOUT_S:
            if server.poll() is not None:
                raise RuntimeError(f"blipsearch demo exited with {server.returncode} before serving")
            try:
                if client.get(f"{base}/readyz").status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise RuntimeError("blipsearch demo did not serve in time")


def captions(directory: Path) -> dict[str, str | None]:
    with sqlite3.connect(directory / "data" / "catalog.sqlite3") as connection:
        rows = connection.execute("SELECT source, caption FROM items WHERE caption IS NOT NULL")
        return dict(rows.fetchall())


def run(work: Path, limit: int | None) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    written: dict[str, dict[str, str | None]] = {}
    for name, extra_env in VARIANTS.items():
        directory = work / name.split(":")[0].replace(" ", "-")
        rows[name] = serve_once(directory, extra_env, limit)
        written[name] = captions(directory)
        print(f"{name}: {rows[name]['seconds_to_serve']} s to serve", flush=True)
    baseline, shipped = (written[name] for name in VARIANTS)
    same = sum(baseline.get(source) == caption for source, caption in shipped.items())
    return {
        "machine": machine(),
        "limit": limit,
        "variants": rows,
        "same_captions": {"same": same, "of": len(shipped)},
    }


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    names = list(report["variants"])
    base = report["variants"][names[0]]["seconds_to_serve"]
    out = [
        "# `blipsearch demo`: time to serve",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, GPU: {info['gpu'] or 'none'}; "
        f"{report['when']}. Products: {report['limit'] or 'the whole catalog'}. "
        "From the command's start on an empty directory to `/readyz` answering 200 "
        "(index, caption every product, start the server).",
        "",
        "| variant | seconds to serve | vs baseline | load average before / after | what it indexed |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for name in names:
        row = report["variants"][name]
        out.append(
            f"| {name} | {row['seconds_to_serve']} | {base / row['seconds_to_serve']:.2f}x "
            f"| {row['load_average_before']} / {row['load_average_after']} | {row['indexed']} |"
        )
    same = report["same_captions"]
    out += ["", f"Captions identical between the two: {same['same']} of {same['of']} products."]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.demo_serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--limit", type=int, default=None, help="index only the first N products")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and markdown go")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="blipsearch-bench-demo-"))
    report = run(work, args.limit)
    report["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stem = f"demo-serve-{machine_slug(report['machine'])}-{time.strftime('%Y-%m-%d')}" + (
        f"-limit{args.limit}" if args.limit else ""
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out / stem}.json and .md")


if __name__ == "__main__":
    main()
