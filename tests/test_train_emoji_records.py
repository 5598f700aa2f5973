"""Emoji records and captions from a fake `emoji.json`: skin tones, missing images, phrasings."""

from __future__ import annotations

from pathlib import Path

from blipsearch.train import emoji_records
from blipsearch.train.emoji_packages import EmojiArchive

from emojifake import ENTRIES, WITH_IMAGES, fake_package


def test_parse_records_skips_skin_tones_and_missing_images(tmp_path: Path) -> None:
    package = fake_package(tmp_path)
    archive = EmojiArchive.read(tmp_path / package.tarball_name, "google")
    assert sorted(archive.images) == sorted(WITH_IMAGES)
    records = emoji_records.parse_records(archive.entries, "google", archive.images)
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
    with_tones = emoji_records.parse_records(
        archive.entries, "google", archive.images, include_skin_tones=True
    )
    tone = next(r for r in with_tones if r.unified == "1F44B-1F3FB")
    assert tone.name == "waving hand sign: light skin tone"
    flagged = [dict(ENTRIES[0], has_img_google=False)]
    assert emoji_records.parse_records(flagged, "google", None) == []


def test_captions_are_varied_lowercase_unique_and_seeded() -> None:
    record = emoji_records.parse_records(ENTRIES[:1], "google", None)[0]
    captions = emoji_records.captions_for(record, seed=0)
    assert captions[0] == "a red apple"
    assert {"red apple emoji", "an apple, a food and drink", "apple emoji"} <= set(captions)
    assert len(captions) == len(set(captions)) >= 5
    assert all(c == c.lower() for c in captions)
    assert emoji_records.captions_for(record, seed=0) == captions
    orders = {tuple(emoji_records.captions_for(record, seed=s)) for s in range(8)}
    assert len(orders) > 1 and all(o[0] == "a red apple" for o in orders)
