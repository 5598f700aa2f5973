"""Image-caption sets from BLIP's list JSON, Karpathy's `dataset_*.json`, or an `image<TAB>caption` TSV.

One reader serves `blipsearch eval` and `blipsearch train`, so a set measured is a set trained on
in the same format. Every malformed entry is refused with its file and position in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from blipsearch.errors import InvalidInputError

AnnotationFormat = Literal["auto", "karpathy", "tsv"]
FORMATS: tuple[str, ...] = ("auto", "karpathy", "tsv")


@dataclass(frozen=True)
class CaptionSet:
    """Images with one or more captions each: the unit both retrieval directions are measured on.

    `text_to_image[t]` is the position in `images` of the image caption `t` describes. Every image
    has at least one caption; images are kept in the order the annotation file first names them.
    """

    source: Path
    images: tuple[Path, ...]
    texts: tuple[str, ...]
    text_to_image: np.ndarray = field(repr=False)

    def first_images(self, count: int) -> CaptionSet:
        """The first `count` images with all of their captions (for quick runs with `--limit`)."""
        if count < 1:
            raise InvalidInputError("The image limit must be at least 1.")
        keep = np.flatnonzero(self.text_to_image < count)
        return CaptionSet(
            source=self.source,
            images=self.images[:count],
            texts=tuple(self.texts[t] for t in keep),
            text_to_image=self.text_to_image[keep],
        )


class _SetBuilder:
    """Collects (image, caption) pairs; an image named twice gets the captions of both mentions."""

    def __init__(self, source: Path, images_root: Path) -> None:
        self.source = source
        self.images_root = images_root
        self._position: dict[Path, int] = {}
        self._texts: list[str] = []
        self._text_to_image: list[int] = []

    def add(self, image: str, caption: str) -> None:
        path = self.images_root / image
        position = self._position.setdefault(path, len(self._position))
        self._texts.append(" ".join(caption.split()))
        self._text_to_image.append(position)

    @property
    def caption_count(self) -> int:
        return len(self._texts)

    def build(self) -> CaptionSet:
        if not self._texts:
            raise InvalidInputError(f"{self.source}: no image with a caption; nothing to evaluate.")
        return CaptionSet(
            source=self.source,
            images=tuple(self._position),
            texts=tuple(self._texts),
            text_to_image=np.asarray(self._text_to_image, dtype=np.int64),
        )


def load_caption_set(
    annotations: Path,
    *,
    images_root: Path | None = None,
    fmt: AnnotationFormat | str = "auto",
    split: str = "test",
) -> CaptionSet:
    """Read an evaluation set from a Karpathy-style JSON or an `image<TAB>caption` TSV file.

    Image paths are relative to `images_root` (default: the annotation file's folder). `split`
    picks images from the original Karpathy `dataset_*.json` layout; BLIP's per-split list files
    are already one split and ignore it. `fmt="auto"` goes by the suffix (.json; .tsv or .txt),
    else by the first character (`[` or `{` means JSON).
    """
    if fmt not in FORMATS:
        raise InvalidInputError(f"Unknown annotation format {fmt!r}; use one of {', '.join(FORMATS)}.")
    text = _read_text(annotations)
    builder = _SetBuilder(annotations, images_root if images_root is not None else annotations.parent)
    if _resolve_format(annotations, text, fmt) == "karpathy":
        _parse_karpathy(_parse_json(annotations, text), split, builder)
    else:
        _parse_tsv(text, builder)
    return builder.build()


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InvalidInputError(f"Annotation file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text (byte {exc.start}).") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot be read ({exc.strerror}).") from None


def _resolve_format(path: Path, text: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "karpathy"
    if suffix in (".tsv", ".txt"):
        return "tsv"
    return "karpathy" if text.lstrip()[:1] in ("[", "{") else "tsv"


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from None


def _parse_karpathy(data: Any, split: str, builder: _SetBuilder) -> None:
    """BLIP's list of `{"image", "caption"}` objects, or Karpathy's `{"images": [...]}` dataset."""
    if isinstance(data, list):
        for number, entry in enumerate(data, start=1):
            _add_blip_entry(entry, number, builder)
    elif isinstance(data, dict) and isinstance(data.get("images"), list):
        _add_karpathy_split(data["images"], split, builder)
    else:
        raise InvalidInputError(
            f"{builder.source}: expected a list of {{'image', 'caption'}} objects (BLIP) or an object "
            "with an 'images' list (Karpathy dataset_*.json)."
        )


def _add_blip_entry(entry: Any, number: int, builder: _SetBuilder) -> None:
    where = f"{builder.source}: entry #{number}"
    if not isinstance(entry, dict):
        raise InvalidInputError(f"{where} is not an object (got {type(entry).__name__}).")
    image = entry.get("image")
    if not isinstance(image, str) or not image.strip():
        raise InvalidInputError(f"{where} has no 'image' path.")
    captions = entry.get("caption")
    captions = [captions] if isinstance(captions, str) else captions
    if not isinstance(captions, list) or not captions:
        raise InvalidInputError(f"{where} has no 'caption' (a string or a list of strings).")
    for caption in captions:
        if not isinstance(caption, str) or not caption.strip():
            raise InvalidInputError(f"{where} has an empty or non-string caption.")
        builder.add(image, caption)


def _add_karpathy_split(images: list[Any], split: str, builder: _SetBuilder) -> None:
    splits_seen: set[str] = set()
    for number, entry in enumerate(images, start=1):
        where = f"{builder.source}: images[{number - 1}]"
        if not isinstance(entry, dict):
            raise InvalidInputError(f"{where} is not an object (got {type(entry).__name__}).")
        splits_seen.add(str(entry.get("split")))
        if entry.get("split") != split:
            continue
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            raise InvalidInputError(f"{where} has no 'filename'.")
        filepath = entry.get("filepath")
        image = f"{filepath}/{filename}" if isinstance(filepath, str) and filepath else filename
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise InvalidInputError(f"{where} has no 'sentences'.")
        for sentence in sentences:
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(raw, str) or not raw.strip():
                raise InvalidInputError(f"{where} has a sentence without a 'raw' text.")
            builder.add(image, raw)
    if builder.caption_count == 0:
        available = ", ".join(sorted(splits_seen)) or "none"
        raise InvalidInputError(
            f"{builder.source}: no image in split {split!r} (splits in the file: {available})."
        )


def _parse_tsv(text: str, builder: _SetBuilder) -> None:
    """One `image<TAB>caption` per line; blank lines and an `image<TAB>caption` header are skipped."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise InvalidInputError(f"{builder.source}, line {number}: no tab between image and caption.")
        image, caption = (part.strip() for part in line.split("\t", 1))
        if number == 1 and (image.lower(), caption.lower()) == ("image", "caption"):
            continue
        if not image:
            raise InvalidInputError(f"{builder.source}, line {number}: the image path is empty.")
        if not caption:
            raise InvalidInputError(f"{builder.source}, line {number}: the caption is empty.")
        builder.add(image, caption)
