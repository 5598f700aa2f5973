"""Reading an item's picture by its source: uploads through the image store (old local paths
included), ingested files from disk, and nothing else."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import pytest

from blipsearch.errors import InvalidInputError
from blipsearch.settings import Settings
from blipsearch.storage.image_store import UPLOAD_ORIGIN, open_image_store
from blipsearch.storage.item_images import ItemImages
from blipsearch.storage.schema import Item

from imagesets import noise_png

_png = functools.partial(noise_png, size=(24, 24))


def _settings(tmp_path: Path, shared: bool) -> Settings:
    return Settings(data_dir=tmp_path / "data", image_store=str(tmp_path / "shared") if shared else None)


def _upload(item_id: int, source: str, origin: str | None = UPLOAD_ORIGIN) -> Item:
    return Item(id=item_id, source=source, origin=origin, status="indexed")


@pytest.mark.parametrize("shared", [False, True], ids=["default", "configured"])
def test_an_upload_is_read_from_the_store_its_source_names(tmp_path: Path, shared: bool) -> None:
    settings = _settings(tmp_path, shared)
    data = _png(1)
    key = open_image_store(settings).put(data, hashlib.sha256(data).hexdigest(), ".png")
    images = ItemImages(settings)
    item = _upload(1, f"upload:{key}")
    assert images.read(item, max_bytes=len(data)) == data
    picture = images.open(item, max_bytes=len(data), max_pixels=10_000)
    assert picture.size == (24, 24) and picture.mode == "RGB"
    where = tmp_path / ("shared" if shared else "data/uploads") / key
    assert where.read_bytes() == data
    images.delete(item)
    assert not where.exists()
    with pytest.raises(FileNotFoundError):
        images.read(item, max_bytes=len(data))


def test_an_old_upload_path_is_read_from_this_servers_uploads_then_from_the_store(tmp_path: Path) -> None:
    settings = _settings(tmp_path, shared=True)
    data = _png(2)
    digest = hashlib.sha256(data).hexdigest()
    key = f"{digest[:2]}/{digest[:32]}-00c0ffee.png"
    old = _upload(7, f"/srv/somewhere-else/uploads/{key}")  # the data directory was moved since
    local = tmp_path / "data" / "uploads" / key
    local.parent.mkdir(parents=True)
    local.write_bytes(data)
    images = ItemImages(settings)
    assert images.read(old, max_bytes=len(data)) == data

    copied = tmp_path / "shared" / key
    copied.parent.mkdir(parents=True)
    copied.write_bytes(data)
    local.unlink()
    assert images.read(old, max_bytes=len(data)) == data, "copied into the shared store"
    local.write_bytes(data)
    images.delete(old)
    assert not local.exists() and not copied.exists()


def test_an_ingested_item_is_read_from_its_file(tmp_path: Path) -> None:
    data = _png(3)
    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    photo.write_bytes(data)
    images = ItemImages(_settings(tmp_path, shared=True))
    item = _upload(3, str(photo), origin=str(photo.parent))
    assert images.read(item, max_bytes=len(data)) == data
    images.delete(item)
    assert photo.exists(), "deleting an item never removes an ingested file"


@pytest.mark.parametrize(
    ("source", "origin"),
    [
        ("upload:../../etc/passwd", UPLOAD_ORIGIN),
        ("upload:/etc/passwd", UPLOAD_ORIGIN),
        ("upload:s3://bucket/ab/cd.png", UPLOAD_ORIGIN),
        ("/etc/passwd", UPLOAD_ORIGIN),
        ("relative/uploads/ab/x.png", UPLOAD_ORIGIN),
        ("upload:ab/" + "a" * 32 + "-00000000.png", "/srv/photos"),
    ],
)
def test_sources_that_would_reach_outside_the_store_are_refused(
    tmp_path: Path, source: str, origin: str
) -> None:
    secret = tmp_path / "data" / "uploads" / "ab" / ("a" * 32 + "-00000000.png")
    secret.parent.mkdir(parents=True)
    secret.write_bytes(_png(4))
    images = ItemImages(_settings(tmp_path, shared=False))
    with pytest.raises(InvalidInputError) as refused:
        images.read(_upload(9, source, origin), max_bytes=1_000_000)
    assert "passwd" not in str(refused.value)
    images.delete(_upload(9, source, origin))
    assert secret.exists()


def test_an_ingested_file_is_read_only_while_it_is_the_one_indexed(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    photo = root / "a.png"
    photo.write_bytes(_png(5))
    outside = tmp_path / "private.png"
    outside.write_bytes(_png(6))
    settings = Settings(data_dir=tmp_path / "data", ingest_roots=[root])
    images = ItemImages(settings)
    item = _upload(5, str(photo), origin=str(root))
    assert images.read(item, max_bytes=1_000_000) == photo.read_bytes()

    photo.unlink()
    photo.symlink_to(outside)  # swapped since indexing
    with pytest.raises(InvalidInputError, match="link"):
        images.read(item, max_bytes=1_000_000)
    with pytest.raises(InvalidInputError, match="outside the ingest roots"):
        images.read(_upload(6, str(outside), origin=str(root)), max_bytes=1_000_000)
    with pytest.raises(InvalidInputError, match="absolute"):
        images.read(_upload(7, "photos/a.png", origin=str(root)), max_bytes=1_000_000)
    photo.unlink()
    with pytest.raises(InvalidInputError, match="No such file"):
        images.open(item, max_bytes=1_000_000, max_pixels=10_000)
