"""The image, built from the Dockerfile and run by a real dockerd (issue 13 item 8).

No `docker run --init` anywhere: tini in the image is PID 1.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import Docker
from tests.waiting import wait_for as _wait_for

# Each check runs docker: poll five times a second, not fifty.
wait_for = functools.partial(_wait_for, interval=0.2)

pytestmark = pytest.mark.deploy

CONFIG_IN_IMAGE = "/etc/renewald/config.toml"
# Each delivery leaves an orphan: the subshell exits at once and its `sleep` is re-parented
# to PID 1, which must reap it when it ends.
FORKING_COMMAND = ["/bin/sh", "-c", "(sleep 0.2 >/dev/null 2>&1 &); cat >/dev/null"]
CONFIG = f"""
[daemon]
poll_interval = "200ms"
workers = 4

[adapters.command]
argv = {json.dumps(FORKING_COMMAND)}
timeout = "10s"
"""
ZOMBIES = """
import glob
for stat in glob.glob("/proc/[0-9]*/stat"):
    try:
        text = open(stat).read()
    except OSError:
        continue
    pid, rest = text.split(" (", 1)
    comm, fields = rest.rsplit(") ", 1)
    if fields.split()[0] == "Z":
        print(pid, comm)
"""


@pytest.fixture
def containers(docker: Docker) -> Iterator[list[str]]:
    """Names to give containers and volumes; whatever is left is removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        docker("rm", "-f", "-v", name, check=False)
        docker("volume", "rm", "-f", name, check=False)


def fresh(containers: list[str]) -> str:
    name = f"renewald-test-{uuid.uuid4().hex[:8]}"
    containers.append(name)
    return name


def config_file(tmp_path: Path, text: str = CONFIG, mode: int = 0o644) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def state(docker: Docker, name: str) -> dict[str, Any]:
    out = docker("inspect", "--format", "{{json .State}}", name).stdout
    return dict(json.loads(out))


def test_arbitrary_uid_read_only_healthy_and_stops_cleanly(
    docker: Docker, image: str, containers: list[str]
) -> None:
    name = fresh(containers)
    docker(
        "run", "-d", "--name", name, "-u", "12345:0", "--read-only", "--cap-drop", "ALL",
        "--health-interval", "1s", "-v", f"{name}:/var/lib/renewald", image,
    )  # fmt: skip
    started = time.monotonic()
    wait_for(
        lambda: state(docker, name).get("Health", {}).get("Status") == "healthy",
        timeout=60,
        what="the health check to pass",
    )
    healthy_after = time.monotonic() - started
    assert docker("exec", name, "id", "-u").stdout.strip() == "12345"
    assert docker("exec", name, "cat", "/proc/1/comm").stdout.strip() == "tini"
    owner = docker("exec", name, "stat", "-c", "%u:%g %a", "/var/lib/renewald/artifact.db")
    assert owner.stdout.split()[0] == "12345:0"
    assert owner.stdout.split()[1] == "640"  # umask 0027, as in the units

    stop = time.monotonic()
    docker("stop", "-t", "35", name)
    stopped_in = time.monotonic() - stop
    assert state(docker, name)["ExitCode"] == 0
    assert stopped_in < 10, stopped_in
    print(f"healthy after {healthy_after:.1f}s, stopped in {stopped_in:.1f}s")


@pytest.mark.parametrize("delay", [0.0, 0.4, 1.0])
def test_sigterm_during_start_up_stops_at_once_with_exit_0(
    docker: Docker, image: str, containers: list[str], delay: float
) -> None:
    # Within the first second the entrypoint is migrating or Python is importing: no
    # handler is installed yet. Without an init the kernel drops SIGTERM for PID 1 and
    # `docker stop` waits out its timeout, then SIGKILLs (exit 137).
    name = fresh(containers)
    docker("run", "-d", "--name", name, image)
    time.sleep(delay)
    stop = time.monotonic()
    docker("stop", "-t", "10", name)
    stopped_in = time.monotonic() - stop
    assert state(docker, name)["ExitCode"] == 0, docker("logs", name).stderr
    assert stopped_in < 2, stopped_in


