"""Configuration: defaults, the repo's config.toml, precedence, and one-line errors."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from renewald.cli import main
from renewald.config import (
    Config,
    DaemonConfig,
    DatabaseConfig,
    LoggingConfig,
    RetentionConfig,
    RetryConfig,
    load_config,
)
from renewald.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no config.toml, so the defaults are all there is."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(text: str, tmp_path: Path, **env: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- defaults and the example file ---------------------------------------------------


def test_defaults_without_any_file(empty_dir: Path) -> None:
    config = load_config(env={})

    assert config.source is None
    assert config == Config()
    assert config.database.url == "sqlite:///var/artifact.db"
    assert config.database.sqlite_synchronous == "NORMAL"
    assert config.database.busy_timeout == 5.0
    assert config.daemon == DaemonConfig()
    assert config.daemon.workers == 8
    assert config.daemon.batch == 256
    assert config.daemon.lease == 60.0
    assert config.daemon.heartbeat is None
    assert config.daemon.heartbeat_interval == 20.0
    assert config.daemon.dispatch_statuses == ("auto",)
    assert config.retry == RetryConfig(
        base=30.0, factor=2.0, cap=21600.0, jitter=0.1, max_retry_after=86400.0
    )
    assert config.logging == LoggingConfig(dir=Path("var/logs/renewal"), level="info")
    assert config.breaker.failures == 5
    assert config.breaker.pause == 300.0
    assert config.http.listen == ""
    assert config.retention == RetentionConfig(older_than=None, interval=3600.0, batch=500)
    assert config.adapters == {}


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().daemon.workers = 3  # type: ignore[misc]


def test_repo_config_toml_loads_and_matches_the_defaults(empty_dir: Path) -> None:
    config = load_config(REPO_CONFIG, env={})

    assert config.source == REPO_CONFIG
    assert dataclasses.replace(config, adapters={}, source=None) == Config()
    assert set(config.adapters) == {"browser.proxy_delivery", "http.webhook", "command", "http"}
    assert config.adapters["http.webhook"]["timeout"] == "10s"  # adapters parse their own
    assert config.adapters["http"]["allow_hosts"] == ["127.0.0.1", "::1"]


def test_config_toml_in_the_working_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[daemon]\nworkers = 3\n")
    monkeypatch.chdir(tmp_path)

    config = load_config(env={})

    assert config.source == Path("config.toml")
    assert config.daemon.workers == 3


# --- precedence ----------------------------------------------------------------------


def test_database_url_flag_beats_environment_beats_file(tmp_path: Path, empty_dir: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "sqlite:///from-file.db"\n', "settings.toml")
    env = {"RENEWALD_DB": "sqlite:///from-env.db"}

    assert load_config(path, env={}).database.url == "sqlite:///from-file.db"
    assert load_config(path, env=env).database.url == "sqlite:///from-env.db"
    assert load_config(path, env=env, db_url="sqlite:///flag.db").database.url == (
        "sqlite:///flag.db"
    )
    assert load_config(env={}, db_url="sqlite:///flag.db").database.url == "sqlite:///flag.db"
    assert load_config(env={}).database.url == "sqlite:///var/artifact.db"


def test_section_key_environment_beats_file_beats_default(tmp_path: Path, empty_dir: Path) -> None:
    path = write(tmp_path, "[daemon]\nworkers = 4\n", "settings.toml")

    assert load_config(env={}).daemon.workers == 8
    assert load_config(path, env={}).daemon.workers == 4
    assert load_config(path, env={"RENEWALD_DAEMON_WORKERS": "16"}).daemon.workers == 16


def test_config_path_flag_beats_environment(tmp_path: Path, empty_dir: Path) -> None:
    flag = write(tmp_path, "[daemon]\nbatch = 1\n", "flag.toml")
    from_env = write(tmp_path, "[daemon]\nbatch = 2\n", "env.toml")
    write(tmp_path, "[daemon]\nbatch = 3\n")  # ./config.toml, used only when nothing is named

    env = {"RENEWALD_CONFIG": str(from_env)}
    assert load_config(flag, env=env).daemon.batch == 1
    assert load_config(env=env).daemon.batch == 2
    assert load_config(env=env).source == from_env
    assert load_config(env={}).daemon.batch == 3


def test_environment_values_of_every_type(empty_dir: Path) -> None:
    config = load_config(
        env={
            "RENEWALD_RETRY_BASE": "10s",
            "RENEWALD_RETRY_FACTOR": "1.5",
            "RENEWALD_DAEMON_DISPATCH_STATUSES": "auto, manual",
            "RENEWALD_DAEMON_POLL_INTERVAL": "250ms",
            "RENEWALD_LOGGING_DIR": "/tmp/logs",
            "RENEWALD_LOGGING_LEVEL": "DEBUG",
            "RENEWALD_HTTP_LISTEN": "127.0.0.1:9464",
            "RENEWALD_RETENTION_OLDER_THAN": "30d",
            "RENEWALD_DATABASE_SQLITE_SYNCHRONOUS": "full",
            "RENEWALD_WEBHOOK_SECRET": "not ours: ignored",
            "PATH": "/usr/bin",
        }
    )

    assert config.retry.base == 10.0
    assert config.retry.factor == 1.5
    assert config.daemon.dispatch_statuses == ("auto", "manual")
    assert config.daemon.poll_interval == 0.25
    assert config.logging.dir == Path("/tmp/logs")
    assert config.logging.level == "debug"
    assert config.http.listen == "127.0.0.1:9464"
    assert config.retention.older_than == 30 * 86400.0
    assert config.database.sqlite_synchronous == "FULL"


def test_host_environment_is_used_when_env_is_not_given(
    empty_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENEWALD_DAEMON_BATCH", "7")
    assert load_config().daemon.batch == 7


# --- values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [('"500ms"', 0.5), ('"30s"', 30.0), ('"5m"', 300.0), ('"6h"', 21600.0), ('"1h30m"', 5400.0)],
)
def test_duration_forms(tmp_path: Path, written: str, seconds: float) -> None:
    path = write(tmp_path, f"[daemon]\nlease = {written}\n")
    assert load_config(path, env={}).daemon.lease == seconds


def test_heartbeat_overrides_a_third_of_the_lease(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\nlease = "30s"\nheartbeat = "5s"\n')
    assert load_config(path, env={}).daemon.heartbeat_interval == 5.0


def test_zero_is_allowed_where_it_means_something(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[daemon]\nshutdown_grace = "0s"\ncooldown_after_delivery = "0s"\n[retry]\n'
        "jitter = 0\nfactor = 1\n",
    )
    config = load_config(path, env={})
    assert config.daemon.shutdown_grace == 0.0
    assert config.retry.jitter == 0.0
    assert config.retry.factor == 1.0


def test_adapter_tables_are_kept_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[adapters.command]
argv = ["/bin/cat"]
timeout = "5s"
env = { LANG = "C" }
exit_codes = { "75" = "retry", "1" = "permanent" }

[adapters.http]
allow_hosts = ["example.com", "localhost", "10.0.0.0/8", "fd00::/8", "192.168.1.7"]

[adapters.log]
include_payload = false

[adapters."acme.pager"]
anything = { goes = [1, 2] }
""",
    )
    adapters = load_config(path, env={}).adapters

    assert adapters["command"]["exit_codes"] == {"75": "retry", "1": "permanent"}
    assert adapters["http"]["allow_hosts"][2] == "10.0.0.0/8"
    assert adapters["log"] == {"include_payload": False}
    assert adapters["acme.pager"] == {"anything": {"goes": [1, 2]}}


