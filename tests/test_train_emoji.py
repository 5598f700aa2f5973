"""`blipsearch data emoji` from a fake npm tarball: images, caption sets, catalog, licences.

No test reaches the network: the tarball is built here and placed in the cache, where
`fetch_package` finds it and only verifies its integrity.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from blipsearch.errors import InvalidInputError
from blipsearch.indexer.sources import ManifestSource, open_source
from blipsearch.search.caption_sets import load_caption_set
from blipsearch.train import emoji as em
from blipsearch.train.emoji_packages import EmojiPackage

from emojifake import fake_codepoint_package, fake_package, png


@pytest.fixture
def packages(tmp_path: Path) -> dict[str, EmojiPackage]:
    cache = tmp_path / "cache"
    return {"google": fake_package(cache, "google"), "twitter": fake_package(cache, "twitter")}


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
    tmp_path: Path, packages: dict[str, EmojiPackage]
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
    tmp_path: Path, packages: dict[str, EmojiPackage]
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


def test_a_tarball_that_fails_its_integrity_check_stops_the_build(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    wrong = replace(fake_package(cache), integrity="sha512-" + "A" * 86 + "==")
    with pytest.raises(InvalidInputError, match="integrity mismatch"):
        em.build_emoji_data(tmp_path / "out", cache=cache, styles=["google"], packages={"google": wrong})


def test_unknown_style_is_refused(tmp_path: Path, packages: dict[str, EmojiPackage]) -> None:
    with pytest.raises(InvalidInputError, match="apple"):
        em.build_emoji_data(tmp_path / "out", cache=tmp_path / "cache", styles=["apple"], packages=packages)


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
