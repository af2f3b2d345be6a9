"""The systemd units: what systemd-analyze says about them, and the numbers that must agree.

`systemd-analyze verify` and `systemd-analyze security --offline` run when the tool is
installed; without it those tests skip, except under CI (env `CI` set), where a missing
tool is a failure: the units would otherwise ship unchecked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from renewald.config import DaemonConfig, DatabaseConfig
from renewald.errors import EX_UNAVAILABLE, EX_USAGE

ROOT = Path(__file__).resolve().parents[2]
UNIT_DIR = ROOT / "systemd"
UNITS = ("renewald.service", "renewald-once.service", "renewald-once.timer")
INSTALLED_BINARY = "/usr/local/bin/renewald"

# `systemd-analyze security` exposure: 0.0 (locked down) .. 10.0 (wide open).
MAX_EXPOSURE = 1.5

# Keys the daemon unit and the one-shot unit may set differently; everything else in
# [Service] (identity, directories, sandbox) must be the same in both.
_MODE_KEYS = {
    "Type",
    "NotifyAccess",
    "ExecStart",
    "SuccessExitStatus",
    "WatchdogSec",
    "Restart",
    "RestartSec",
    "RestartPreventExitStatus",
    "TimeoutStartSec",
}


# --- reading unit files -----------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as ordered (key, value) lists; repeated keys are kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: assignment before any section: {raw!r}"
        assert not line.endswith("\\"), f"{path.name}: keep assignments on one line: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not an assignment: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def one(section: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in section if k == key]
    assert len(values) == 1, f"{key}= is set {len(values)} times, expected once"
    return values[0]


def environment(section: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in section:
        if key == "Environment":
            for assignment in value.split():
                name, _, val = assignment.partition("=")
                env[name] = val
    return env


_SPAN = re.compile(r"(\d+)\s*(ms|s|sec|min|m|h)?")
_SPAN_UNITS = {"ms": 0.001, "s": 1, "sec": 1, None: 1, "min": 60, "m": 60, "h": 3600}


def timespan(text: str) -> float:
    """Seconds in a systemd time span such as "40s", "15min", "2s" or "120"."""
    parts = _SPAN.findall(text.replace(" ", ""))
    assert "".join(n + u for n, u in parts) == text.replace(" ", ""), text
    return sum(int(n) * _SPAN_UNITS[u or None] for n, u in parts)


@cache
def unit(name: str) -> dict[str, list[tuple[str, str]]]:
    return parse_unit(UNIT_DIR / name)


# --- running systemd-analyze ------------------------------------------------------------


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is not installed (CI is set): install systemd")
        pytest.skip("systemd-analyze is not installed")
    return tool


def _renewald_binary() -> str:
    found = shutil.which("renewald")
    beside = Path(sys.executable).parent / "renewald"
    if beside.exists():
        return str(beside)
    if found:
        return found
    pytest.fail("no `renewald` executable: is the project installed in this environment?")


def _supports(tool: str, option: str) -> bool:
    help_text = subprocess.run([tool, "--help"], capture_output=True, text=True, check=False).stdout
    return option in help_text


def _clean_env() -> dict[str, str]:
    return {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C"}


@pytest.fixture
def installed_units(tmp_path: Path) -> list[Path]:
    """The units copied to tmp with ExecStart pointing at this environment's renewald."""
    binary = _renewald_binary()
    copies = []
    for name in UNITS:
        text = (UNIT_DIR / name).read_text()
        copy = tmp_path / name
        copy.write_text(text.replace(INSTALLED_BINARY, binary))
        copies.append(copy)
    return copies


def test_units_verify_clean(installed_units: list[Path]) -> None:
    tool = _systemd_analyze()
    args = [tool, "verify", "--man=no"]
    if _supports(tool, "--recursive-errors"):
        # Judge our units, not the host's network-online.target or timers.target.
        args.append("--recursive-errors=no")
    result = subprocess.run(
        [*args, *map(str, installed_units)],
        capture_output=True,
        text=True,
        check=False,
        cwd=installed_units[0].parent,
        env=_clean_env(),
    )
    output = (result.stdout + result.stderr).splitlines()
    about_ours = [line for line in output if any(name in line for name in UNITS)]
    assert about_ours == [], "systemd-analyze verify:\n" + "\n".join(output)
    assert result.returncode == 0, "systemd-analyze verify:\n" + "\n".join(output)


