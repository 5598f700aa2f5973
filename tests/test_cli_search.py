"""`blipsearch search` and `blipsearch describe` as a user runs them, on an indexed manifest."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from imagesets import TEST_MAX_PIXELS, write_valid_images


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blipsearch", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **env},
    )


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoints) -> tuple[dict[str, str], list[Path]]:
    root = tmp_path_factory.mktemp("shop")
    paths = write_valid_images(root, 6, seed=31)
    with open(root / "products.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "sku", "title", "brand", "category", "price", "tags"])
        for index, path in enumerate(paths):
            brand = "Quokkaware" if index == 4 else "acme"
            writer.writerow(
                [
                    path.relative_to(root).as_posix(),
                    f"QW-{index}00",
                    f"product {index}",
                    brand,
                    ["bags", "shoes"][index % 2],
                    index * 10,
                    "red",
                ]
            )
    env = {
        "BLIPSEARCH_DATA_DIR": str(root / "data"),
        "BLIPSEARCH_RETRIEVAL_MODEL": str(tiny_checkpoints.retrieval),
        "BLIPSEARCH_CAPTION_MODEL": str(tiny_checkpoints.caption),
        "BLIPSEARCH_DEVICE": "cpu",
        "BLIPSEARCH_OFFLINE": "1",
        "BLIPSEARCH_MAX_IMAGE_PIXELS": str(TEST_MAX_PIXELS),
        # every shortlisted candidate is re-ranked however loaded the machine (the budget's own
        # behaviour: tests/test_search_clock.py)
        "BLIPSEARCH_RERANK_BUDGET_MS": "600000",
    }
    result = _cli("index", str(root / "products.csv"), "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    return env, paths


def test_search_help_lists_the_options() -> None:
    result = _cli("search", "--help", env={})
    assert result.returncode == 0
    for option in (
        "--image",
        "--item",
        "--texts",
        "--rerank-k",
        "--no-rerank",
        "--caption",
        "--filter",
        "--sort",
        "--json",
    ):
        assert option in result.stdout


def test_text_search_with_filters_json(indexed) -> None:
    env, _ = indexed
    result = _cli(
        "search", "a red bag", "-k", "3", "-f", "category=shoes", "-f", "price<=40", "--json", env=env
    )
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert page["hits"] and len(page["hits"]) <= 3
    assert all(hit["category"] == "shoes" and float(hit["price"]) <= 40 for hit in page["hits"])
    assert page["reranked"] and all(hit["itm_score"] is not None for hit in page["hits"])


def test_filters_without_a_query_browse_in_the_sort_order(indexed) -> None:
    env, _ = indexed
    result = _cli("search", "-f", "category=shoes", "--sort", "price_desc", "--json", env=env)
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    # shoes are items 1, 3 and 5, priced 10, 30 and 50
    assert [hit["price"] for hit in page["hits"]] == ["50.00", "30.00", "10.00"]
    assert page["browse"] and page["sort"] == "price_desc" and page["total"] == {"value": 3, "exact": True}
    lines = _cli("search", "", "-f", "price<=20", "--sort", "price_asc", env=env)
    assert lines.returncode == 0, lines.stderr
    header, *rows = lines.stdout.splitlines()
    sku = header.split("\t").index("sku")
    assert [row.split("\t")[sku] for row in rows] == ["QW-000", "QW-100", "QW-200"]
    assert "3 results, mode browse, sort price_asc" in lines.stderr


def test_a_sorted_text_query_orders_its_results_by_price(indexed) -> None:
    env, _ = indexed
    result = _cli("search", "a red bag", "--sort", "price_asc", "--json", env=env)
    assert result.returncode == 0, result.stderr
    prices = [float(hit["price"]) for hit in json.loads(result.stdout)["hits"]]
    assert len(prices) == 6 and prices == sorted(prices)


def test_in_a_pipe_each_hit_is_one_tab_separated_line_with_a_short_path(indexed) -> None:
    env, paths = indexed
    result = _cli("search", "quokkaware", "--mode", "keyword", "--no-rerank", "--caption", env=env)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split("\t") == [
        "rank",
        "item_id",
        "itc_score",
        "itm_score",
        "exact",
        "source",
        "sku",
        "title",
        "caption",
    ]
    first = lines[0].split("\t")
    assert first[0] == "1" and first[6:8] == ["QW-400", "product 4"] and first[8]
    assert all(len(line.split("\t")) == 9 for line in lines)
    stated_root = Path(result.stderr.split("paths relative to ")[1].splitlines()[0])
    assert not Path(first[5]).is_absolute() and stated_root / first[5] == paths[4]
    assert "mode keyword" in result.stderr


def test_paths_under_the_working_directory_are_relative_to_it(indexed) -> None:
    env, paths = indexed
    result = subprocess.run(
        [sys.executable, "-m", "blipsearch", "search", "--image", str(paths[2]), "-k", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
        cwd=paths[2].parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split("\t")[5] == paths[2].name
    assert "paths relative to" not in result.stderr


def test_texts_lines_and_an_empty_page_keep_the_header(indexed) -> None:
    env, paths = indexed
    texts = _cli("search", "--image", str(paths[0]), "--texts", "-k", "2", env=env)
    header, *lines = texts.stdout.splitlines()
    assert header == "rank\titem_id\titc_score\titm_score\tkind\ttext" and len(lines) == 2
    empty = _cli("search", "x", "-f", "category=nothing-has-this", env=env)
    assert (
        empty.returncode == 0
        and empty.stdout == "rank\titem_id\titc_score\titm_score\texact\tsource\tsku\ttitle\n"
    )
    assert "No results" in empty.stderr


def test_image_and_item_queries(indexed) -> None:
    env, paths = indexed
    by_image = json.loads(_cli("search", "--image", str(paths[2]), "-k", "1", "--json", env=env).stdout)
    assert by_image["hits"][0]["source"].endswith(paths[2].name)
    item_id = by_image["hits"][0]["item_id"]
    similar = json.loads(_cli("search", "--item", str(item_id), "--json", env=env).stdout)
    assert item_id not in [hit["item_id"] for hit in similar["hits"]]
    texts = json.loads(_cli("search", "--item", str(item_id), "--texts", "-k", "2", "--json", env=env).stdout)
    assert texts["hits"] and {"kind", "text"} <= set(texts["hits"][0])


def test_describe_captions_and_lists_catalog_texts(indexed) -> None:
    env, paths = indexed
    result = _cli("describe", str(paths[0]), "-k", "2", "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["caption"] and len(data["texts"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search"], "exactly one of"),
        (["search", "x", "--item", "1"], "exactly one of"),
        (["search", "x", "-f", "colour=red"], "Unknown filter field"),
        (["search", "x", "-f", "category=x'; DROP TABLE items; --"], None),
        (["search", "x", "-k", "0"], "k must be between"),
        (["search", "x", "--sort", "cheapest"], "sort must be one of"),
        (["search", "--item", "1", "--sort", "newest"], "--sort applies to text queries"),
        (["search", "-f", "category=shoes", "--texts"], "--texts looks up texts"),
        (["search", "--image", "/nonexistent.jpg"], "nonexistent.jpg"),
    ],
)
def test_bad_searches_are_one_line_errors(indexed, args: list[str], message: str | None) -> None:
    env, _ = indexed
    result = _cli(*args, env=env)
    assert "Traceback" not in result.stderr
    if message is None:  # an injection attempt in a value is just a value that matches nothing
        assert result.returncode == 0 and "No results" in result.stderr
        assert _cli("index", "verify", env=env).returncode == 0
    else:
        assert result.returncode == 1 and message in result.stderr


def test_in_a_terminal_a_narrow_table_keeps_each_path_on_one_line(indexed) -> None:
    env, paths = indexed
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 70, 0, 0))
    terminal_env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    try:
        process = subprocess.run(
            [sys.executable, "-m", "blipsearch", "search", "--image", str(paths[0]), "-k", "6"],
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=300,
            env={**terminal_env, **env, "TERM": "xterm", "NO_COLOR": "1"},
        )
        os.close(follower)
        shown = b""
        while chunk := _read_available(leader):
            shown += chunk
    finally:
        os.close(leader)
    assert process.returncode == 0, process.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())
    assert "┃ source" in text and "paths relative to" in text
    rows = [line for line in text.splitlines() if line.startswith("│ ") and line.split("│")[1].strip()]
    table = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert len(rows) == 6 and all(len(line) <= 70 for line in table)
    assert any(line.startswith("paths relative to " + str(paths[0].parent)) for line in text.splitlines())
    cells = {row.split("│")[5].strip() for row in rows}
    names = {path.relative_to(paths[0].parent).as_posix() for path in paths}
    assert all(cell in names or cell.endswith("…") for cell in cells)


def _read_available(descriptor: int) -> bytes:
    try:
        return os.read(descriptor, 65536)
    except OSError:  # the terminal's other end closed: everything was read
        return b""
