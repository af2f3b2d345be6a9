"""A real systemd for the deploy suite: a debootstrapped Debian booted with systemd-nspawn.

The base root filesystem (`debootstrap --variant=minbase` plus systemd and python3) is
built once per machine and cached under `$RENEWALD_DEPLOY_CACHE/nspawn-rootfs`
(default `/var/cache/renewald-deploy`); every session copies it, installs renewald from
wheels built on the host into `/opt/renewald` as docs/production.md says, and boots it
with `systemd-nspawn --register=no --keep-unit --private-network -b`. Commands run inside
through `nsenter` into the container's namespaces (no machined, no D-Bus on the host).

The container has no network of its own: it reaches the host's PostgreSQL through a
Unix-socket proxy (`DbProxy`) bound into it, which the tests can also hang or take down.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("RENEWALD_DEPLOY_CACHE", "/var/cache/renewald-deploy")) / (
    "nspawn-rootfs"
)
SUITE = "bookworm"
MIRROR = os.environ.get("RENEWALD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("systemd", "python3", "python3-venv")
# What the base must hold; a change here builds a new cached base beside the old one.
_BASE_SPEC = f"{SUITE} {MIRROR} minbase {' '.join(PACKAGES)} v1"

# Inside the container: where the DB proxy's socket directory is bound.
DB_SOCKET_DIR = "/run/renewald-test-db"


def missing_tools() -> list[str]:
    return [t for t in ("systemd-nspawn", "debootstrap", "nsenter") if shutil.which(t) is None]


def cannot_run_reason() -> str | None:
    """Why this machine cannot boot a container, or None when it can."""
    if sys.platform != "linux":
        return "systemd-nspawn needs Linux"
    if os.geteuid() != 0:
        return "systemd-nspawn and debootstrap need root"
    missing = missing_tools()
    if missing:
        return (
            f"not installed: {', '.join(missing)} (apt-get install systemd-container debootstrap)"
        )
    return None


def _run(args: Sequence[str], *, quiet: bool = False) -> None:
    subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL if quiet else None)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def base_rootfs() -> Path:
    """The cached debootstrapped base, built on first use (a few minutes, then reused)."""
    key = hashlib.sha256(_BASE_SPEC.encode()).hexdigest()[:12]
    base = CACHE / f"{SUITE}-{key}"
    if (base / ".complete").exists():
        return base
    with _locked(CACHE / ".lock"):
        if (base / ".complete").exists():
            return base
        work = base.with_name(base.name + ".tmp")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
        log = CACHE / f"{base.name}.debootstrap.log"
        with log.open("w") as out:
            result = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    SUITE,
                    str(work),
                    MIRROR,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({result.returncode}); see {log}")
        # Timers that would only add noise to a booted test container.
        for timer in (work / "etc/systemd/system/timers.target.wants").glob("*.timer"):
            timer.unlink()
        (work / ".complete").write_text(_BASE_SPEC + "\n")
        work.rename(base)
    return base


def _requirements() -> list[str]:
    """renewald's runtime dependencies and what building it needs (pyproject.toml)."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)
    return [*project["project"]["dependencies"], *project["build-system"]["requires"], "wheel"]


def _layer_key() -> str:
    spec = "\n".join([_BASE_SPEC, *_requirements(), "layer v1"])
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def dependency_wheels() -> Path:
    """Wheels of the requirements, built on the host once (the container has no network)."""
    wheels = CACHE / f"wheels-{_layer_key()}"
    if (wheels / ".complete").exists():
        return wheels
    with _locked(CACHE / ".lock"):
        if not (wheels / ".complete").exists():
            pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
            _run([*pip, "wheel", "-w", str(wheels), *_requirements()], quiet=True)
            (wheels / ".complete").touch()
    return wheels


@contextlib.contextmanager
def _overlay(lower: Sequence[Path], scratch: Path) -> Iterator[Path]:
    """`lower` (topmost first) with a writable layer `scratch/upper`, mounted at scratch/root."""
    for name in ("upper", "work", "root"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
    merged = scratch / "root"
    options = (
        f"lowerdir={':'.join(map(str, lower))},"
        f"upperdir={scratch / 'upper'},workdir={scratch / 'work'}"
    )
    _run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)])
    try:
        yield merged
    finally:
        subprocess.run(["umount", "--lazy", str(merged)], check=False)


def dependency_layer() -> Path:
    """An overlay layer over the base: /opt/renewald, a venv with the requirements."""
    base = base_rootfs()
    layer = CACHE / f"layer-{_layer_key()}"
    if (layer / ".complete").exists():
        return layer / "upper"
    wheels = dependency_wheels()
    with _locked(CACHE / ".lock"):
        if not (layer / ".complete").exists():
            work = layer.with_name(layer.name + ".tmp")
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(layer, ignore_errors=True)
            with _overlay([base], work) as root:
                shutil.copytree(wheels, root / "var/tmp/renewald-wheels")
                requirements = " ".join(f"'{r}'" for r in _requirements())
                _nspawn_run(
                    root,
                    "python3 -m venv /opt/renewald"
                    " && /opt/renewald/bin/pip install -q --disable-pip-version-check"
                    f" --no-index --find-links /var/tmp/renewald-wheels {requirements}"
                    " && rm -rf /var/tmp/renewald-wheels",
                )
            shutil.rmtree(work / "work", ignore_errors=True)
            (work / "root").rmdir()
            (work / ".complete").touch()
            work.rename(layer)
    return layer / "upper"