# --- errors: one line naming the file and the key ------------------------------------


def test_missing_explicit_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file$"):
        load_config(missing, env={})
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file$"):
        load_config(env={"RENEWALD_CONFIG": str(missing)})


def _deny(monkeypatch: pytest.MonkeyPatch, method: str, denied: Path) -> None:
    """Make `Path.<method>` fail on `denied` as it does for a UID that may not read it."""
    real = getattr(Path, method)

    def fake(self: Path, *args: object, **kwargs: object) -> object:
        if self == denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, fake)


@pytest.mark.parametrize("method", ["open", "exists"])
@pytest.mark.parametrize("how", ["flag", "env", "working directory"])
def test_unreadable_file_is_one_line_and_exit_2(
    empty_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    method: str,
    how: str,
) -> None:
    # An image run under an arbitrary UID (docker run -u 12345:0, OpenShift) may not read
    # the mounted config.toml (open) or search the directory holding it (exists / stat).
    path = write(empty_dir, "[daemon]\nworkers = 2\n")
    shown = {"flag": path, "env": path, "working directory": Path("config.toml")}[how]
    _deny(monkeypatch, method, shown)
    argv = ["--config", str(path)] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("RENEWALD_CONFIG", str(path))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(shown))}: cannot read: Permission"):
        load_config(argv[1] if argv else None)
    with pytest.raises(SystemExit) as exited:
        main([*argv, "stats"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == f"renewald: {shown}: cannot read: Permission denied\n"


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = error_of("[daemon]\nworkers = 8\nlease = \n", tmp_path)
    assert message.startswith(f"{tmp_path / 'config.toml'}: invalid TOML: ")
    assert "line 3" in message


def test_bad_duration(tmp_path: Path) -> None:
    message = error_of('[daemon]\nlease = "10x"\n', tmp_path)
    assert message == (
        f"{tmp_path / 'config.toml'}: [daemon] lease: '10x' is not a duration such as "
        '"500ms", "30s", "5m", "6h" or "30d"'
    )


def test_duration_without_unit_is_refused(tmp_path: Path) -> None:
    message = error_of("[retry]\ncap = 60\n", tmp_path)
    assert message.endswith('[retry] cap: 60 has no unit: write a duration such as "60s"')


@pytest.mark.parametrize("key", ["lease", "poll_interval", "rescue_interval"])
def test_zero_duration_is_refused_where_it_makes_no_sense(tmp_path: Path, key: str) -> None:
    message = error_of(f'[daemon]\n{key} = "0s"\n', tmp_path)
    assert message.endswith(f"[daemon] {key} must be longer than zero, got '0s'")


def test_zero_busy_timeout_is_refused(tmp_path: Path) -> None:
    assert "[database] busy_timeout must be longer than zero" in error_of(
        '[database]\nbusy_timeout = "0ms"\n', tmp_path
    )


def test_unknown_key(tmp_path: Path) -> None:
    message = error_of("[daemon]\nwrkers = 8\n", tmp_path)
    assert message.startswith(f"{tmp_path / 'config.toml'}: unknown key [daemon] wrkers")
    assert "did you mean workers?" in message
    assert "(known: batch, cooldown_after_delivery, dispatch_statuses," in message


def test_unknown_section(tmp_path: Path) -> None:
    message = error_of("[deamon]\nworkers = 8\n", tmp_path)
    assert message.startswith(f"{tmp_path / 'config.toml'}: unknown section [deamon]")
    assert "did you mean daemon?" in message


def test_key_outside_any_section(tmp_path: Path) -> None:
    message = error_of("workers = 8\n", tmp_path)
    assert message.endswith("config.toml: workers is not inside a section (put it under [daemon])")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[daemon]\nworkers = "eight"\n', "[daemon] workers must be an integer >= 1, got 'eight'"),
        ("[daemon]\nworkers = 0\n", "[daemon] workers must be an integer >= 1, got 0"),
        ("[daemon]\nbatch = 2.5\n", "[daemon] batch must be an integer >= 1, got 2.5"),
        ("[daemon]\nworkers = true\n", "[daemon] workers must be an integer >= 1, got True"),
        ("[retry]\nfactor = true\n", "[retry] factor must be a number >= 1, got True"),
        ("[retry]\nfactor = 0.5\n", "[retry] factor must be a number >= 1, got 0.5"),
        ("[retry]\njitter = 1\n", "[retry] jitter must be a number in [0, 1), got 1"),
        ('[retry]\njitter = "10%"\n', "[retry] jitter must be a number in [0, 1), got '10%'"),
        ("[logging]\nlevel = 3\n", "[logging] level must be one of debug, info, warning, error"),
        ('[logging]\nconsole = "tty"\n', "[logging] console must be one of auto, human, json"),
        ('[database]\nsqlite_synchronous = "OFF"\n', "[database] sqlite_synchronous must be"),
        ("[database]\nurl = 5\n", "[database] url must be a database URL such as"),
        ('[database]\nurl = "not a url"\n', "[database] url must be a database URL such as"),
        ('[daemon]\ndispatch_statuses = "auto"\n', "[daemon] dispatch_statuses must be"),
        ("[daemon]\ndispatch_statuses = []\n", "[daemon] dispatch_statuses must be"),
        ('[http]\nlisten = "9464"\n', '[http] listen must be "host:port"'),
        ('[http]\nlisten = "localhost:http"\n', '[http] listen must be "host:port"'),
        ("[daemon]\nlease = true\n", "[daemon] lease must be a duration"),
        ('[daemon]\nlease = "30s"\nheartbeat = "30s"\n', "[daemon] heartbeat must be shorter"),
        ("daemon = 3\n", "[daemon] must be a table"),
    ],
)
def test_wrong_types_and_values(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(text, tmp_path)
    assert message.startswith(f"{tmp_path / 'config.toml'}: {expected}")


def test_environment_errors_name_the_variable(tmp_path: Path, empty_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"RENEWALD_DAEMON_WORKERS": "eight"})
    assert str(caught.value) == (
        "environment RENEWALD_DAEMON_WORKERS must be an integer >= 1, got 'eight'"
    )

    with pytest.raises(ConfigError, match=r"^environment RENEWALD_RETRY_BASE: '10' is not a"):
        load_config(env={"RENEWALD_RETRY_BASE": "10"})

    with pytest.raises(
        ConfigError, match=r"^environment RENEWALD_DAEMON_WRKERS: unknown key \[daemon\] wrkers"
    ):
        load_config(env={"RENEWALD_DAEMON_WRKERS": "3"})


