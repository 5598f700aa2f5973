"""The run's full measurements, written into a marked block of the demo model's notes.md.

The card (`demo_card.py`) fits one screen and links here; this block holds everything measured
(phases, the ITC curve, recall tables, captions, targets, CapFilt). The research log written by hand
around the block is kept, so the markers must stay as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blipsearch.train.demo_run import (
    RECIPE_DEFAULTS,
    TARGETS,
    read_json,
    served_ranking,
    style_labels,
    time_line,
)
from blipsearch.train.paraphrases import PARAPHRASE_QUERIES

NOTES_START = "<!-- run:start: written by train/demo_card.py from the run's files; edits inside are lost -->"
NOTES_END = "<!-- run:end -->"


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


def itc_curve_table(history: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    """Phase 1's logged validations as a table: how recall grew, for the record, never to pick weights."""
    curve = [h for h in history if h.get("phase") == "itc-validation"]
    if not curve:
        return []
    keys = [k for k in curve[0] if k.startswith("t2i_r1_") or k == "paraphrase_top5"]
    return [
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


def caption_examples(metrics: dict[str, Any], labels: dict[str, str]) -> list[str]:
    lines: list[str] = []
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
    return lines


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
        mode, served = served_ranking(hold)
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
        mode, served = served_ranking(own)
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


def run_details(model_dir: Path, capfilt: Path | None = None) -> list[str]:
    """The notes block's lines from the run's files; `capfilt` names a CapFilt result other than
    the model folder's capfilt.json."""
    recipe = read_json(model_dir / "recipe.json") or {}
    metrics = read_json(model_dir / "metrics.json") or {"styles": {}}
    timing = read_json(model_dir / "timing.json") or {}
    history = []
    if (model_dir / "history.jsonl").is_file():
        history = [
            json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines() if line
        ]
    train_style = (recipe.get("train_styles") or ["google"])[0]
    holdout = recipe.get("holdout_style", "twitter")
    labels = style_labels(recipe)
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
        time_line(recipe, timing),
        "",
        *itc_curve_table(history, labels),
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
    details += caption_examples(metrics, labels)
    details += ["### Targets (issue 9)", "", *targets_table(metrics, train_style, holdout), ""]
    capfilt_result = read_json(capfilt) if capfilt is not None else read_json(model_dir / "capfilt.json")
    if capfilt_result:
        details += capfilt_section(capfilt_result, labels, holdout, train_style)
    return details


def write_run_notes(model_dir: Path, capfilt: Path | None = None) -> Path:
    """Rewrites the generated block of the model folder's notes.md from the run's files."""
    path = model_dir / "notes.md"
    write_notes(path, run_details(model_dir, capfilt))
    return path


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
