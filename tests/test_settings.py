from pathlib import Path

import pytest

from blipsearch.errors import ConfigError
from blipsearch.settings import Settings, load_settings


def test_defaults_put_sqlite_inside_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "d")
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'd' / 'catalog.sqlite3'}"
    assert settings.device == "auto"
    assert settings.max_text_tokens == 35
    assert settings.vqa_model is None


def test_default_data_dir_follows_xdg(tmp_path: Path) -> None:
    assert load_settings().data_dir == tmp_path / "xdg" / "blipsearch"


def test_environment_uses_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLIPSEARCH_DEVICE", "cpu")
    monkeypatch.setenv("BLIPSEARCH_IMAGE_BATCH_SIZE", "7")
    monkeypatch.setenv("BLIPSEARCH_VQA_MODEL", "/models/vqa")
    settings = load_settings()
    assert (settings.device, settings.image_batch_size, settings.vqa_model) == ("cpu", 7, "/models/vqa")


def test_ranking_floors_and_stopwords_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    assert (defaults.keyword_floor, defaults.vector_floor, defaults.keyword_stopwords) == (0.2, 0.5, True)
    monkeypatch.setenv("BLIPSEARCH_VECTOR_FLOOR", "0")
    monkeypatch.setenv("BLIPSEARCH_KEYWORD_FLOOR", "0.35")
    monkeypatch.setenv("BLIPSEARCH_KEYWORD_STOPWORDS", "false")
    settings = load_settings()
    assert (settings.keyword_floor, settings.vector_floor, settings.keyword_stopwords) == (0.35, 0.0, False)


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_hf_hub_offline_is_honoured(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert load_settings().offline is expected


def test_config_file_below_environment_above_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "blipsearch.toml"
    config.write_text('retrieval_model = "/from/file"\ntext_batch_size = 5\ndevice = "cuda"\n')
    monkeypatch.setenv("BLIPSEARCH_CONFIG_FILE", str(config))
    monkeypatch.setenv("BLIPSEARCH_DEVICE", "cpu")
    settings = load_settings()
    assert settings.retrieval_model == "/from/file"
    assert settings.text_batch_size == 5
    assert settings.device == "cpu"
    assert load_settings(text_batch_size=9).text_batch_size == 9


def test_explicit_config_file_argument(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('caption_model = "/captions"\n')
    assert load_settings(config_file=config).caption_model == "/captions"


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("device", "tpu", "device"),
        ("dtype", "int4", "dtype"),
        ("image_batch_size", 0, "image_batch_size"),
        ("database_url", "not a url", "database_url"),
        ("vector_floor", 1.5, "vector_floor"),
        ("keyword_floor", -0.1, "keyword_floor"),
    ],
)
def test_invalid_values_become_one_config_error(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_settings(**{key: value})
    assert "\n" not in str(caught.value)


def test_unknown_key_in_config_file_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("retrieval_modle = 'typo'\n")
    with pytest.raises(ConfigError, match="retrieval_modle"):
        load_settings(config_file=config)


def test_masked_hides_secrets_and_passwords() -> None:
    settings = Settings(api_key="top-secret", database_url="postgresql+psycopg://user:pw123@db:5432/cat")
    shown = settings.masked()
    assert shown["api_key"] == "********"
    assert "pw123" not in shown["database_url"]
    assert "top-secret" not in repr(shown)
    assert shown["database_url"].startswith("postgresql+psycopg://user:")
