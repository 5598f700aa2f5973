from __future__ import annotations

import json

import pytest

from blipsearch.errors import BlipsearchError
from blipsearch.models.tiny import SPECIAL_TOKENS, make_tiny, tiny_vocabulary


def test_every_role_is_a_complete_checkpoint(tiny_checkpoints) -> None:
    expected_class = {
        "retrieval": "BlipForImageTextRetrieval",
        "caption": "BlipForConditionalGeneration",
        "vqa": "BlipForQuestionAnswering",
    }
    for role, class_name in expected_class.items():
        path = getattr(tiny_checkpoints, role)
        names = {p.name for p in path.iterdir()}
        assert {
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "processor_config.json",
        } <= names
        assert json.loads((path / "config.json").read_text())["architectures"] == [class_name]


def test_tokenizer_is_real_wordpiece(retrieval) -> None:
    tokenizer = retrieval.tokenizer
    assert tokenizer.tokenize("A Red DOG") == ["a", "red", "dog"]
    pieces = tokenizer.tokenize("doghouse")
    assert pieces[0] == "dog" and all(p.startswith("##") for p in pieces[1:])
    assert tokenizer.unk_token_id not in tokenizer("zebra riding bicycle")["input_ids"]
    assert tokenizer.bos_token == "[DEC]"
    config = retrieval.model.config.text_config
    assert config.bos_token_id == tokenizer.bos_token_id
    assert config.pad_token_id == tokenizer.pad_token_id
    assert config.sep_token_id == tokenizer.sep_token_id
    assert config.vocab_size == len(tokenizer)


def test_vocabulary_has_no_duplicates_and_special_tokens_first() -> None:
    vocab = tiny_vocabulary()
    assert len(vocab) == len(set(vocab))
    assert vocab[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS


def test_same_seed_writes_identical_weights(tmp_path) -> None:
    first = make_tiny(tmp_path / "a", seed=3)
    second = make_tiny(tmp_path / "b", seed=3)
    for role in ("retrieval", "caption", "vqa"):
        a = (getattr(first, role) / "model.safetensors").read_bytes()
        b = (getattr(second, role) / "model.safetensors").read_bytes()
        assert a == b


def test_refuses_to_overwrite_without_force(tmp_path) -> None:
    make_tiny(tmp_path, seed=0)
    with pytest.raises(BlipsearchError, match="--force"):
        make_tiny(tmp_path, seed=0)
    make_tiny(tmp_path, seed=0, overwrite=True)