def test_secret_env_variables_are_not_taken_for_settings(tmp_path: Path) -> None:
    path = write(tmp_path, '[adapters."http.webhook"]\nsecret_env = "RENEWALD_HTTP_TOKEN"\n')
    config = load_config(path, env={"RENEWALD_HTTP_TOKEN": "s3cret"})
    assert config.http.listen == ""


def test_flag_error_names_the_flag(empty_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--db must be a database URL"):
        load_config(env={}, db_url="nonsense")


def test_error_names_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "[daemon]\nbatch = 0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(env={})
    assert str(caught.value) == "config.toml: [daemon] batch must be an integer >= 1, got 0"


# --- adapters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[adapters.http]\nallow_hosts = ["10.0.0.1/8"]\n',
            "[adapters.http] allow_hosts: '10.0.0.1/8' is not a valid IP address or CIDR range",
        ),
        (
            '[adapters.http]\nallow_hosts = ["10.0.0.0/33"]\n',
            "[adapters.http] allow_hosts: '10.0.0.0/33' is not a valid IP address or CIDR",
        ),
        (
            '[adapters.http]\nallow_hosts = ["300.1.1.1"]\n',
            "[adapters.http] allow_hosts: '300.1.1.1' is neither an exact host name nor",
        ),
        (
            '[adapters.http]\nallow_hosts = ["*.example.com"]\n',
            "[adapters.http] allow_hosts: '*.example.com' is neither an exact host name nor",
        ),
        (
            '[adapters.http]\nallow_hosts = ["http://example.com"]\n',
            "[adapters.http] allow_hosts: 'http://example.com' is not a valid IP address",
        ),
        (
            '[adapters.http]\nallow_hosts = "localhost"\n',
            "[adapters.http] allow_hosts must be a list of host names and CIDR ranges",
        ),
        (
            "[adapters.http]\nfollow_redirects = true\n",
            "[adapters.http] follow_redirects must not be set: renewald never follows redirects",
        ),
        (
            '[adapters."http.webhook"]\ntimeout = "soon"\n',
            "[adapters.\"http.webhook\"] timeout: 'soon' is not a duration",
        ),
        (
            '[adapters."http.webhook"]\nmax_in_flight_per_target = true\n',
            '[adapters."http.webhook"] max_in_flight_per_target must be an integer >= 1',
        ),
        (
            '[adapters."browser.proxy_delivery"]\nurl = "127.0.0.1:4317"\n',
            '[adapters."browser.proxy_delivery"] url must be an http(s) URL',
        ),
        (
            '[adapters."browser.proxy_delivery"]\nclients = "firefox"\n',
            '[adapters."browser.proxy_delivery"] clients must be a table',
        ),
        ("[adapters.command]\nargv = []\n", "[adapters.command] argv must be a non-empty list"),
        ('[adapters.command]\nargv = "/bin/cat"\n', "[adapters.command] argv must be a non-empty"),
        ("[adapters.command]\nenv = { A = 1 }\n", "[adapters.command] env must be a table of"),
        (
            '[adapters.command]\nexit_codes = { "1" = "failed" }\n',
            "[adapters.command] exit_codes must be a table of exit code = delivered | retry",
        ),
        ('[adapters.log]\ninclude_payload = "no"\n', "[adapters.log] include_payload must be"),
        ("[adapters]\nlog = 1\n", "[adapters] log must be a table"),
    ],
)
def test_adapter_errors(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(text, tmp_path)
    assert message.startswith(f"{tmp_path / 'config.toml'}: {expected}")


def test_unknown_key_of_a_builtin_adapter(tmp_path: Path) -> None:
    message = error_of('[adapters."http.webhook"]\nsecrt = "x"\n', tmp_path)
    assert message.startswith(
        f'{tmp_path / "config.toml"}: unknown key [adapters."http.webhook"] secrt'
    )
    assert "did you mean secret?" in message


def test_unquoted_dotted_adapter_kind_is_explained(tmp_path: Path) -> None:
    message = error_of('[adapters.http.webhook]\ntimeout = "5s"\n', tmp_path)
    assert message.endswith('write [adapters."http.webhook"] with quotes')


def test_database_defaults_when_the_file_omits_them(tmp_path: Path) -> None:
    path = write(tmp_path, "[breaker]\nfailures = 2\n")
    config = load_config(path, env={})
    assert config.database == DatabaseConfig()
    assert config.breaker.failures == 2