def test_command_adapter_children_are_reaped(
    docker: Docker, image: str, containers: list[str], tmp_path: Path
) -> None:
    name = fresh(containers)
    config = config_file(tmp_path)
    docker(
        "run", "-d", "--name", name, "-v", f"{config}:{CONFIG_IN_IMAGE}:ro",
        "-e", f"RENEWALD_CONFIG={CONFIG_IN_IMAGE}", image,
    )  # fmt: skip
    enqueue = (
        "from renewald.cli.app import cli\n"
        "for i in range(20):\n"
        "    cli.main(args=['enqueue', '--conversation', f'c{i}', '--payload', 'hi',\n"
        "                   '--target-kind', 'command'], standalone_mode=False)\n"
    )
    wait_for(
        lambda: docker("exec", name, "python3", "-c", enqueue, check=False).returncode == 0,
        timeout=20,
        what="the schema (enqueue to succeed)",
    )

    def done() -> bool:
        out = docker("exec", name, "renewald", "jobs", "--status", "done", "--json").stdout
        return len(json.loads(out)) == 20

    wait_for(done, timeout=60, what="20 command deliveries")
    time.sleep(1)  # the orphaned sleeps end
    zombies = docker("exec", name, "python3", "-c", ZOMBIES).stdout
    assert zombies == "", f"zombies in the container:\n{zombies}"
    docker("stop", "-t", "35", name)
    assert state(docker, name)["ExitCode"] == 0


def test_unreadable_config_is_one_line_and_exit_2(
    docker: Docker, image: str, containers: list[str], tmp_path: Path
) -> None:
    config = config_file(tmp_path, mode=0o600)  # root's; the arbitrary UID may not read it
    name = fresh(containers)
    ran = docker(
        "run", "--name", name, "-u", "12345:0", "-v", f"{config}:{CONFIG_IN_IMAGE}:ro",
        "-e", f"RENEWALD_CONFIG={CONFIG_IN_IMAGE}", image, "stats", check=False,
    )  # fmt: skip
    assert ran.returncode == 2
    assert ran.stderr == f"renewald: {CONFIG_IN_IMAGE}: cannot read: Permission denied\n"


def command_config(argv: list[str]) -> str:
    return f'[adapters.command]\nargv = {json.dumps(argv)}\ntimeout = "20s"\n'


def jobs(docker: Docker, image: str, volume: str, status: str) -> list[dict[str, Any]]:
    out = docker(
        "run", "--rm", "-v", f"{volume}:/var/lib/renewald", image,
        "jobs", "--status", status, "--json",
    ).stdout  # fmt: skip
    return list(json.loads(out))


def test_docker_stop_drains_an_in_flight_delivery(
    docker: Docker, image: str, containers: list[str], tmp_path: Path
) -> None:
    name = fresh(containers)
    config = config_file(tmp_path, command_config(["/bin/sh", "-c", "cat >/dev/null; sleep 3"]))
    docker(
        "run", "-d", "--name", name, "-v", f"{name}:/var/lib/renewald",
        "-v", f"{config}:{CONFIG_IN_IMAGE}:ro", "-e", f"RENEWALD_CONFIG={CONFIG_IN_IMAGE}", image,
    )  # fmt: skip
    enqueue = ["renewald", "enqueue", "--conversation", "c", "--payload", "hi"]
    wait_for(
        lambda: (
            docker("exec", name, *enqueue, "--target-kind", "command", check=False).returncode == 0
        ),
        timeout=20,
        what="the schema (enqueue to succeed)",
    )
    wait_for(
        lambda: (
            json.loads(docker("exec", name, "renewald", "jobs", "--json").stdout)[0]["status"]
            == "running"
        ),
        timeout=20,
        what="the delivery to start",
    )
    stop = time.monotonic()
    docker("stop", "-t", "35", name)
    stopped_in = time.monotonic() - stop
    assert state(docker, name)["ExitCode"] == 0
    assert stopped_in < 10, stopped_in
    done = jobs(docker, image, name, "done")
    assert len(done) == 1, "the delivery in flight at SIGTERM was not finished and recorded"


@pytest.mark.parametrize(("exit_code", "expected"), [(75, 75), (9, 1)])
def test_one_shot_exit_codes(
    docker: Docker,
    image: str,
    containers: list[str],
    tmp_path: Path,
    exit_code: int,
    expected: int,
) -> None:
    # 75 rescheduled (the command said retry), 1 a job failed (permanent); 0 is the stops'.
    volume = fresh(containers)
    config = config_file(tmp_path, command_config(["/bin/sh", "-c", f"exit {exit_code}"]))
    common = [
        "run", "--rm", "-v", f"{volume}:/var/lib/renewald",
        "-v", f"{config}:{CONFIG_IN_IMAGE}:ro", "-e", f"RENEWALD_CONFIG={CONFIG_IN_IMAGE}", image,
    ]  # fmt: skip
    enqueue = "renewald enqueue --conversation c --payload hi --target-kind command"
    docker(*common[:-1], "--entrypoint", "/bin/sh", image, "-c", f"renewald migrate && {enqueue}")
    once = docker(*common, "run", "--once", check=False)
    assert once.returncode == expected, once.stderr
