from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

from blipsearch.errors import ModelLoadError
from blipsearch.models.loading import load_checkpoint
from blipsearch.models.retrieval import RetrievalModel


def _load(source: str, model_class=BlipForImageTextRetrieval, offline: bool = True):
    return load_checkpoint(
        model_class, source, role="retrieval", device="cpu", dtype="float32", offline=offline
    )


def _one_line(error: pytest.ExceptionInfo[ModelLoadError]) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_directory_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as caught:
        _load(str(missing))
    message = _one_line(caught)
    assert str(missing) in message and "BLIPSEARCH_RETRIEVAL_MODEL" in message


def test_directory_without_config_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match=r"no config\.json") as caught:
        _load(str(tmp_path))
    _one_line(caught)


def test_file_instead_of_directory(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        _load(str(file))


def test_hub_id_offline_and_uncached_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as caught:
        _load("Salesforce/blip-itm-base-coco")
    message = _one_line(caught)
    assert "'Salesforce/blip-itm-base-coco'" in message and "offline" in message


def test_non_blip_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ModelLoadError, match="'bert' checkpoint, not BLIP"):
        _load(str(tmp_path))


def test_checkpoint_of_another_blip_task_is_refused(tiny_checkpoints) -> None:
    """A caption checkpoint has no ITM head: loading it as retrieval must not silently randomise one."""
    with pytest.raises(ModelLoadError, match=r"lacks .* weights"):
        _load(str(tiny_checkpoints.caption))


def test_corrupt_weights_are_reported(tiny_checkpoints, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoints.retrieval, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="could not be loaded") as caught:
        _load(str(broken))
    _one_line(caught)


def test_processor_and_model_of_a_good_checkpoint(tiny_checkpoints) -> None:
    loaded = _load(str(tiny_checkpoints.caption), BlipForConditionalGeneration)
    assert isinstance(loaded.model, BlipForConditionalGeneration)
    assert not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())
    assert loaded.fingerprint.startswith("blip-")


def test_legacy_hub_layout_loads(tiny_checkpoints, tmp_path: Path) -> None:
    """Salesforce's hub repos carry vocab.txt and a preprocessor_config.json naming BlipImageProcessor;
    they must load through the same code (and without torchvision)."""
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_checkpoints.retrieval / name, legacy / name)
    modern = RetrievalModel.load(str(tiny_checkpoints.retrieval))
    vocab = modern.tokenizer.get_vocab()
    (legacy / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.__getitem__)) + "\n")
    (legacy / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": True,
                "model_max_length": 512,
                "processor_class": "BlipProcessor",
            }
        )
    )
    (legacy / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": "[DEC]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
                "pad_token": "[PAD]",
                "sep_token": "[SEP]",
                "unk_token": "[UNK]",
                "additional_special_tokens": ["[ENC]"],
            }
        )
    )
    image_size = modern.image_size
    (legacy / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_normalize": True,
                "do_resize": True,
                "image_processor_type": "BlipImageProcessor",
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "processor_class": "BlipProcessor",
                "resample": 3,
                "rescale_factor": 1 / 255,
                "size": {"height": image_size, "width": image_size},
            }
        )
    )
    old = RetrievalModel.load(str(legacy))
    assert old.fingerprint == modern.fingerprint
    texts = ["a red dog", "two cats on a couch"]
    assert (old.tokenize(texts)["input_ids"] == modern.tokenize(texts)["input_ids"]).all()
    assert abs(old.embed_texts(texts) - modern.embed_texts(texts)).max() < 1e-6
