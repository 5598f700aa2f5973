"""The trainers on the tiny checkpoints: losses fall, resume is exact, the best model loads, the CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.models.tiny import TinyCheckpoints
from blipsearch.settings import Settings
from blipsearch.train.captioner import CaptionTrainer
from blipsearch.train.loop import TrainConfig, load_pairs
from blipsearch.train.retrieval import RetrievalTrainer

from imagesets import write_valid_images

WORDS = ["red apple", "blue car", "green tree", "a dog", "a cat", "big bus", "old man", "white boat"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight images with one caption each, plus a second caption for the first image."""
    root = tmp_path_factory.mktemp("pairs")
    paths = write_valid_images(root, 8)
    lines = [f"{path.relative_to(root)}\t{word}" for path, word in zip(paths, WORDS, strict=True)]
    lines.append(f"{paths[0].relative_to(root)}\ta red fruit")
    tsv = root / "pairs.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    return tsv


@pytest.fixture(scope="module")
def pil_pairs(pairs_file: Path) -> list[tuple[Image.Image, str]]:
    pairs = load_pairs(pairs_file)
    return [
        (Image.open(path).convert("RGB"), text) for path, text in zip(pairs.images, pairs.texts, strict=True)
    ][:8]


def _losses(history: list[dict], key: str = "loss") -> list[float]:
    return [record[key] for record in history if key in record]


def test_tsv_pairs_share_image_ids_per_picture(pairs_file: Path):
    pairs = load_pairs(pairs_file)
    assert len(pairs) == 9 and pairs.image_ids[0] == pairs.image_ids[8] == 0
    assert len(set(pairs.image_ids)) == 8


def test_retrieval_losses_decrease(tiny_checkpoints: TinyCheckpoints, pil_pairs, tmp_path: Path):
    config = TrainConfig(
        base=str(tiny_checkpoints.retrieval),
        out=tmp_path / "run",
        epochs=15,
        batch=8,
        lr=1e-3,
        warmup_fraction=0,
    )
    trainer = RetrievalTrainer(config, pil_pairs)
    history = trainer.fit()
    for key in ("loss", "itc", "itm"):
        values = _losses(history, key)
        assert len(values) == 15 and all(v == v for v in values)  # finite, no NaN
    assert _losses(history, "loss")[-1] < _losses(history, "loss")[0]
    assert _losses(history, "itc")[-1] < _losses(history, "itc")[0]
    assert 0.001 <= trainer.temp.item() <= 0.5


def test_captioner_loss_decreases(tiny_checkpoints: TinyCheckpoints, pil_pairs, tmp_path: Path, cpu_settings):
    config = TrainConfig(
        base=str(tiny_checkpoints.caption),
        out=tmp_path / "cap",
        epochs=15,
        batch=8,
        lr=1e-3,
        warmup_fraction=0,
    )
    trainer = CaptionTrainer(config, pil_pairs)
    values = _losses(trainer.fit(), "lm")
    assert len(values) == 15 and values[-1] < values[0]
    assert trainer.prompt_length == 4  # [CLS] a picture of
    captioner = Captioner.load(str(tmp_path / "cap" / "best"), cpu_settings)
    assert len(captioner.caption([pil_pairs[0][0]])) == 1


def _resume_config(base: str, out: Path, *, resume: bool = False) -> TrainConfig:
    return TrainConfig(
        base=base,
        out=out,
        epochs=2,
        batch=2,
        accumulate=2,
        lr=5e-4,
        checkpoint_every=1,
        val_fraction=0.25,
        seed=7,
        resume=resume,
    )


def test_resume_is_bit_identical(tiny_checkpoints: TinyCheckpoints, pairs_file: Path, tmp_path: Path):
    base = str(tiny_checkpoints.retrieval)
    straight = RetrievalTrainer(_resume_config(base, tmp_path / "a"), pairs_file).fit()
    first = RetrievalTrainer(_resume_config(base, tmp_path / "b"), pairs_file)
    assert first.total_steps == 4  # 6 train pairs: 3 batches of 2, 2 steps per epoch, 2 epochs
    first.fit(until_step=1)  # stops mid-epoch, after a checkpoint
    assert (tmp_path / "b" / "checkpoints" / "latest").read_text().strip() == "step-0000001.pt"
    resumed_trainer = RetrievalTrainer(_resume_config(base, tmp_path / "b", resume=True), pairs_file)
    resumed = resumed_trainer.fit()
    assert resumed_trainer.step == 4
    expected = [r for r in straight if "loss" in r and r["step"] > 1]
    got = [r for r in resumed if "loss" in r]
    assert [r["step"] for r in got] == [2, 3, 4]
    for want, have in zip(expected, got, strict=True):
        assert want == have  # every loss, the learning rate and the epoch, bit for bit
    with pytest.raises(InvalidInputError, match=r"lr: 0\.0005 -> 0\.001"):
        changed = _resume_config(base, tmp_path / "b", resume=True)
        changed.lr = 1e-3
        RetrievalTrainer(changed, pairs_file).fit()
    validations = [r["validation"] for r in resumed if "validation" in r]
    assert validations == [r["validation"] for r in straight if "validation" in r][-len(validations) :]


def test_best_checkpoint_and_recipe(tiny_checkpoints: TinyCheckpoints, pairs_file: Path, tmp_path: Path):
    run = tmp_path / "run"
    trainer = RetrievalTrainer(_resume_config(str(tiny_checkpoints.retrieval), run), pairs_file)
    trainer.fit()
    recipe = json.loads((run / "recipe.json").read_text())
    assert recipe["kind"] == "retrieval" and recipe["config"]["accumulate"] == 2
    assert recipe["config"]["momentum"] == 0.995 and recipe["config"]["seed"] == 7
    assert recipe["train_pairs"] + recipe["val_pairs"] == 9 and recipe["val_pairs"] >= 2
    assert recipe["bf16"] is False and recipe["total_steps"] == 4
    state = json.loads((run / "best" / "training_state.json").read_text())
    assert 0.001 <= state["temp"] <= 0.5 and state["metric"] == trainer.best_metric
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert sum("validation" in record for record in history) == 2
    settings = Settings(device="cpu", dtype="float32", offline=True)
    model = RetrievalModel.load(str(run / "best"), settings)
    assert model.embed_texts(["a dog"]).shape == (1, model.embedding_dim)


def test_cli_trains_both_models(tiny_checkpoints: TinyCheckpoints, pairs_file: Path, tmp_path: Path):
    env = {**os.environ, "BLIPSEARCH_OFFLINE": "1", "BLIPSEARCH_DEVICE": "cpu"}
    for kind, base in (("retrieval", tiny_checkpoints.retrieval), ("captioner", tiny_checkpoints.caption)):
        out = tmp_path / kind
        command = [sys.executable, "-m", "blipsearch", "train", kind, str(pairs_file), "--base", str(base)]
        command += ["--out", str(out), "--steps", "2", "--batch", "4", "--val-fraction", "0.25", "--json"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["kind"] == kind and summary["steps"] == 2
        assert (out / "best" / "config.json").is_file() and (out / "recipe.json").is_file()
        assert summary["validations"]
