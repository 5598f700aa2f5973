"""Measure a demo model the way search uses it: from its saved files, through the inference classes.

Retrieval figures come from `blipsearch.search.evaluation.evaluate` (ITC-only and ITM re-ranked
shortlists, the service's rule) on each style's emoji with one canonical caption each
("a red apple"), so chance is one in the number of emoji. Captions come from `Captioner.caption`; a caption
"names the right emoji" when the emoji's name, or one of its short names, appears in it as whole
words. The paraphrase hit rate (`PARAPHRASE_QUERIES`, top 5 by ITC) measures queries in a person's
own words, which no training caption has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from blipsearch.demo import rerank_itc_weight_of
from blipsearch.models.captioner import Captioner, CaptionOptions
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.caption_sets import load_caption_set
from blipsearch.search.evaluation import evaluate
from blipsearch.settings import Settings
from blipsearch.train.emoji_classes import EmojiClasses, flatten_on_white
from blipsearch.train.paraphrases import PARAPHRASE_QUERIES, paraphrase_hit_rate

RERANK_DEPTHS = (8,)
CAPTION_OPTIONS = CaptionOptions(strategy="beam", num_beams=3, min_new_tokens=1, max_new_tokens=20)


def write_style_set(classes: EmojiClasses, style: str, folder: Path) -> Path:
    """Each emoji of `style` as a PNG on white, and a TSV of its canonical caption."""
    images = folder / style
    images.mkdir(parents=True, exist_ok=True)
    by_code = {r.unified for r in classes.records[style]}
    lines = []
    pixels = classes.pixels[style]
    for index, code in enumerate(classes.unified):
        if code not in by_code:
            continue
        path = images / f"{code.lower()}.png"
        if not path.exists():
            rgb = flatten_on_white(pixels[index : index + 1])[0]
            array = (rgb.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
            Image.fromarray(array, "RGB").save(path)
        lines.append(f"{style}/{path.name}\t{classes.clean_captions[index][0]}")
    tsv = folder / f"{style}.tsv"
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tsv


def names_emoji(caption: str, names: Sequence[str]) -> bool:
    words = f" {' '.join(re.findall(r'[a-z0-9]+', caption.lower()))} "
    for name in names:
        wanted = " ".join(re.findall(r"[a-z0-9]+", name.lower()))
        if wanted and f" {wanted} " in words:
            return True
    return False


def style_images(
    classes: EmojiClasses, style: str, folder: Path, limit: int | None = None
) -> tuple[list[int], list[Image.Image]]:
    """The class indices `style` has an image for, and those images as `write_style_set` wrote them."""
    drawn = {r.unified for r in classes.records[style]}
    chosen = [i for i, code in enumerate(classes.unified) if code in drawn][:limit]
    images = []
    for index in chosen:
        with Image.open(folder / style / f"{classes.unified[index].lower()}.png") as opened:
            images.append(opened.convert("RGB"))
    return chosen, images


def paraphrase_rate(retrieval: RetrievalModel, classes: EmojiClasses, style: str, folder: Path) -> float:
    """Share of the paraphrase queries with an accepted emoji in their ITC top 5 among `style`'s images."""
    chosen, images = style_images(classes, style, folder)
    vectors = retrieval.embed_images(images).vectors
    queries = retrieval.embed_texts([query for query, _ in PARAPHRASE_QUERIES])
    return paraphrase_hit_rate(queries, vectors, [classes.names[i].lower() for i in chosen])


def caption_accuracy(
    captioner: Captioner,
    classes: EmojiClasses,
    style: str,
    folder: Path,
    prompt: str,
    limit: int | None = None,
) -> dict[str, Any]:
    by_code = {r.unified: r for r in classes.records[style]}
    chosen, images = style_images(classes, style, folder, limit)
    captions = captioner.caption(images, prompt=prompt.strip(), options=CAPTION_OPTIONS)
    right = 0
    examples: list[dict[str, Any]] = []
    for index, caption in zip(chosen, captions, strict=True):
        record = by_code[classes.unified[index]]
        ok = names_emoji(caption, [record.name, *record.short_names])
        right += ok
        if len(examples) < 12:
            examples.append({"emoji": record.name, "caption": caption, "names_it": ok})
    return {"images": len(chosen), "names_right_emoji": right / max(1, len(chosen)), "examples": examples}


def evaluate_demo_model(
    model_dir: Path, classes: EmojiClasses, styles: Sequence[str], prompt: str, *, captions: bool = True
) -> dict[str, Any]:
    """Recall@K per style (ITC and ITM re-ranked) and caption accuracy, written to metrics.json."""
    folder = model_dir / "eval-images"
    settings = Settings(device="cpu")
    itc_weight = rerank_itc_weight_of(model_dir)
    retrieval = RetrievalModel.load(str(model_dir / "retrieval"), settings)
    result: dict[str, Any] = {"rerank_itc_weight": itc_weight, "styles": {}}
    captioner = Captioner.load(str(model_dir / "caption"), settings) if captions else None
    for style in styles:
        tsv = write_style_set(classes, style, folder)
        dataset = load_caption_set(tsv, images_root=folder)
        depths = sorted({min(k, len(dataset.images)) for k in RERANK_DEPTHS})
        measured = evaluate(
            retrieval, dataset, rerank_k=depths, image_batch=256, itc_weight=(0.0, itc_weight)
        )
        entry: dict[str, Any] = {"images": measured.images, "texts": measured.texts}
        entry["paraphrase_top5"] = paraphrase_rate(retrieval, classes, style, folder)
        for mode in measured.modes:
            entry[mode.mode] = mode.as_dict()
        if captioner is not None:
            entry["captions"] = caption_accuracy(captioner, classes, style, folder, prompt)
        result["styles"][style] = entry
    (model_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
