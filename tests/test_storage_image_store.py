"""The image store: a local folder and an fsspec store (memory://) behind one interface, keys that
cannot escape, the crash-safe local write, and the litter listing."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from blipsearch.errors import ConfigError, InvalidInputError
from blipsearch.settings import Settings
from blipsearch.storage.image_store import (
    FsspecImageStore,
    ImageStore,
    LocalImageStore,
    StoredEntry,
    check_key,
    open_image_store,
    upload_key,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
DIGEST = hashlib.sha256(PNG).hexdigest()
VALID = f"{DIGEST[:2]}/{DIGEST[:32]}-0123abcd.png"


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ImageStore]:
    if request.param == "local":
        yield LocalImageStore(tmp_path / "uploads")
        return
    url = f"memory://image-store-test-{uuid.uuid4().hex}/some/prefix"
    memory = FsspecImageStore(url)
    yield memory
    if memory.fs.exists(memory.root):
        memory.fs.rm(memory.root, recursive=True)


def test_put_stores_the_bytes_under_a_fresh_key_that_reads_back(store: ImageStore) -> None:
    first = store.put(PNG, DIGEST, ".png")
    second = store.put(PNG, DIGEST, ".png")
    assert first != second, "identical bytes uploaded twice are two objects"
    for key in (first, second):
        assert (
            check_key(key) == key and key.startswith(f"{DIGEST[:2]}/{DIGEST[:32]}-") and key.endswith(".png")
        )
        assert store.read(key, max_bytes=len(PNG)) == PNG
        assert store.size(key) == len(PNG)
    assert sorted(entry.key for entry in store.entries()) == sorted([first, second])
    assert not any(entry.temporary for entry in store.entries())


def test_an_unknown_suffix_is_stored_as_img(store: ImageStore) -> None:
    key = store.put(PNG, DIGEST, "/../../etc.sh")
    assert key.endswith(".img") and store.read(key, max_bytes=len(PNG)) == PNG


def test_reads_over_the_limit_are_refused_and_missing_keys_are_not_found(store: ImageStore) -> None:
    key = store.put(PNG, DIGEST, ".png")
    with pytest.raises(InvalidInputError, match="limit"):
        store.read(key, max_bytes=len(PNG) - 1)
    with pytest.raises(FileNotFoundError):
        store.read(VALID, max_bytes=10_000)
    with pytest.raises(FileNotFoundError):
        store.size(VALID)


def test_delete_removes_and_a_second_delete_is_no_error(store: ImageStore) -> None:
    key = store.put(PNG, DIGEST, ".png")
    store.delete(key)
    store.delete(key)
    with pytest.raises(FileNotFoundError):
        store.read(key, max_bytes=10_000)
    assert list(store.entries()) == []


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "/etc/passwd",
        f"{VALID[:3]}../{VALID[3:]}",
        f"../{VALID}",
        f"/{VALID}",
        f"s3://bucket/{VALID}",
        f"file:///{VALID}",
        VALID.upper(),
        VALID.replace("/", "\\"),
        VALID + "/..",
        VALID + "\x00",
        VALID.replace(".png", ".html"),
        "",
    ],
)
def test_keys_not_in_the_one_written_shape_are_refused(store: ImageStore, key: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        store.read(key, max_bytes=10_000)
    assert "etc" not in str(refused.value) and "bucket" not in str(refused.value)
    with pytest.raises(InvalidInputError):
        store.delete(key)
    with pytest.raises(InvalidInputError):
        store.size(key)


def test_litter_with_a_path_outside_is_never_removed(store: ImageStore) -> None:
    for key in ("../outside.png", "/etc/passwd", "ab/../../x"):
        with pytest.raises(InvalidInputError):
            store.remove(StoredEntry(key, 0.0))


def test_the_local_store_writes_aside_then_renames_and_lists_temporary_litter(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "uploads")
    key = store.put(PNG, DIGEST, ".png")
    folder = tmp_path / "uploads" / key.split("/")[0]
    assert sorted(p.name for p in folder.iterdir()) == [key.split("/")[1]], "no temporary file is left"
    assert (tmp_path / "uploads" / key).read_bytes() == PNG
    (folder / ".half.png.tmp").write_bytes(b"half")
    os.utime(folder / ".half.png.tmp", (1000.0, 1000.0))
    entries = {entry.key: entry for entry in store.entries()}
    assert entries[f"{folder.name}/.half.png.tmp"].temporary
    assert entries[f"{folder.name}/.half.png.tmp"].mtime == 1000.0
    store.remove(entries[f"{folder.name}/.half.png.tmp"])
    assert [entry.key for entry in store.entries()] == [key]


def test_the_local_store_refuses_a_link_in_place_of_an_upload(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    store = LocalImageStore(tmp_path / "uploads")
    key = store.put(PNG, DIGEST, ".png")
    (tmp_path / "uploads" / key).unlink()
    (tmp_path / "uploads" / key).symlink_to(secret)
    with pytest.raises(InvalidInputError, match="link"):
        store.read(key, max_bytes=10_000)
    with pytest.raises(InvalidInputError, match="link"):
        store.size(key)
    assert [entry.key for entry in store.entries()] == [], "a link is never listed, so never removed through"


def test_the_local_store_refuses_a_linked_sub_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / VALID.split("/")[1]).write_bytes(PNG)
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / VALID.split("/")[0]).symlink_to(outside)
    with pytest.raises(InvalidInputError):
        LocalImageStore(tmp_path / "uploads").read(VALID, max_bytes=10_000)


def test_the_local_store_reads_only_regular_files(tmp_path: Path) -> None:
    (tmp_path / "uploads" / VALID).mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="regular"):
        LocalImageStore(tmp_path / "uploads").read(VALID, max_bytes=10_000)


def test_an_fsspec_store_lists_what_it_holds_with_ages(tmp_path: Path) -> None:
    store = FsspecImageStore(f"memory://image-store-ages-{uuid.uuid4().hex}")
    key = store.put(PNG, DIGEST, ".png")
    (entry,) = list(store.entries())
    assert entry.key == key and entry.mtime is not None and not entry.temporary
    store.fs.pipe_file(f"{store.root}/zz/stray-object", b"x")
    assert sorted(e.key for e in store.entries()) == sorted([key, "zz/stray-object"])


def test_the_source_names_its_key_and_old_upload_paths_keep_theirs() -> None:
    assert upload_key(f"upload:{VALID}") == VALID
    assert upload_key(f"/srv/old-data/uploads/{VALID}") == VALID, "an upload stored before the image store"
    for source in (
        "upload:../../etc/passwd",
        f"upload:/{VALID}",
        f"upload:s3://bucket/{VALID}",
        "/etc/passwd",
        f"/srv/photos/{VALID}",
        f"relative/uploads/{VALID}",
        f"/srv/uploads/{VALID}/..",
    ):
        assert upload_key(source) is None, source


def test_the_setting_picks_the_store(tmp_path: Path) -> None:
    def pick(location: str | None) -> ImageStore:
        return open_image_store(Settings(data_dir=tmp_path / "data", image_store=location))

    default = pick(None)
    assert isinstance(default, LocalImageStore) and not default.shared
    assert default.root == tmp_path / "data" / "uploads"
    folder = pick(str(tmp_path / "shared"))
    assert isinstance(folder, LocalImageStore) and folder.shared and folder.root == tmp_path / "shared"
    url = pick(f"file://{tmp_path / 'shared'}")
    assert isinstance(url, LocalImageStore) and url.shared and url.root == tmp_path / "shared"
    memory = pick("memory://bucket/prefix")
    assert (
        isinstance(memory, FsspecImageStore)
        and memory.shared
        and memory.describe() == "memory://bucket/prefix"
    )
    with pytest.raises(ConfigError, match="absolute"):
        pick("relative/folder")
    with pytest.raises(ConfigError) as unknown:
        pick("nosuchscheme://user:hunter2@host/prefix")
    assert "hunter2" not in str(unknown.value), "credentials in a URL never reach a message"
