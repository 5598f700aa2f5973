"""The annotation loaders: BLIP's list JSON, Karpathy's dataset JSON, TSV, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blipsearch.errors import InvalidInputError
from blipsearch.search.caption_sets import load_caption_set


def test_blip_list_json(tmp_path: Path) -> None:
    path = tmp_path / "coco_karpathy_test.json"
    path.write_text(
        json.dumps(
            [
                {"image": "val2014/a.jpg", "caption": ["a dog", "  a   brown dog "]},
                {"image": "val2014/b.jpg", "caption": "a cat"},
            ]
        )
    )
    dataset = load_caption_set(path)
    assert dataset.images == (tmp_path / "val2014/a.jpg", tmp_path / "val2014/b.jpg")
    assert dataset.texts == ("a dog", "a brown dog", "a cat")
    assert dataset.text_to_image.tolist() == [0, 0, 1]
    elsewhere = load_caption_set(path, images_root=Path("/data/coco"))
    assert elsewhere.images[1] == Path("/data/coco/val2014/b.jpg")


def test_karpathy_dataset_json_picks_the_split(tmp_path: Path) -> None:
    path = tmp_path / "dataset_flickr30k.json"
    images = [
        {"filename": "1.jpg", "split": "train", "sentences": [{"raw": "train one"}]},
        {"filename": "2.jpg", "split": "test", "sentences": [{"raw": "test two"}, {"raw": "test 2"}]},
        {"filepath": "val2014", "filename": "3.jpg", "split": "test", "sentences": [{"raw": "test three"}]},
        {"filename": "4.jpg", "split": "val", "sentences": [{"raw": "val four"}]},
    ]
    path.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    test = load_caption_set(path)
    assert test.images == (tmp_path / "2.jpg", tmp_path / "val2014" / "3.jpg")
    assert test.texts == ("test two", "test 2", "test three") and test.text_to_image.tolist() == [0, 0, 1]
    assert load_caption_set(path, split="val").texts == ("val four",)
    with pytest.raises(
        InvalidInputError, match=r"no image in split 'restval' \(splits in the file: test, train, val\)"
    ):
        load_caption_set(path, split="restval")


def test_tsv_with_repeated_images_header_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "set.tsv"
    path.write_text("image\tcaption\na.jpg\tfirst a\nsub/b.png\tonly b\n\na.jpg\tsecond a\twith a tab\n")
    dataset = load_caption_set(path)
    assert dataset.images == (tmp_path / "a.jpg", tmp_path / "sub" / "b.png")
    assert dataset.texts == ("first a", "only b", "second a with a tab")
    assert dataset.text_to_image.tolist() == [0, 1, 0]
    limited = dataset.first_images(1)
    assert limited.images == (tmp_path / "a.jpg",) and limited.texts == ("first a", "second a with a tab")


def test_format_auto_goes_by_content_for_other_suffixes(tmp_path: Path) -> None:
    as_json = tmp_path / "captions.annotations"
    as_json.write_text('[{"image": "x.jpg", "caption": "json"}]')
    as_tsv = tmp_path / "captions.list"
    as_tsv.write_text("x.jpg\ttsv\n")
    assert load_caption_set(as_json).texts == ("json",)
    assert load_caption_set(as_tsv).texts == ("tsv",)
    with pytest.raises(InvalidInputError, match="line 1: no tab"):
        load_caption_set(as_json, fmt="tsv")


@pytest.mark.parametrize(
    ("name", "content", "fmt", "message"),
    [
        ("missing.json", None, "auto", "Annotation file not found"),
        ("bad.json", '[{"image": "a.jpg",\n "caption": }]', "auto", r"not valid JSON \(line 2, column 13"),
        ("empty.json", "[]", "auto", "no image with a caption"),
        ("empty.tsv", "\n\n", "auto", "no image with a caption"),
        ("notab.tsv", "a.jpg\tfine\nb.jpg no tab here\n", "auto", r"notab.tsv, line 2: no tab"),
        ("nocaption.tsv", "a.jpg\tfine\n\nb.jpg\t  \n", "auto", r"line 3: the caption is empty"),
        ("noimage.tsv", "\tcaption\n", "auto", r"line 1: the image path is empty"),
        ("noimage.json", '[{"caption": "x"}]', "auto", r"entry #1 has no 'image'"),
        ("nocaption.json", '[{"image": "a.jpg", "caption": []}]', "auto", r"entry #1 has no 'caption'"),
        ("badcaption.json", '[{"image": "a.jpg", "caption": ["ok", 3]}]', "auto", "non-string caption"),
        ("scalar.json", "[1]", "auto", r"entry #1 is not an object \(got int\)"),
        ("object.json", '{"annotations": []}', "auto", "expected a list"),
        ("nosentences.json", '{"images": [{"filename": "a", "split": "test"}]}', "auto", "no 'sentences'"),
        ("latin1.tsv", b"a.jpg\tcaf\xe9\n", "auto", "not UTF-8"),
        ("any.tsv", "a.jpg\tx\n", "csv", "Unknown annotation format"),
    ],
)
def test_loader_errors_are_one_line(
    tmp_path: Path, name: str, content: str | bytes | None, fmt: str, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InvalidInputError, match=message) as caught:
        load_caption_set(path, fmt=fmt)
    assert "\n" not in str(caught.value)
