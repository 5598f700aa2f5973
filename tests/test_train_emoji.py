"""Emoji demo data from a fake npm tarball: parsing, captions, images, caption sets, catalog, licences.

No test reaches the network: the tarball is built here and placed in the cache, where
`fetch_package` finds it and only verifies its integrity.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from blipsearch.indexer.sources import ManifestSource, open_source
from blipsearch.search.evaluation import load_caption_set
from blipsearch.train import emoji as em
from emojifake import ENTRIES, WITH_IMAGES, fake_codepoint_package, fake_package, png
from PIL import Image
from typer.testing import CliRunner

from blipsearch.errors import InvalidInputError


@pytest.fixture
def packages(tmp_path: Path) -> dict[str, em.EmojiPackage]:
    cache = tmp_path / "cache"
    return {"google": fake_package(cache, "google"), "twitter": fake_package(cache, "twitter")}


def test_parse_records_skips_skin_tones_and_missing_images(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    archive = em.EmojiArchive.read(tmp_path / package.tarball_name, "google")
    assert sorted(archive.images) == sorted(WITH_IMAGES)
    records = em.parse_records(archive.entries, "google", archive.images)
    assert [r.unified for r in records] == ["1F600", "1F34E", "1F44B"]  # sort order; no ghost
    apple = records[1]
    assert (apple.name, apple.short_names, apple.category, apple.subcategory, apple.image) == (
        "red apple",
        ("apple",),
        "Food & Drink",
        "food-fruit",
        "1f34e.png",
    )
    assert records[2].short_names == ("wave", "waving hand")
    with_tones = em.parse_records(archive.entries, "google", archive.images, include_skin_tones=True)
    tone = next(r for r in with_tones if r.unified == "1F44B-1F3FB")
    assert tone.name == "waving hand sign: light skin tone"
    flagged = [dict(ENTRIES[0], has_img_google=False)]
    assert em.parse_records(flagged, "google", None) == []


def test_captions_are_varied_lowercase_unique_and_seeded() -> None:
    record = em.parse_records(ENTRIES[:1], "google", None)[0]
    captions = em.captions_for(record, seed=0)
    assert captions[0] == "a red apple"
    assert {"red apple emoji", "an apple, a food and drink", "apple emoji"} <= set(captions)
    assert len(captions) == len(set(captions)) >= 5
    assert all(c == c.lower() for c in captions)
    assert em.captions_for(record, seed=0) == captions
    orders = {tuple(em.captions_for(record, seed=s)) for s in range(8)}
    assert len(orders) > 1 and all(o[0] == "a red apple" for o in orders)


def test_compose_is_rgb_and_augmentation_is_deterministic() -> None:
    data = png((250, 0, 0))
    plain = em.compose(data, 32)
    assert plain.mode == "RGB" and plain.size == (32, 32)
    assert plain.getpixel((0, 0)) == (255, 255, 255)  # transparent corner on white
    first = em.compose(data, 48, rng=random.Random(5))
    again = em.compose(data, 48, rng=random.Random(5))
    other = em.compose(data, 48, rng=random.Random(6))
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_build_writes_caption_sets_catalog_and_licences(
    tmp_path: Path, packages: dict[str, em.EmojiPackage]
) -> None:
    out = tmp_path / "out"
    summary = em.build_emoji_data(
        out, cache=tmp_path / "cache", size=40, augment=2, seed=3, catalog=True, packages=packages
    )
    assert [(s.style, s.available, s.written, s.images) for s in summary.styles] == [
        ("google", 3, 3, 9),
        ("twitter", 3, 3, 9),
    ]
    for style in ("google", "twitter"):
        caption_set = load_caption_set(out / f"{style}.json")
        assert len(caption_set.images) == 9
        assert all(path.is_file() for path in caption_set.images)
        assert "a red apple" in caption_set.texts
        pairs = load_caption_set(out / f"{style}.tsv")
        assert (pairs.images, pairs.texts) == (caption_set.images, caption_set.texts)
        with Image.open(caption_set.images[0]) as image:
            assert image.size == (40, 40) and image.mode == "RGB"

    source = open_source(out / "catalog.csv")
    assert isinstance(source, ManifestSource)
    records = list(source.records())
    assert source.issues.rejected_rows == []
    assert len(records) == summary.catalog_rows == 6  # plain images only, both styles
    apple = next(r for r in records if r.metadata and r.metadata.external_id == "NOTO-1F34E")
    assert apple.metadata is not None
    assert apple.metadata.brand == "Noto" and apple.metadata.category == "Food & Drink"
    assert apple.metadata.price is not None and apple.metadata.price > 0
    assert set(apple.metadata.tags) == {"food fruit", "apple"}
    assert apple.path.is_file()

    licences = (out / "LICENSES.txt").read_text()
    assert "Apache-2.0" in licences
    assert "Twemoji by Twitter, Inc and other contributors, CC-BY 4.0" in licences


def test_same_seed_same_bytes_and_limit_keeps_images(
    tmp_path: Path, packages: dict[str, em.EmojiPackage]
) -> None:
    cache = tmp_path / "cache"
    em.build_emoji_data(tmp_path / "a", cache=cache, styles=["google"], augment=1, seed=7, packages=packages)
    em.build_emoji_data(tmp_path / "b", cache=cache, styles=["google"], augment=1, seed=7, packages=packages)
    em.build_emoji_data(
        tmp_path / "c", cache=cache, styles=["google"], augment=1, seed=7, limit=1, packages=packages
    )
    em.build_emoji_data(tmp_path / "d", cache=cache, styles=["google"], augment=1, seed=8, packages=packages)
    aug = Path("images/google/1f600_aug1.png")
    a, b, c, d = ((tmp_path / x / aug).read_bytes() for x in "abcd")
    assert a == b == c
    assert a != d
    assert (tmp_path / "a" / "google.json").read_text() == (tmp_path / "b" / "google.json").read_text()
    limited = json.loads((tmp_path / "c" / "google.json").read_text())
    assert [e["image"] for e in limited] == ["images/google/1f600.png", "images/google/1f600_aug1.png"]


def test_integrity_mismatch_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    package = fake_package(cache)
    assert em.fetch_package(package, cache, npm="no-such-npm") == cache / package.tarball_name
    wrong = replace(package, integrity="sha512-" + "A" * 86 + "==")
    with pytest.raises(InvalidInputError, match="integrity mismatch"):
        em.fetch_package(wrong, cache, npm="no-such-npm")
    with pytest.raises(InvalidInputError, match="integrity mismatch"):
        em.build_emoji_data(tmp_path / "out", cache=cache, styles=["google"], packages={"google": wrong})


def test_missing_tarball_without_npm_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not cached"):
        em.fetch_package(em.PACKAGES["google"], tmp_path, npm="no-such-npm")


def test_unknown_style_is_refused(tmp_path: Path, packages: dict[str, em.EmojiPackage]) -> None:
    with pytest.raises(InvalidInputError, match="apple"):
        em.build_emoji_data(tmp_path / "out", cache=tmp_path / "cache", styles=["apple"], packages=packages)


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


def test_codepoint_sets_only_train_and_are_refused_as_demo_data(tmp_path: Path) -> None:
    """EmojiOne has no names in the datasource shape: building caption sets from it must say so."""
    packages = {
        "google": fake_package(tmp_path / "cache"),
        "emojione": fake_codepoint_package(tmp_path / "cache"),
    }
    with pytest.raises(InvalidInputError, match="only train"):
        em.build_emoji_data(
            tmp_path / "out", cache=tmp_path / "cache", styles=["emojione"], packages=packages
        )


def test_cli_data_emoji(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from blipsearch.cli import app

    cache = tmp_path / "cache"
    monkeypatch.setattr(
        em, "PACKAGES", {"google": fake_package(cache), "twitter": fake_package(cache, "twitter")}
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["data", "emoji", str(out), "--cache", str(cache), "--styles", "twitter", "--catalog", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["styles"][0]["brand"] == "Twemoji" and summary["catalog_rows"] == 3
    assert (out / "twitter.json").is_file() and not (out / "google.json").exists()
