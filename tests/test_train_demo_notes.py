"""The demo model's notes block: the run's full measurements from its files, written between the
markers of notes.md without touching the research log written by hand around them."""

from __future__ import annotations

import json
from pathlib import Path

from blipsearch.train.demo_notes import (
    NOTES_END,
    NOTES_START,
    itm_phase_words,
    targets_table,
    write_notes,
    write_run_notes,
)

RECIPE = {
    "train_styles": ["google", "fluent-3d"],
    "style_weights": [2.0, 1.0],
    "holdout_style": "twitter",
    "itc_steps": 10,
    "itm_steps": 2,
    "caption_steps": 3,
    "seed": 4,
    "machine": "Some CPU, 2 cores, no GPU",
}


def _recall(r1: float) -> dict:
    recall = {"r1": r1, "r5": 75.0, "r10": 100.0}
    return {"text_to_image": recall, "image_to_text": recall}


def test_itm_phase_words_name_what_phase_two_trains_beyond_blips_itm_loss() -> None:
    itm = {**RECIPE, "itm_vision_layers": 1, "itm_vision_lr": 1e-4, "itm_rank_weight": 5.0}
    assert "last 1 layer learns too (lr 0.0001)" in itm_phase_words(itm)
    assert "served re-ranking score" in itm_phase_words(itm) and itm_phase_words(RECIPE) == ""


def test_targets_table_compares_the_served_ranking_with_itc() -> None:
    hold = {"images": 4, "ITC": _recall(25.0), "ITM+ITC@8": _recall(60.0)}
    own = {"images": 4, "ITC": _recall(100.0), "ITM+ITC@8": _recall(100.0)}
    rows = targets_table({"styles": {"twitter": hold, "google": own}}, "google", "twitter")
    assert "| held-out style t2i R@1 (ITM+ITC@8) | >= 50% | 60.0% | yes |" in rows
    assert "| held-out style t2i R@5 (ITM+ITC@8) | >= 80% | 75.0% | no |" in rows
    assert (
        "| ITM re-ranked above ITC-only (held-out t2i R@1, ITM+ITC@8) | ITM > ITC | 60.0% vs 25.0% | yes |"
        in rows
    )
    assert "| held-out captions name the emoji | >= 50% | not measured | no |" in rows
    assert "| demo catalog t2i R@1 (ITC) | >= 95% | 100.0% | yes |" in rows


def test_run_notes_hold_the_curve_and_keep_the_hand_written_log(tmp_path: Path) -> None:
    (tmp_path / "recipe.json").write_text(json.dumps(RECIPE))
    (tmp_path / "timing.json").write_text(json.dumps({"itc": 120.0, "itm": 60.0}))
    (tmp_path / "history.jsonl").write_text(
        json.dumps(
            {
                "phase": "itc-validation",
                "step": 10,
                "t2i_r1_google": 0.5,
                "paraphrase_top5": 0.375,
                "t2i_r1_fluent-3d": 0.25,
            }
        )
    )
    google = {"images": 4, "texts": 4, "ITC": _recall(50.0), "paraphrase_top5": 0.625}
    (tmp_path / "metrics.json").write_text(json.dumps({"styles": {"google": google}}))
    notes = write_run_notes(tmp_path).read_text()
    assert notes.startswith("# Demo model: notes\n\n" + NOTES_START) and notes.endswith(NOTES_END + "\n")
    assert "Time on Some CPU, 2 cores, no GPU: itc 2.0 min, itm 1.0 min; 3.0 min of training in all." in notes
    assert "| step | Noto | paraphrases | Fluent 3D |" in notes and "| 10 | 50.0% | 37.5% | 25.0% |" in notes
    assert "| ITC | 50.0 | 75.0 | 100.0 | 50.0 | 75.0 | 100.0 |" in notes
    assert "own words" in notes and "trained on; the demo catalog): 62.5%" in notes
    assert "## CapFilt experiment" not in notes  # no capfilt.json in the run's folder
    (tmp_path / "notes.md").write_text(
        notes.replace("# Demo model: notes", "# Demo model: notes\n\nBy hand.") + "\nAfter, by hand.\n"
    )
    write_run_notes(tmp_path)
    again = (tmp_path / "notes.md").read_text()
    assert "By hand." in again and again.endswith("\nAfter, by hand.\n")
    assert again.count(NOTES_START) == 1 and again.count("| step |") == 1


def test_write_notes_appends_the_block_to_notes_without_one(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("# Log\n\nA finding.\n\n")
    write_notes(path, ["## The run", "one line"])
    assert path.read_text() == f"# Log\n\nA finding.\n\n{NOTES_START}\n\n## The run\none line\n{NOTES_END}\n"
