"""Emoji records from a package's `emoji.json`, and the captions each record gets.

A record is one emoji in one style with the words that describe it (name, short names, category);
captions are several phrasings of those words, the first always the plain name with an article,
so that evaluation has one stable canonical text per emoji.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}


@dataclass(frozen=True)
class EmojiRecord:
    """One emoji in one style, with the words that describe it."""

    unified: str
    name: str
    """Lower-case, e.g. `red apple`."""
    short_names: tuple[str, ...]
    category: str
    subcategory: str
    style: str
    image: str
    """File name inside the package's `img/<style>/64/` folder."""
    sort_order: int = 0


def caption_words(text: str) -> str:
    """Lower-case words as a caption would spell them (`Food & Drink` -> `food and drink`)."""
    text = text.replace("&", " and ").replace("_", " ").replace("-", " ")
    return " ".join(text.lower().split())


def _name(entry: dict[str, Any]) -> str:
    name = entry.get("name")
    if isinstance(name, str) and name.strip():
        return caption_words(name)
    short = entry.get("short_name")
    return caption_words(short) if isinstance(short, str) else ""


def parse_records(
    entries: Iterable[dict[str, Any]],
    style: str,
    available: Iterable[str] | None = None,
    *,
    include_skin_tones: bool = False,
) -> list[EmojiRecord]:
    """emoji.json entries to records of one style, in the package's sort order.

    Skin-tone variants are skipped by default: they share a name with their base emoji, so as
    captions they only add near-duplicate positives that make retrieval metrics ambiguous. Entries
    without an image in this style (`has_img_<style>` false, or the PNG absent) are skipped.
    """
    present = set(available) if available is not None else None
    flag = f"has_img_{style}"
    records: list[EmojiRecord] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        unified = entry.get("unified")
        image = entry.get("image")
        name = _name(entry)
        if not isinstance(unified, str) or not isinstance(image, str) or not name:
            continue
        raw_short = entry.get("short_names") or []
        short_names = tuple(
            dict.fromkeys(caption_words(s) for s in raw_short if isinstance(s, str) and caption_words(s))
        )
        category = str(entry.get("category") or "")
        subcategory = str(entry.get("subcategory") or "")
        order = entry.get("sort_order")
        sort_order = order if isinstance(order, int) else 0
        variants: list[tuple[str, str, str, dict[str, Any]]] = [(unified, name, image, entry)]
        if include_skin_tones and isinstance(entry.get("skin_variations"), dict):
            for tones, variant in entry["skin_variations"].items():
                if not isinstance(variant, dict) or not isinstance(variant.get("image"), str):
                    continue
                words = ", ".join(SKIN_TONES.get(t, t.lower()) for t in str(tones).split("-"))
                variants.append(
                    (
                        str(variant.get("unified") or f"{unified}-{tones}"),
                        f"{name}: {words}",
                        variant["image"],
                        variant,
                    )
                )
        for code, label, file_name, source in variants:
            if source.get(flag) is False:
                continue
            if present is not None and file_name not in present:
                continue
            records.append(
                EmojiRecord(
                    unified=code.upper(),
                    name=label,
                    short_names=short_names,
                    category=category,
                    subcategory=subcategory,
                    style=style,
                    image=file_name,
                    sort_order=sort_order,
                )
            )
    records.sort(key=lambda r: (r.sort_order, r.unified))
    return records


# --------------------------------------------------------------------------- captions


def with_article(phrase: str) -> str:
    return f"an {phrase}" if phrase[:1] in "aeiou" else f"a {phrase}"


def captions_for(record: EmojiRecord, seed: int = 0) -> list[str]:
    """Several phrasings of one emoji, lower-case and de-duplicated.

    The first is always the plain name with an article (`a red apple`), so evaluation has a stable
    canonical text; the rest are shuffled by `seed` so that training sees no fixed order. Varying
    the wording teaches the model the concept rather than one template.
    """
    name = record.name
    category = caption_words(record.category)
    subcategory = caption_words(record.subcategory)
    phrases = [with_article(name), f"{name} emoji", f"an emoji of {with_article(name)}"]
    for short in record.short_names:
        phrases.append(f"{short} emoji")
        if category:
            phrases.append(f"{with_article(short)}, {with_article(category)}")
    if category:
        phrases.append(f"{with_article(name)}, {with_article(category)}")
    if subcategory and subcategory != category:
        phrases.append(f"{name} icon, {subcategory}")
    unique = list(dict.fromkeys(" ".join(p.lower().split()) for p in phrases))
    head, tail = unique[:1], unique[1:]
    random.Random(f"captions:{seed}:{record.unified}").shuffle(tail)
    return head + tail