@contextlib.contextmanager
def session_rootfs(scratch: Path) -> Iterator[Path]:
    """A throwaway root filesystem with this checkout's renewald installed, as documented.

    docs/production.md: a venv at /opt/renewald, `renewald` linked into /usr/local/bin.
    The cached layers stay untouched: every write lands in `scratch`.
    """
    layer = dependency_layer()
    with _overlay([layer, base_rootfs()], scratch) as root:
        src = root / "var/tmp/renewald-src"
        src.mkdir(parents=True)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        shutil.copytree(
            ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        _nspawn_run(
            root,
            "/opt/renewald/bin/pip install -q --disable-pip-version-check --no-index"
            " --no-deps --no-build-isolation /var/tmp/renewald-src"
            " && ln -sf /opt/renewald/bin/renewald /usr/local/bin/renewald"
            " && rm -rf /var/tmp/renewald-src",
        )
        yield root


def _nspawn_run(rootfs: Path, script: str) -> None:
    """Run a shell script in the root filesystem without booting it."""
    _run(
        [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "-D",
            str(rootfs),
            "/bin/sh",
            "-ec",
            script,
        ],
        quiet=True,
    )


class Container:
    """One booted container; `sh()`/`systemctl()` run commands inside it as root."""

    def __init__(self, rootfs: Path, *, binds: dict[Path, str], console: Path) -> None:
        self.rootfs = rootfs
        self.console = console
        args = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "-b",
            "-D",
            str(rootfs),
            *(f"--bind={host}:{inside}" for host, inside in binds.items()),
        ]
        self._out = console.open("w")
        env = {**os.environ, "SYSTEMD_LOG_COLOR": "0"}
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT, env=env
        )
        self.leader = self._find_leader()

    def _find_leader(self, timeout: float = 30.0) -> int:
        """The host pid of the container's PID 1 (systemd), a descendant of nspawn."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {self.console.read_text()[-2000:]}")
            for pid in _descendants(self.proc.pid):
                try:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    ns = os.readlink(f"/proc/{pid}/ns/pid")
                except OSError:
                    continue
                if comm == "systemd" and ns != os.readlink("/proc/self/ns/pid"):
                    return pid
            time.sleep(0.05)
        raise RuntimeError("the container's systemd did not start")

    def run(
        self, args: Sequence[str], *, check: bool = True, timeout: float = 120, input: str = ""
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            "nsenter",
            f"--target={self.leader}",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--root",
            "--wd=/",
            *args,
        ]
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_LOG_COLOR": "0",
            "TERM": "dumb",
        }
        result = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def sh(self, script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run(["/bin/sh", "-ec", script], **kwargs)  # type: ignore[arg-type]

    def systemctl(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--no-pager", *args], **kwargs)  # type: ignore[arg-type]

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, since: str = "") -> str:
        args = ["journalctl", "--no-pager", "-o", "cat", "-u", unit]
        if since:
            args += ["--since", since]
        return self.run(args, check=False).stdout

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        target = self.rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def wait_booted(self, timeout: float = 60.0) -> str:
        """The system state once boot is over ("running" or "degraded"), or the last seen."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            # Fails until the manager's private socket exists; --wait covers the rest.
            args = ["systemctl", "is-system-running", "--wait"]
            state = self.run(args, check=False, timeout=timeout).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.2)
        return state

    def stop(self) -> None:
        if self.proc.poll() is None:
            # nspawn turns SIGTERM into an orderly poweroff of the container.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


class DbProxy:
    """A Unix-socket front for a TCP PostgreSQL that a test can hang or take down.

    `flowing`: bytes pass both ways. `hang()`: connections stay open and new ones are
    accepted, but nothing passes (a database that stopped answering). `down()`: the socket
    is gone, so connecting fails at once (a database that is not there). `up()` restores.
    """

    def __init__(self, directory: Path, upstream: tuple[str, int]) -> None:
        self.directory = directory
        self.path = directory / ".s.PGSQL.5432"
        self.upstream = upstream
        self._flowing = threading.Event()
        self._flowing.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._closed = False
        self.up()

    def up(self) -> None:
        self._flowing.set()
        if self._listener is not None:
            return
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        self.path.chmod(0o777)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def hang(self) -> None:
        self._flowing.clear()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.path.unlink(missing_ok=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._conns.append(client)
        self._flowing.wait()
        if self._closed:
            client.close()
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self._lock:
            self._conns.append(server)
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
