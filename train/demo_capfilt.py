"""The CapFilt experiment on the demo data, as the BLIP paper runs it, at CPU scale.

1. Corrupt a share of the training captions with captions of other emoji (noisy web text).
2. Train on the noisy set (ITC + ITM; the noisy run).
3. Filter: the noisy run's own ITM head scores every training (image, caption) pair; pairs under
   the threshold are marked noisy. Bootstrapping works because most captions of an image agree,
   so the model learns the majority and the odd one out scores low.
4. Train again, same recipe and seed, without the pairs the filter marked (the cleaned run).
5. Measure both runs the same way and count what the filter caught (precision and recall
   against the known corruptions).

The captioner half of CapFilt (synthetic captions) is left out here: a captioner trained on the
clean demo data would leak the right answers into the "noisy" experiment.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.train.demo_eval import evaluate_demo_model, write_style_set
from blipsearch.train.demo_recipe import DemoTrainer, StepCallback
from blipsearch.train.demo_settings import DemoRecipe
from blipsearch.train.emoji_classes import EmojiClasses, load_classes
from blipsearch.train.emoji_packages import EmojiPackage

FILTER_THRESHOLD = 0.5
"""ITM match probability under which a pair is marked noisy (the ITM head's own decision)."""


def filter_pairs(
    model_dir: Path, classes: EmojiClasses, style: str, threshold: float = FILTER_THRESHOLD
) -> tuple[list[tuple[str, str, float]], set[tuple[str, str]]]:
    """ITM score of every training caption against its clean image; the pairs under `threshold`."""
    folder = model_dir / "eval-images"
    write_style_set(classes, style, folder)
    model = RetrievalModel.load(str(model_dir / "retrieval"), Settings(device="cpu"))
    scored: list[tuple[str, str, float]] = []
    for index, code in enumerate(classes.unified):
        texts = classes.captions[index]
        with Image.open(folder / style / f"{code.lower()}.png") as opened:
            image = opened.convert("RGB")
        tokens = model.vision_tokens([image])
        scores = model.itm_scores(texts, vision_tokens=tokens.expand(len(texts), -1, -1))
        scored.extend((code, text, float(score)) for text, score in zip(texts, scores, strict=True))
    noisy = {(code, text) for code, text, score in scored if score < threshold}
    return scored, noisy


def filter_pairs_by_itc_rank(
    model_dir: Path, classes: EmojiClasses, style: str, top_k: int = 5
) -> tuple[list[tuple[str, str, float]], set[tuple[str, str]]]:
    """A caption is noisy when its own image is not among the `top_k` training images it retrieves
    by ITC: a self-consistency filter for when the ITM head has not learned enough to judge."""
    folder = model_dir / "eval-images"
    write_style_set(classes, style, folder)
    model = RetrievalModel.load(str(model_dir / "retrieval"), Settings(device="cpu"))
    images = []
    for code in classes.unified:
        with Image.open(folder / style / f"{code.lower()}.png") as opened:
            images.append(opened.convert("RGB"))
    vectors = model.embed_images(images).vectors
    pairs = [(index, text) for index, texts in enumerate(classes.captions) for text in texts]
    text_vectors = model.embed_texts([text for _, text in pairs])
    sims = text_vectors @ vectors.T
    owners = np.array([index for index, _ in pairs])
    own = sims[np.arange(len(pairs)), owners]
    ranks = (sims > own[:, None]).sum(axis=1)
    scored = [
        (classes.unified[index], text, float(rank)) for (index, text), rank in zip(pairs, ranks, strict=True)
    ]
    noisy = {(code, text) for code, text, rank in scored if rank >= top_k}
    return scored, noisy


def precision_recall(flagged: set[tuple[str, str]], corrupted: set[tuple[str, str]]) -> dict[str, float]:
    caught = len(flagged & corrupted)
    return {
        "flagged": len(flagged),
        "corrupted": len(corrupted),
        "caught": caught,
        "precision": caught / len(flagged) if flagged else 0.0,
        "recall": caught / len(corrupted) if corrupted else 0.0,
    }


def run_capfilt_experiment(
    base: DemoRecipe,
    progress: StepCallback | None = None,
    *,
    packages: dict[str, EmojiPackage] | None = None,
    rule: str = "itm",
    reuse_noisy: bool = False,
) -> dict[str, Any]:
    """Noisy run, filter, cleaned run; writes `capfilt.json` under `base.out` and returns it.

    `rule` is "itm" (BLIP's filter: ITM match probability under the threshold) or "itc-rank" (the
    caption's own image outside its ITC top 5). `reuse_noisy` keeps a finished noisy run in
    `OUT/noisy` instead of training it again.
    """
    if rule not in ("itm", "itc-rank"):
        raise InvalidInputError(f"Unknown filter rule {rule!r}; use itm or itc-rank.")
    out = base.out
    noisy_recipe = replace(base, out=out / "noisy", train_captioner=False, drop_captions=None)
    styles = list(dict.fromkeys([*base.train_styles, base.holdout_style]))
    metrics_file = noisy_recipe.out / "metrics.json"
    if reuse_noisy and metrics_file.is_file():
        noisy_classes = load_classes(noisy_recipe, packages)
        noisy_metrics = json.loads(metrics_file.read_text())
        noisy_seconds = json.loads((noisy_recipe.out / "timing.json").read_text())
    else:
        noisy = DemoTrainer(noisy_recipe, progress, packages=packages)
        noisy.run()
        noisy_classes, noisy_seconds = noisy.classes, noisy.seconds
        noisy_metrics = evaluate_demo_model(
            noisy_recipe.out, noisy_classes, styles, base.prompt, captions=False
        )
    if rule == "itm":
        scored, flagged = filter_pairs(noisy_recipe.out, noisy_classes, base.train_styles[0])
    else:
        scored, flagged = filter_pairs_by_itc_rank(noisy_recipe.out, noisy_classes, base.train_styles[0])
    drop = out / "flagged.json"
    drop.write_text(json.dumps(sorted([list(pair) for pair in flagged]), indent=0) + "\n")
    corrupted = noisy_classes.corrupted
    caught: dict[str, Any] = precision_recall(flagged, corrupted)
    scores = np.array([score for _, _, score in scored])
    wrong = np.array([(code, text) in corrupted for code, text, _ in scored])
    caught["mean_score_corrupted"] = float(scores[wrong].mean()) if wrong.any() else 0.0
    caught["mean_score_clean"] = float(scores[~wrong].mean()) if (~wrong).any() else 0.0
    cleaned_recipe = replace(base, out=out / "cleaned", train_captioner=False, drop_captions=drop)
    cleaned = DemoTrainer(cleaned_recipe, progress, packages=packages)
    cleaned.run()
    cleaned_metrics = evaluate_demo_model(
        cleaned_recipe.out, cleaned.classes, styles, base.prompt, captions=False
    )
    kept = sum(len(c) for c in cleaned.classes.captions)
    still_wrong = sum(
        (code, text) in corrupted
        for code, texts in zip(cleaned.classes.unified, cleaned.classes.captions, strict=True)
        for text in texts
    )
    result = {
        "corrupt_fraction": base.corrupt_fraction,
        "rule": rule,
        "threshold": FILTER_THRESHOLD if rule == "itm" else "own image outside the ITC top 5",
        "filter": caught,
        "captions": {
            "noisy_run": sum(len(c) for c in noisy_classes.captions),
            "cleaned_run": kept,
            "cleaned_still_wrong": still_wrong,
        },
        "recipe": noisy_recipe.as_dict(),
        "noisy": noisy_metrics,
        "cleaned": cleaned_metrics,
        "seconds": {"noisy": noisy_seconds, "cleaned": cleaned.seconds},
    }
    (out / "capfilt.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
