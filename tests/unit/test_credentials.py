"""Secrets through systemd credentials ($CREDENTIALS_DIRECTORY) as well as variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from renewald import credentials
from renewald.adapters.webhook import _secret
from renewald.config import load_config
from renewald.errors import ConfigError


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    directory = tmp_path / "creds"
    directory.mkdir()
    return directory


def test_a_credential_wins_over_the_variable_and_loses_one_trailing_newline(creds: Path) -> None:
    (creds / "RENEWALD_WEBHOOK_SECRET").write_text("from-credential\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds), "RENEWALD_WEBHOOK_SECRET": "from-env"}
    assert credentials.secret("RENEWALD_WEBHOOK_SECRET", env) == "from-credential"
    assert _secret({}, env) == "from-credential"


def test_without_a_credential_the_variable_is_used(creds: Path) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(creds), "RENEWALD_WEBHOOK_SECRET": "from-env"}
    assert _secret({}, env) == "from-env"
    assert _secret({}, {"RENEWALD_WEBHOOK_SECRET": "from-env"}) == "from-env"
    assert credentials.credential("../etc/passwd", env) is None


def test_an_empty_credential_file_is_no_credential(creds: Path) -> None:
    (creds / "RENEWALD_WEBHOOK_SECRET").write_text("\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds), "RENEWALD_WEBHOOK_SECRET": "from-env"}
    assert credentials.secret("RENEWALD_WEBHOOK_SECRET", env) == "from-env"


def test_a_named_secret_env_is_found_as_a_credential(creds: Path) -> None:
    (creds / "HOOK_KEY").write_text("k3y-from-credential")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert _secret({"secret_env": "HOOK_KEY"}, env) == "k3y-from-credential"


def test_the_database_url_credential_wins_over_the_units_default(
    creds: Path, tmp_path: Path
) -> None:
    url = "postgresql+psycopg://renewald:pw@db.internal/renewald"
    (creds / "RENEWALD_DB").write_text(url + "\n")
    env = {
        "CREDENTIALS_DIRECTORY": str(creds),
        "RENEWALD_DB": "sqlite:////var/lib/renewald/artifact.db",
    }
    config = load_config(None, env=env)
    assert config.database.url == url


def test_children_get_neither_secrets_nor_the_credentials_directory(
    creds: Path, tmp_path: Path
) -> None:
    (tmp_path / "c.toml").write_text('[adapters."http.webhook"]\nsecret_env = "HOOK_KEY"\n')
    load_config(tmp_path / "c.toml", env={"HOOK_KEY": "x"})
    env = {
        "PATH": "/usr/bin",
        "RENEWALD_DB": "postgresql+psycopg://u:pw@h/db",
        "RENEWALD_WEBHOOK_SECRET": "s",
        "HOOK_KEY": "k",
        "CREDENTIALS_DIRECTORY": str(creds),
        "RENEWALD_DAEMON_WORKERS": "4",
    }
    assert credentials.child_environment(env) == {
        "PATH": "/usr/bin",
        "RENEWALD_DAEMON_WORKERS": "4",
    }


def test_an_unreadable_credential_is_one_config_error(creds: Path) -> None:
    (creds / "RENEWALD_DB").write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError, match="credential RENEWALD_DB: cannot read"):
        load_config(None, env={"CREDENTIALS_DIRECTORY": str(creds)})
