"""How search results print: short paths, one line per hit in a pipe, a table that never breaks a path."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from blipsearch.cli.output import shorten_paths, write_lines
from blipsearch.cli.search import hits_table


def test_paths_under_the_working_directory_are_relative_to_it(tmp_path: Path) -> None:
    sources = [str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.png"), "https://example.com/c.png"]
    shortened, root = shorten_paths(sources, cwd=tmp_path)
    assert shortened == ["a.png", "sub/b.png", "https://example.com/c.png"] and root is None


def test_paths_elsewhere_are_relative_to_their_common_folder(tmp_path: Path) -> None:
    sources = [str(tmp_path / "shop" / "x" / "a.png"), str(tmp_path / "shop" / "y" / "b.png")]
    shortened, root = shorten_paths(sources, cwd=tmp_path / "elsewhere")
    assert shortened == ["x/a.png", "y/b.png"] and root == str(tmp_path / "shop")


def test_paths_with_only_the_filesystem_root_in_common_stay_absolute() -> None:
    sources = ["/srv/a.png", "/opt/b.png"]
    assert shorten_paths(sources, cwd=Path("/home")) == (sources, None)


def test_a_field_with_tabs_or_line_breaks_stays_on_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    write_lines(["rank", "title"], [[1, "two\twords\non two lines"], [2, None]])
    assert capsys.readouterr().out == "rank\ttitle\n1\ttwo words on two lines\n2\t\n"


@pytest.mark.parametrize("width", [60, 80, 120])
def test_a_narrow_terminal_table_never_breaks_a_path_or_a_score(width: int) -> None:
    paths = ["images/google/1f34e.png", "images/noto-emoji/a-rather-long-folder-name/1f34f-green-apple.png"]
    hits = [
        {
            "rank": rank,
            "item_id": 1000 + rank,
            "itc_score": 0.4543,
            "itm_score": 0.3572,
            "sku": f"NOTO-{rank}",
            "title": "red apple, a shiny fruit often given to teachers",
            "brand": "Noto",
            "price": "3.00",
        }
        for rank in (1, 2)
    ]
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    console.print(hits_table(hits, paths, texts=False, caption=False, width=width))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= width for line in lines)
    rows = [line for line in lines if "1001" in line or "1002" in line]
    assert len(rows) == 2 and all("0.454" in row and "0.357" in row for row in rows)
    for path, row in zip(paths, rows, strict=True):
        cell = row.split("│")[5].strip()
        assert cell == path or (cell.endswith("…") and path.startswith(cell[:-1]) and len(cell) >= 12)
    if width >= 120:
        assert all(path in out.getvalue() for path in paths)
