"""The pinned emoji packages: integrity checks, the cache, tarball names and code-point archives.

No test reaches the network: the tarball is built here and placed in the cache, where
`fetch_package` finds it and only verifies its integrity.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from blipsearch.errors import InvalidInputError
from blipsearch.train import emoji_packages as em

from emojifake import fake_codepoint_package, fake_package


def test_integrity_mismatch_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    package = fake_package(cache)
    assert em.fetch_package(package, cache, npm="no-such-npm") == cache / package.tarball_name
    wrong = replace(package, integrity="sha512-" + "A" * 86 + "==")
    with pytest.raises(InvalidInputError, match="integrity mismatch"):
        em.fetch_package(wrong, cache, npm="no-such-npm")


def test_missing_tarball_without_npm_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not cached"):
        em.fetch_package(em.PACKAGES["google"], tmp_path, npm="no-such-npm")


def test_codepoint_key_ignores_case_separator_and_fe0f() -> None:
    assert em.codepoint_key("1f600-fe0f") == em.codepoint_key("1F600") == "1F600"
    assert em.codepoint_key("1f44b_1f3fb") == "1F44B-1F3FB"
    assert em.codepoint_key("2764-FE0F-200D-1F525") == "2764-200D-1F525"


def test_codepoint_archive_reads_only_its_folder(tmp_path: Path) -> None:
    package = fake_codepoint_package(tmp_path / "cache")
    archive = em.EmojiArchive.read_codepoints(
        em.fetch_package(package, tmp_path / "cache"), package.images_at
    )
    assert archive.entries == [] and set(archive.images) == {"1F34E", "1F600"}
    with pytest.raises(InvalidInputError, match=r"no \.png images"):
        em.EmojiArchive.read_codepoints(tmp_path / "cache" / package.tarball_name, "package/elsewhere/")


def test_scoped_package_tarball_is_named_as_npm_pack_writes_it() -> None:
    assert em.PACKAGES["fluent-3d"].tarball_name == "lobehub-fluent-emoji-3d-1.1.0.tgz"
    assert em.PACKAGES["fluent-3d"].release == "lobehub-fluent-emoji-3d-1.1.0"  # one flat file name
    assert em.PACKAGES["fluent-3d"].spec == "@lobehub/fluent-emoji-3d@1.1.0"
    assert em.PACKAGES["emojione"].tarball_name == "emojione-2.2.7.tgz"


def test_the_blob_style_is_an_older_release_of_the_noto_package_not_a_copy_of_it() -> None:
    """Same npm name as today's Noto, so only the version keeps the two tarballs apart in the cache."""
    blob, noto = em.PACKAGES["google-blob"], em.PACKAGES["google"]
    assert blob.name == noto.name and blob.tarball_name != noto.tarball_name
    assert blob.integrity != noto.integrity and blob.images_at


@pytest.mark.parametrize("style", ["fluent-3d", "fluent-flat", "google-blob", "openmoji"])
def test_codepoint_archive_reads_the_styles_own_format(tmp_path: Path, style: str) -> None:
    package = fake_codepoint_package(tmp_path / "cache", style)
    archive = em.EmojiArchive.read_codepoints(
        em.fetch_package(package, tmp_path / "cache"), package.images_at, package.image_suffix
    )
    assert set(archive.images) == {"1F34E", "1F600"}
    other = ".webp" if package.image_suffix == ".png" else ".png"
    with pytest.raises(InvalidInputError, match=rf"no \{other} images"):
        em.EmojiArchive.read_codepoints(tmp_path / "cache" / package.tarball_name, package.images_at, other)
