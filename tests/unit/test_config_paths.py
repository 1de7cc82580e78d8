"""File paths in a config file are relative to the file, not to the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccbalancer.config import load_config, parse_config

PROVIDER = "providers:\n  - {name: a, type: anthropic, base_url: 'http://x'}\n"


def test_relative_paths_resolve_against_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "ccb"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        PROVIDER + "settings:\n  log_file_path: logs/ccb.jsonl\n  history: {path: db/h.sqlite3}\n"
    )
    monkeypatch.chdir(tmp_path)  # a different working directory, and a relative -c path

    settings = load_config("etc/ccb/config.yaml").settings

    assert settings.log_file_path == str(folder / "logs" / "ccb.jsonl")
    assert settings.history.path == str(folder / "db" / "h.sqlite3")


def test_defaults_absolute_paths_and_console_only_logging(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(PROVIDER)
    defaults = load_config(path).settings
    assert defaults.history.path == str(tmp_path / "logs" / "history.sqlite3")
    assert defaults.log_file_path == str(tmp_path / "logs" / "ccbalancer.jsonl")

    path.write_text(PROVIDER + "settings:\n  log_file_path: ''\n  history: {path: /var/h.db}\n")
    settings = load_config(path).settings
    assert settings.log_file_path == ""  # "" stays console-only
    assert settings.history.path == "/var/h.db"


def test_text_without_a_file_keeps_its_paths_as_written() -> None:
    assert parse_config(PROVIDER).settings.history.path == "logs/history.sqlite3"
