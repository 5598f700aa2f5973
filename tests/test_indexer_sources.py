from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.indexer.sources import FolderSource, ManifestSource, open_source
from blipsearch.paths import IngestRoots


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (1, 2, 3)).save(path)
    return path


def test_folder_walk_is_recursive_sorted_and_filters_suffixes(tmp_path: Path) -> None:
    _png(tmp_path / "b.png")
    _png(tmp_path / "a" / "z.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    source = FolderSource(tmp_path)
    sources = [record.source for record in source.records()]
    assert sources == [str(tmp_path / "a" / "z.PNG"), str(tmp_path / "b.png")]
    assert source.issues.ignored_files == 1


def test_hidden_files_and_folders_are_skipped_unless_asked(tmp_path: Path) -> None:
    _png(tmp_path / ".thumbs" / "t.png")
    _png(tmp_path / "._mac.png")
    _png(tmp_path / "visible.png")
    default = FolderSource(tmp_path)
    assert [Path(r.source).name for r in default.records()] == ["visible.png"]
    assert default.issues.skipped_hidden == 2
    everything = FolderSource(tmp_path, include_hidden=True)
    assert len(list(everything.records())) == 3


def test_symlinks_files_kept_folders_followed_only_on_request_and_cycles_are_safe(tmp_path: Path) -> None:
    real = _png(tmp_path / "photos" / "real.png")
    (tmp_path / "photos" / "alias.png").symlink_to(real)
    (tmp_path / "photos" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "photos" / "loop").symlink_to(tmp_path / "photos", target_is_directory=True)
    other = _png(tmp_path / "elsewhere" / "far.png")
    (tmp_path / "photos" / "linked-folder").symlink_to(other.parent, target_is_directory=True)

    plain = FolderSource(tmp_path / "photos")
    sources = [r.source for r in plain.records()]
    assert sources == [str(real)]  # the alias is the same file: one record, under its real path
    assert plain.issues.skipped_symlinks == 4  # the alias, the dangling file, two folder links

    followed = [r.source for r in FolderSource(tmp_path / "photos", follow_symlinks=True).records()]
    assert sorted(followed) == sorted([str(real), str(other)])


def test_csv_manifest_maps_columns_and_keeps_extras_as_attributes(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "1.png")
    manifest = tmp_path / "catalog.csv"
    manifest.write_text(
        "image,sku,title,description,category,brand,price,currency,tags,color\n"
        "img/1.png,SKU-1,  Red   shoe ,A shoe,shoes,Acme,49.5,eur,summer|Sale,red\n",
        encoding="utf-8",
    )
    (record,) = list(ManifestSource(manifest).records())
    assert record.source == str(tmp_path / "img" / "1.png")
    meta = record.metadata
    assert meta is not None
    assert (meta.external_id, meta.title, meta.category, meta.brand) == ("SKU-1", "Red shoe", "shoes", "Acme")
    assert meta.price == Decimal("49.50") and meta.currency == "EUR"
    assert meta.tags == ("sale", "summer")
    assert meta.attributes == {"color": "red"}


def test_jsonl_manifest_with_lists_and_objects(tmp_path: Path) -> None:
    image = _png(tmp_path / "x.png")
    manifest = tmp_path / "catalog.jsonl"
    rows = [
        {
            "path": str(image),
            "id": 7,
            "name": "Lamp",
            "price": 10,
            "tags": ["Home", "light"],
            "attributes": {"w": 3},
        },
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (record,) = list(ManifestSource(manifest).records())
    assert record.metadata is not None
    assert record.metadata.external_id == "7" and record.metadata.title == "Lamp"
    assert record.metadata.tags == ("home", "light") and record.metadata.attributes == {"w": 3}


def test_bad_manifest_rows_are_reported_with_line_numbers_and_skipped(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "image,sku,price\n"
        "a.png,A,1\n"
        ",B,2\n"
        "b.png,C,cheap\n"
        "b.png,A,3\n"
        "http://example.com/x.png,D,1\n"
        "a.png,E,1\n"
    )
    source = ManifestSource(manifest)
    records = list(source.records())
    assert [r.metadata.external_id for r in records if r.metadata] == ["A"]
    problems = "\n".join(source.issues.rejected_rows)
    assert "line 3: no image path" in problems
    assert "line 4: price 'cheap' is not a number" in problems
    assert "line 5: id 'A' is already on line 2" in problems
    assert "line 6:" in problems and "URL" in problems
    assert "line 7:" in problems and "already on line 2" in problems


def test_manifest_errors_for_unusable_files(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(InvalidInputError, match=r"\.csv, \.jsonl"):
        ManifestSource(tmp_path / "m.txt")
    (tmp_path / "m.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InvalidInputError, match="UTF-8"):
        list(ManifestSource(tmp_path / "m.csv").records())
    with pytest.raises(InvalidInputError, match="does not exist"):
        open_source(tmp_path / "nope")


def test_open_source_picks_folder_or_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text("")
    assert isinstance(open_source(tmp_path), FolderSource)
    assert isinstance(open_source(tmp_path / "m.jsonl"), ManifestSource)
    assert os.path.isabs(open_source(tmp_path).origin)


def test_records_are_keyed_by_the_canonical_path(tmp_path: Path) -> None:
    """The same file reached by two paths is one record, under its resolved path."""
    real = _png(tmp_path / "photos" / "a.png")
    (tmp_path / "via").symlink_to(tmp_path / "photos", target_is_directory=True)
    walked = FolderSource(tmp_path / "via")
    assert [r.source for r in walked.records()] == [str(real)]
    assert walked.origin == str(tmp_path / "photos")

    manifest = tmp_path / "photos" / "m.csv"
    twice = f"/proc/self/root{real}" if Path("/proc/self/root").is_dir() else str(tmp_path / "via" / "a.png")
    manifest.write_text(f"image,sku\na.png,A\n{twice},B\n")
    source = ManifestSource(manifest)
    assert [r.source for r in source.records()] == [str(real)]
    assert (
        "line 3: image" in source.issues.rejected_rows[0]
        and "already on line 2" in source.issues.rejected_rows[0]
    )


def test_roots_refuse_links_that_leave_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    inside = _png(root / "photos" / "in.png")
    outside = _png(tmp_path / "private" / "secret.png")
    (root / "photos" / "pw.png").symlink_to("/etc/passwd")
    (root / "photos" / "secret.png").symlink_to(outside)
    (root / "photos" / "alias.png").symlink_to(inside)
    (root / "photos" / "private").symlink_to(outside.parent, target_is_directory=True)
    roots = IngestRoots([root])

    source = FolderSource(root / "photos", follow_symlinks=True, roots=roots)
    assert [r.source for r in source.records()] == [str(inside)]
    refused = source.issues.rejected_rows
    assert len(refused) == 3 and all("outside the server's ingest roots" in row for row in refused)
    assert {Path(row.split(":")[0]).name for row in refused} == {"pw.png", "secret.png", "private"}
    assert not any("/etc" in row or "private/secret" in row for row in refused)  # no link targets shown

    free = FolderSource(root / "photos", follow_symlinks=True)  # the CLI: no roots, links followed
    assert sorted(r.source for r in free.records()) == sorted([str(inside), str(outside), "/etc/passwd"])


def test_roots_refuse_manifest_rows_outside_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    inside = _png(root / "shop" / "a.png")
    _png(tmp_path / "b.png")
    manifest = root / "shop" / "m.jsonl"
    rows = [
        {"image": "a.png", "sku": "A"},
        {"image": "/etc/passwd", "sku": "B"},
        {"image": "../../etc/passwd", "sku": "C"},
        {"image": "../../b.png", "sku": "D"},
        {"image": "missing.png", "sku": "E"},
        {"image": "a\u0000.png", "sku": "F"},
        {"image": "x" * 300 + ".png", "sku": "G"},
    ]
    manifest.write_text("\n".join(json.dumps(row) for row in rows))

    source = ManifestSource(manifest, roots=IngestRoots([root]))
    records = list(source.records())
    assert [r.source for r in records] == [str(inside), str(root / "shop" / "missing.png")]
    problems = source.issues.rejected_rows
    assert [problem.split(":")[0] for problem in problems] == [f"m.jsonl line {n}" for n in (2, 3, 4, 6, 7)]
    assert all("outside the server's ingest roots" in problem for problem in problems[:3])
    assert "NUL" in problems[3] and "255 bytes" in problems[4]
    assert not any("/etc/passwd" in problem for problem in problems)

    with pytest.raises(InvalidInputError, match="outside the server's ingest roots"):
        open_source(manifest, roots=IngestRoots([tmp_path / "elsewhere"]))
    with pytest.raises(InvalidInputError, match="outside the server's ingest roots"):
        open_source(root / "shop" / ".." / "..", roots=IngestRoots([root]))
    with pytest.raises(InvalidInputError, match="outside the server's ingest roots"):
        open_source(root, roots=IngestRoots([]))
