"""The configuration people copy from the README and config.toml actually works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from renewald.adapters import AdapterRegistry
from renewald.config import load_config

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("browser.proxy_delivery", "http.webhook", "command", "log")


def build_all(config_path: Path) -> None:
    registry = AdapterRegistry(load_config(config_path, env={}).adapters)
    try:
        for kind in KINDS:
            assert registry.get(kind) is not None, kind
    finally:
        registry.close()


def test_readme_adapter_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README has a TOML example"
    path = tmp_path / "readme.toml"
    path.write_text(block.group(1))
    monkeypatch.setenv("RENEWALD_WEBHOOK_SECRET", "an-example-secret")
    build_all(path)


def test_repo_config_builds_every_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RENEWALD_WEBHOOK_SECRET", raising=False)
    build_all(ROOT / "config.toml")
