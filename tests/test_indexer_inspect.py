"""The per-file decision: unchanged files are not read, same bytes are not decoded, bad files fail."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blipsearch.indexer.inspect import Action, InspectPolicy, inspect, reason_class
from blipsearch.indexer.sources import SourceRecord
from blipsearch.storage.schema import Item, ItemStatus

from imagesets import TEST_MAX_BYTES, TEST_MAX_PIXELS, write_broken_images, write_valid_images

FP = "blip-" + "a" * 32


class CountingPreprocess:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        self.calls += 1
        return torch.zeros(len(images), 3, 8, 8)


def _policy(preprocess: CountingPreprocess, **changes: object) -> InspectPolicy:
    base: dict[str, object] = {
        "fingerprint": FP,
        "max_bytes": TEST_MAX_BYTES,
        "max_pixels": TEST_MAX_PIXELS,
        "preprocess": preprocess,
    }
    return InspectPolicy(**{**base, **changes})  # type: ignore[arg-type]


def _item_for(path: Path, **changes: object) -> Item:
    data = path.read_bytes()
    stat = path.stat()
    fields: dict[str, object] = {
        "source": str(path),
        "status": ItemStatus.INDEXED.value,
        "content_hash": hashlib.sha256(data).hexdigest(),
        "size_bytes": stat.st_size,
        "file_mtime": stat.st_mtime,
        "embedding": np.zeros(4, np.float32).tobytes(),
        "model_fingerprint": FP,
    }
    fields.update(changes)
    return Item(**fields)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return write_valid_images(tmp_path, 1, seed=4)[0]


def test_new_file_is_decoded_and_preprocessed(photo: Path) -> None:
    preprocess = CountingPreprocess()
    result = inspect(SourceRecord(str(photo), photo), None, _policy(preprocess))
    assert result.action is Action.EMBED and result.pixels is not None and preprocess.calls == 1
    assert (
        result.facts is not None
        and result.facts.content_hash == hashlib.sha256(photo.read_bytes()).hexdigest()
    )
    assert result.facts.width and result.facts.height and result.facts.format


def test_same_size_and_mtime_is_not_even_read(photo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = _item_for(photo)
    import blipsearch.indexer.inspect as module

    monkeypatch.setattr(module, "read_image_file", lambda *a, **k: pytest.fail("file was read"))
    result = inspect(SourceRecord(str(photo), photo), existing, _policy(CountingPreprocess()))
    assert result.action is Action.UNCHANGED


def test_touched_but_identical_bytes_are_not_decoded(photo: Path) -> None:
    existing = _item_for(photo)
    os.utime(photo, (1_000_000_000, 1_000_000_000))
    preprocess = CountingPreprocess()
    result = inspect(SourceRecord(str(photo), photo), existing, _policy(preprocess))
    assert result.action is Action.UNCHANGED and preprocess.calls == 0
    assert result.facts is not None and result.facts.file_mtime == 1_000_000_000


def test_changed_bytes_or_another_model_embed_again(photo: Path, tmp_path: Path) -> None:
    changed = _item_for(photo, content_hash="0" * 64, size_bytes=1)
    assert (
        inspect(SourceRecord(str(photo), photo), changed, _policy(CountingPreprocess())).action
        is Action.EMBED
    )
    other_model = _item_for(photo, model_fingerprint="blip-" + "b" * 32)
    result = inspect(SourceRecord(str(photo), photo), other_model, _policy(CountingPreprocess()))
    assert result.action is Action.EMBED


def test_a_wanted_caption_forces_a_decode_and_keeps_the_image(photo: Path) -> None:
    existing = _item_for(photo)
    policy = _policy(CountingPreprocess(), caption_fingerprint="blip-" + "c" * 32)
    result = inspect(SourceRecord(str(photo), photo), existing, policy)
    assert result.action is Action.EMBED and result.needs_caption and result.image is not None


def test_every_broken_kind_fails_with_a_reason_and_never_raises(tmp_path: Path) -> None:
    broken = write_broken_images(tmp_path)
    for kind, path in broken.items():
        result = inspect(SourceRecord(str(path), path), None, _policy(CountingPreprocess()))
        assert result.action is Action.FAILED and result.error, kind
    missing = tmp_path / "gone.jpg"
    result = inspect(SourceRecord(str(missing), missing), None, _policy(CountingPreprocess()))
    assert result.action is Action.FAILED and "not found" in (result.error or "")


def test_an_unchanged_failure_is_retried_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    failed = _item_for(path, status=ItemStatus.FAILED.value, embedding=None, model_fingerprint=None)
    record = SourceRecord(str(path), path)
    assert inspect(record, failed, _policy(CountingPreprocess())).action is Action.UNCHANGED
    assert inspect(record, failed, _policy(CountingPreprocess(), retry_failed=True)).action is Action.FAILED


def test_reason_class_groups_failures_without_names_or_details() -> None:
    assert reason_class("a.jpg is truncated (image file is truncated).", "a.jpg") == "FILE is truncated."
    assert reason_class("b.png is empty.", "b.png") == "FILE is empty."
