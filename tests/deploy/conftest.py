"""Deploy fixtures: a private dockerd, a base image made with debootstrap, the project image.

No container registry is reachable here, so the base is a debootstrapped Debian bookworm,
cached as a tarball in /var/cache/renewald-deploy (RENEWALD_DEPLOY_CACHE) and imported
with `docker import`. The dockerd is our own (its own data root, exec root and socket under
a temp folder; its data root, with the imported base and the build cache, in CACHE too, so
a warm run rebuilds only the project's layer), so nothing here touches another docker on
the machine. The image is built the way docs/production.md says: wheels from the hashed
lock and the project's wheel on the host, then `docker build --build-arg BASE=...`.

What a machine lacks (dockerd, debootstrap) skips these tests with the reason; under CI,
where .ci/run installs them, it fails instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("RENEWALD_DEPLOY_CACHE", "/var/cache/renewald-deploy"))
SUITE = "bookworm"
INCLUDE = "python3,python3-venv,ca-certificates,tzdata,tini"
BASE_TAG = "renewald-base:bookworm"
IMAGE = "renewald:deploy-test"


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the deploy suite must run; .ci/run installs it)")
    pytest.skip(reason)


def timed(what: str, timings: dict[str, float], run: Callable[[], Any]) -> Any:
    started = time.monotonic()
    try:
        return run()
    finally:
        timings[what] = round(time.monotonic() - started, 1)


@dataclass
class Docker:
    """The `docker` client pointed at our own dockerd."""

    binary: str
    host: str

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        if check and proc.returncode != 0:
            pytest.fail(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc


@pytest.fixture(scope="package")
def timings() -> Iterator[dict[str, float]]:
    found: dict[str, float] = {}
    yield found
    print(f"\ndeploy timings (s): {found}", file=sys.stderr)


@pytest.fixture(scope="package")
def docker(timings: dict[str, float]) -> Iterator[Docker]:
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        unavailable("no dockerd (apt-get install docker.io)")
        return
    # Debian's client matches Debian's dockerd; another client on PATH may not speak its API.
    client = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    if client is None:
        unavailable("no docker client (apt-get install docker.io)")
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    # One session at a time owns the cached data root; another one waits here.
    lock = (CACHE / "dockerd.lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    # A short path: the daemon's unix sockets must fit in 108 bytes.
    state = Path(tempfile.mkdtemp(prefix="rd-dockerd-", dir="/tmp"))
    host = f"unix://{state}/docker.sock"
    log = (state / "dockerd.log").open("w")
    proc = subprocess.Popen(
        [
            dockerd,
            f"--data-root={CACHE}/docker",
            f"--exec-root={state}/exec",
            f"--pidfile={state}/docker.pid",
            f"--host={host}",
            "--storage-driver=overlay2",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client_ = Docker(client, host)

    def wait() -> None:
        deadline = time.monotonic() + 60
        while client_("version", check=False, timeout=10).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (state / "dockerd.log").read_text()[-2000:]
                pytest.fail(f"dockerd did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.2)

    try:
        timed("dockerd", timings, wait)
        yield client_
        # Earlier builds' images, untagged by this one: keep the cached data root small.
        client_("image", "prune", "-f", check=False)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        # dockerd unmounts its layers on a clean stop but leaves its network namespace
        # (exec/netns/default, an nsfs mount): unmount what is left, deepest first.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{state}/")), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)
        lock.close()


BASE_KEY = hashlib.sha256(f"{SUITE} minbase {INCLUDE}".encode()).hexdigest()[:12]


def base_tarball() -> Path:
    """The debootstrapped rootfs as a tarball, made once per machine and kept in CACHE."""
    tarball = CACHE / f"{SUITE}-{BASE_KEY}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        unavailable("no debootstrap (apt-get install debootstrap) to make the base image")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=CACHE) as work:
        rootfs = Path(work) / "rootfs"
        boot = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, str(rootfs)],
            capture_output=True,
            text=True,
        )
        if boot.returncode != 0:
            pytest.fail(f"debootstrap exited {boot.returncode}:\n{boot.stdout[-3000:]}")
        part = tarball.with_suffix(".part")
        # The downloaded .debs and package lists are only debootstrap's: leave them out.
        subprocess.run(
            [
                "tar",
                "-C",
                str(rootfs),
                "--exclude=./var/cache/apt/archives/*.deb",
                "--exclude=./var/lib/apt/lists/*_Packages",
                "-cf",
                str(part),
                ".",
            ],
            check=True,
        )
        part.rename(tarball)
    return tarball


def build_wheels() -> None:
    """What docs/production.md says to run before `docker build`: wheels in build/.

    The dependencies' wheels are kept in CACHE per lock file: a warm run copies them.
    """
    lock = (ROOT / "requirements.lock").read_bytes()
    cached = CACHE / f"wheels-{hashlib.sha256(lock).hexdigest()[:12]}"
    wheels = ROOT / "build" / "wheels"
    shutil.rmtree(ROOT / "build" / "dist", ignore_errors=True)
    shutil.rmtree(wheels, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    steps: list[list[str]] = [["wheel", "--no-deps", "-w", "build/dist", "."]]
    if not cached.is_dir():
        download = ["--require-hashes", "--only-binary=:all:", "-r", "requirements.lock"]
        steps.insert(0, ["download", *download, "-d", f"{cached}.part"])
    for argv in steps:
        done = subprocess.run([*pip, *argv], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"pip {' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
        if argv[0] == "download":
            Path(f"{cached}.part").rename(cached)
    shutil.copytree(cached, wheels)


@pytest.fixture(scope="package")
def image(docker: Docker, timings: dict[str, float]) -> str:
    """The project's image, built from its Dockerfile on the debootstrapped base."""
    label = "org.renewald.base"
    have = docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}',
                  BASE_TAG, check=False)  # fmt: skip
    if have.stdout.strip() != BASE_KEY:
        tarball = timed("base tarball", timings, base_tarball)
        with tarball.open("rb") as fh:
            started = time.monotonic()
            imported = subprocess.run(
                [docker.binary, "-H", docker.host, "import", "--change",
                 f"LABEL {label}={BASE_KEY}", "-", BASE_TAG],
                stdin=fh, capture_output=True, text=True,
            )  # fmt: skip
            timings["docker import"] = round(time.monotonic() - started, 1)
        if imported.returncode != 0:
            pytest.fail(f"docker import exited {imported.returncode}:\n{imported.stderr}")
    timed("wheels", timings, build_wheels)
    build = ["build", "--network=host", "--build-arg", f"BASE={BASE_TAG}"]
    # The deps stage gets a tag too, or the prune at the end would drop it from the cache.
    timed(
        "docker build deps",
        timings,
        lambda: docker(*build, "--target", "deps", "-t", f"{IMAGE}-deps", str(ROOT)),
    )
    timed("docker build", timings, lambda: docker(*build, "-t", IMAGE, str(ROOT)))
    return IMAGE
