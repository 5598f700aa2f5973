"""`blipsearch config show`: the effective settings, secrets masked; a bad setting is one line."""

from __future__ import annotations

import json
from pathlib import Path

from clirun import blipsearch


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('caption_model = "/my/captioner"\n')
    result = blipsearch(
        "--config",
        str(config),
        "config",
        "show",
        "--json",
        env={"BLIPSEARCH_API_KEY": "hunter2", "BLIPSEARCH_DEVICE": "cpu"},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["caption_model"] == "/my/captioner" and data["device"] == "cpu"
    assert data["api_key"] == "********" and "hunter2" not in result.stdout


def test_invalid_setting_is_one_line(tmp_path: Path) -> None:
    result = blipsearch("config", "show", env={"BLIPSEARCH_DEVICE": "abacus"})
    assert result.returncode == 1
    assert "device" in result.stderr and "Traceback" not in result.stderr