@pytest.mark.parametrize("name", ["renewald.service", "renewald-once.service"])
def test_security_exposure(name: str, installed_units: list[Path]) -> None:
    tool = _systemd_analyze()
    if not _supports(tool, "--offline"):
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 250)")
    path = installed_units[UNITS.index(name)]
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=path.parent,
        env=_clean_env(),
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, f"{name}: exposure {exposure} > {MAX_EXPOSURE}\n" + (
        "\n".join(line for line in result.stdout.splitlines() if "✗" in line)
    )


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The verify test can fail: a misspelt key and a missing binary are reported."""
    tool = _systemd_analyze()
    broken = tmp_path / "renewald.service"
    text = (UNIT_DIR / "renewald.service").read_text()
    broken.write_text(text.replace("KillMode=mixed", "KilMode=mixed"))
    result = subprocess.run(
        [tool, "verify", "--man=no", str(broken)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=_clean_env(),
    )
    output = result.stdout + result.stderr
    assert "KilMode" in output
    if not Path(INSTALLED_BINARY).exists():
        assert f"{INSTALLED_BINARY} is not executable" in output


# --- the numbers that must agree (no systemd needed) ------------------------------------


def test_daemon_unit_timings_agree_with_config_defaults() -> None:
    service = unit("renewald.service")["Service"]
    daemon = DaemonConfig()

    assert daemon.lease == 60
    assert daemon.heartbeat_interval == 20
    # SIGTERM -> in-flight deliveries get shutdown_grace -> exit; SIGKILL comes only after.
    assert timespan(one(service, "TimeoutStopSec")) == 40
    assert daemon.shutdown_grace == 25 < timespan(one(service, "TimeoutStopSec"))
    # Pings go out every WatchdogSec/2; the heartbeat tick must fit in a watchdog period.
    assert timespan(one(service, "WatchdogSec")) == 30
    assert daemon.heartbeat_interval < timespan(one(service, "WatchdogSec"))


def test_daemon_unit_protocol() -> None:
    service = unit("renewald.service")["Service"]

    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "exec"  # migrate (ExecStartPre) may extend
    assert one(service, "ExecStart").split()[-1] == "run"
    assert one(service, "ExecStartPre").split()[-1] == "migrate"
    assert one(service, "KillMode") == "mixed"
    assert one(service, "KillSignal") == "SIGTERM"
    assert one(service, "Restart") == "on-failure"
    assert "2" in one(service, "RestartPreventExitStatus").split()
    assert unit("renewald.service")["Install"] == [("WantedBy", "multi-user.target")]


def test_daemon_unit_outlasts_a_database_outage() -> None:
    """Exit 69 (database unavailable after startup_wait) is restarted, after a pause, for
    as long as the outage lasts: the start limit cannot trip on restarts alone."""
    unit_section = unit("renewald.service")["Unit"]
    service = unit("renewald.service")["Service"]

    assert one(service, "Restart") == "on-failure"
    assert one(service, "RestartPreventExitStatus").split() == [str(EX_USAGE)]
    assert str(EX_UNAVAILABLE) not in one(service, "RestartPreventExitStatus").split()
    restart_sec = timespan(one(service, "RestartSec"))
    assert restart_sec == 15
    interval = timespan(one(unit_section, "StartLimitIntervalSec"))
    burst = int(one(unit_section, "StartLimitBurst"))
    # Even a start that fails at once is one start per RestartSec: fewer than the burst.
    assert interval / restart_sec + 1 < burst
    assert not [k for k, _ in service if k.startswith("StartLimit")]  # [Unit] keys only

    # migrate and run each wait up to startup_wait; the default fits in the start timeout
    # (they extend it while they wait, but a boot that needs no extension is the norm).
    assert DatabaseConfig().startup_wait < timespan(one(service, "TimeoutStartSec"))


def test_once_unit_and_timer() -> None:
    service = unit("renewald-once.service")["Service"]
    timer = unit("renewald-once.timer")["Timer"]

    assert one(service, "Type") == "oneshot"
    assert one(service, "ExecStart").split()[-2:] == ["run", "--once"]
    assert "75" in one(service, "SuccessExitStatus").split()
    assert timespan(one(service, "TimeoutStopSec")) > DaemonConfig().shutdown_grace
    assert one(timer, "OnCalendar") == "*:0/5"
    assert one(timer, "Persistent") == "true"
    assert one(timer, "Unit") == "renewald-once.service"


def test_both_services_share_identity_and_sandbox() -> None:
    daemon = [(k, v) for k, v in unit("renewald.service")["Service"] if k not in _MODE_KEYS]
    once = [(k, v) for k, v in unit("renewald-once.service")["Service"] if k not in _MODE_KEYS]
    assert sorted(daemon) == sorted(once)


def test_units_point_renewald_at_its_directories() -> None:
    for name in ("renewald.service", "renewald-once.service"):
        service = unit(name)["Service"]
        env = environment(service)
        assert env["RENEWALD_DB"] == "sqlite:////var/lib/renewald/artifact.db", name
        assert env["RENEWALD_LOGGING_DIR"] == "/var/log/renewald", name
        assert one(service, "StateDirectory") == "renewald", name
        assert one(service, "LogsDirectory") == "renewald", name
        assert one(service, "DynamicUser") == "yes", name
        for key in ("ExecStart", "ExecStartPre"):
            argv = one(service, key).split()
            assert argv[:3] == [INSTALLED_BINARY, "--config", "/etc/renewald/config.toml"]


def test_dockerfile_and_docs_agree_with_the_units() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    docs = (ROOT / "docs" / "production.md").read_text()

    assert re.search(r"^STOPSIGNAL SIGTERM$", dockerfile, re.M)
    # exec form with tini as PID 1: it reaps the command adapter's orphans and forwards
    # signals, so no `docker run --init` is needed (tests/deploy proves it).
    assert 'ENTRYPOINT ["tini", "-s", "-g"' in dockerfile
    assert "RENEWALD_DB=sqlite:////var/lib/renewald/artifact.db" in dockerfile
    assert "RENEWALD_LOGGING_DIR=/var/lib/renewald/logs" in dockerfile  # the one volume
    assert re.findall(r"^VOLUME (.*)$", dockerfile, re.M) == ['["/var/lib/renewald"]']
    # docker stop's grace sits between shutdown_grace (25s) and systemd's 40s.
    stop = re.search(r"docker stop -t (\d+)", docs)
    assert stop
    assert DaemonConfig().shutdown_grace < int(stop.group(1)) <= 40
    readme = (ROOT / "README.md").read_text()
    for text in (docs, readme):
        assert "run --init" not in text and "init: true" not in text
    service = unit("renewald.service")["Service"]
    for key in ("WatchdogSec", "TimeoutStopSec"):
        # the docs' table row: | `TimeoutStopSec` | **40s** | ...
        row = re.search(rf"^\| `{key}` \| \*\*(\w+)\*\* \|", docs, re.M)
        assert row, f"docs/production.md has no table row for {key}"
        assert timespan(row.group(1)) == timespan(one(service, key)), key


def test_services_limit_resources_and_take_secrets_as_credentials() -> None:
    for name in ("renewald.service", "renewald-once.service"):
        service = unit(name)["Service"]
        assert one(service, "LimitCORE") == "0", name  # a watchdog SIGABRT leaves no core
        assert one(service, "MemoryMax").endswith(("M", "G")), name
        assert int(one(service, "TasksMax")) >= 64, name
        credentials = {v for k, v in service if k == "LoadCredential"}
        assert credentials == {"RENEWALD_DB", "RENEWALD_WEBHOOK_SECRET"}, name


def test_documentation_names_a_file_the_documented_install_creates() -> None:
    install = (ROOT / "docs/production.md").read_text()
    for name in UNITS:
        for key, value in unit(name)["Unit"]:
            if key == "Documentation" and value.startswith("file://"):
                path = value.removeprefix("file://")
                assert re.search(rf"^install .*docs/\S+ {re.escape(path)}$", install, re.M), (
                    f"{name}: Documentation={value}: no install step in docs/production.md "
                    "creates it"
                )
