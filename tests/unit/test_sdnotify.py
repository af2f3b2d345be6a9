"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from renewald.daemon.sdnotify import Notifier, WatchdogGate

# sun_path holds 108 bytes including the terminating NUL.
_MAX_SUN_PATH = 100


def _recv(sock: socket.socket) -> bytes:
    sock.settimeout(2.0)
    return sock.recv(65536)


def _assert_nothing_sent(sock: socket.socket) -> None:
    # A unix datagram is queued at the receiver before sendto() returns, so "nothing
    # queued right now" is exact, not a race.
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(65536)


@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    if len(os.fsencode(tmp_path / "notify.sock")) <= _MAX_SUN_PATH:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="rnwd-"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def systemd(socket_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that names it (a path)."""
    path = socket_dir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield sock, str(path)


@pytest.fixture
def abstract_systemd() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to an abstract name, and its `@name` NOTIFY_SOCKET value."""
    name = f"renewald-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield sock, "@" + name


def test_ready_to_a_path_socket(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})

    assert notifier.enabled
    assert notifier.ready() is True
    assert _recv(sock) == b"READY=1"


def test_every_message_is_the_exact_datagram(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    notifier = Notifier.from_env(
        {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}, pid=os.getpid()
    )

    assert notifier.ready(status="schema ok, polling")
    assert notifier.status("3 running, 12 pending, 0 failed")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert notifier.stopping(status="draining 2 deliveries")
    assert notifier.notify(status="x", extend_timeout_usec=5_000_000, errno=0)

    assert [_recv(sock) for _ in range(6)] == [
        b"READY=1\nSTATUS=schema ok, polling",
        b"STATUS=3 running, 12 pending, 0 failed",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"STOPPING=1\nSTATUS=draining 2 deliveries",
        b"STATUS=x\nEXTEND_TIMEOUT_USEC=5000000\nERRNO=0",
    ]
    _assert_nothing_sent(sock)


def test_abstract_socket_name(abstract_systemd: tuple[socket.socket, str]) -> None:
    sock, address = abstract_systemd
    assert address.startswith("@")
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})

    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("idle")
    assert _recv(sock) == b"READY=1"
    assert _recv(sock) == b"STATUS=idle"


def test_values_cannot_inject_assignments(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    notifier = Notifier(address)

    assert notifier.status("line one\nREADY=1\r\nline two")
    assert notifier.notify(ready=True, watchdog=False)
    assert _recv(sock) == b"STATUS=line one READY=1  line two"
    assert _recv(sock) == b"READY=1\nWATCHDOG=0"


def test_status_is_utf8(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    assert Notifier(address).status("délivré: 3")
    assert _recv(sock) == "STATUS=délivré: 3".encode()


def test_bad_field_name_is_a_programming_error(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    with pytest.raises(ValueError, match="field name"):
        Notifier(address).notify(**{"bad key": 1})
    assert Notifier(address).notify() is False
    _assert_nothing_sent(sock)


def test_concurrent_senders_never_interleave(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    notifier = Notifier(address)
    threads, per_thread = 8, 25
    total = threads * per_thread
    results: list[bool] = []
    received: list[bytes] = []
    lock = threading.Lock()

    # Drain like systemd does: a unix datagram queue holds only max_dgram_qlen (10).
    def drain() -> None:
        sock.settimeout(5.0)
        while len(received) < total:
            received.append(sock.recv(65536))

    def send(n: int) -> None:
        for i in range(per_thread):
            ok = notifier.notify(status=f"t{n} #{i}", watchdog=1)
            with lock:
                results.append(ok)

    reader = threading.Thread(target=drain)
    reader.start()
    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    reader.join()

    assert results == [True] * total
    assert sorted(received) == sorted(
        f"STATUS=t{n} #{i}\nWATCHDOG=1".encode() for n in range(threads) for i in range(per_thread)
    )


def _max_dgram_qlen() -> int:
    try:
        return int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    except (OSError, ValueError):
        return 10


def test_a_stalled_manager_times_out_instead_of_hanging(
    systemd: tuple[socket.socket, str],
) -> None:
    _sock, address = systemd
    qlen = _max_dgram_qlen()
    if qlen > 200:
        pytest.skip(f"net.unix.max_dgram_qlen={qlen}: the queue will not fill quickly")
    notifier = Notifier(address, timeout=0.02)
    sent = [notifier.status(f"#{i}") for i in range(qlen + 5)]

    # Nobody reads: the queue fills, later sends give up after the timeout, none hangs.
    assert sent[0] is True
    assert sent[-1] is False


# --- no systemd -------------------------------------------------------------------------


def test_no_notify_socket_means_disabled() -> None:
    notifier = Notifier.from_env({})

    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.ready() is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.notify(ready=1) is False
    assert Notifier.disabled().ready() is False


@pytest.mark.parametrize("value", ["", "@", "vsock:2:1234", "relative/notify.sock"])
def test_unusable_notify_socket_values_disable(value: str) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": value})
    assert not notifier.enabled
    assert notifier.ready() is False


def test_missing_socket_file_returns_false(socket_dir: Path) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(socket_dir / "gone.sock")})

    assert notifier.enabled
    assert notifier.ready() is False
    assert notifier.status("still here") is False
    assert notifier.stopping() is False


def test_socket_with_nobody_listening_returns_false(socket_dir: Path) -> None:
    path = socket_dir / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    assert path.exists()  # the file outlives the manager that bound it: ECONNREFUSED

    assert Notifier(str(path)).ready() is False


def test_path_that_is_not_a_socket_returns_false(socket_dir: Path) -> None:
    path = socket_dir / "plain-file"
    path.write_text("not a socket")
    assert Notifier(str(path)).ready() is False


def test_unbound_abstract_name_returns_false() -> None:
    notifier = Notifier(f"@renewald-test-{secrets.token_hex(8)}-unbound")
    assert notifier.enabled
    assert notifier.ready() is False


def test_recovers_when_the_manager_comes_back(socket_dir: Path) -> None:
    path = socket_dir / "notify.sock"
    notifier = Notifier(str(path))
    assert notifier.status("before") is False

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert notifier.status("after") is True
        assert _recv(sock) == b"STATUS=after"


# --- watchdog interval ------------------------------------------------------------------


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval == 15.0
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "500000"}).watchdog_interval == 0.25


def test_watchdog_pid_must_be_ours() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15
    assert Notifier.from_env({**env, "WATCHDOG_PID": "4242"}, pid=4242).watchdog_interval == 15
    assert Notifier.from_env({**env, "WATCHDOG_PID": "4242"}, pid=4243).watchdog_interval is None
    assert Notifier.from_env({**env, "WATCHDOG_PID": "nope"}).watchdog_interval is None


@pytest.mark.parametrize("usec", ["", "0", "-5", "abc", "1.5"])
def test_invalid_watchdog_usec_means_no_watchdog(usec: str) -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": usec}
    assert Notifier.from_env(env).watchdog_interval is None


def test_no_watchdog_without_a_socket() -> None:
    assert Notifier.from_env({"WATCHDOG_USEC": "30000000"}).watchdog_interval is None


def test_watchdog_for_another_pid_is_not_sent(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    notifier = Notifier.from_env(env, pid=2)

    assert notifier.watchdog() is False
    assert notifier.ready() is True  # the socket itself is still ours to use
    assert _recv(sock) == b"READY=1"
    _assert_nothing_sent(sock)


def test_from_env_defaults_to_os_environ(
    monkeypatch: pytest.MonkeyPatch, systemd: tuple[socket.socket, str]
) -> None:
    sock, address = systemd
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    notifier = Notifier.from_env()
    assert notifier.watchdog_interval == 1.0
    assert notifier.watchdog()
    assert _recv(sock) == b"WATCHDOG=1"
    assert os.environ["NOTIFY_SOCKET"] == address  # read, not consumed


# --- the watchdog gate ------------------------------------------------------------------


def test_gate_is_unhealthy_until_every_tick_has_run() -> None:
    gate = WatchdogGate(("poll", "heartbeat"))
    assert not gate.healthy(100.0, 30.0)
    assert gate.stale(100.0, 30.0) == ["poll", "heartbeat"]

    gate.mark("poll", 100.0)
    assert gate.stale(100.0, 30.0) == ["heartbeat"]
    gate.mark("heartbeat", 101.0)
    assert gate.healthy(101.0, 30.0)
    assert gate.last("poll") == 100.0


def test_gate_age_boundary() -> None:
    gate = WatchdogGate(("poll",))
    gate.mark("poll", 10.0)
    assert gate.healthy(40.0, 30.0)  # exactly max_age old: still fresh
    assert not gate.healthy(40.001, 30.0)


def test_gate_per_tick_max_age() -> None:
    gate = WatchdogGate()
    gate.mark("poll", 100.0)
    gate.mark("heartbeat", 80.0)
    limits = {"poll": 5.0, "heartbeat": 40.0}

    assert gate.healthy(104.0, limits)
    assert gate.stale(106.0, limits) == ["poll"]
    assert gate.stale(121.0, limits) == ["poll", "heartbeat"]


def test_gate_started_counts_as_a_first_mark() -> None:
    gate = WatchdogGate(started=50.0)
    assert gate.healthy(60.0, 30.0)  # ticks have not had their first run yet
    gate.mark("poll", 75.0)
    assert gate.stale(81.0, 30.0) == ["heartbeat"]  # heartbeat never ran since start


def test_gate_keeps_the_latest_mark() -> None:
    gate = WatchdogGate(("poll",))
    gate.mark("poll", 20.0)
    gate.mark("poll", 10.0)  # a late-finishing older tick must not age the gate
    assert gate.last("poll") == 20.0


def test_gate_rejects_unknown_and_empty_ticks() -> None:
    gate = WatchdogGate(("poll", "heartbeat"))
    with pytest.raises(ValueError, match="unknown watchdog tick"):
        gate.mark("pol", 1.0)
    with pytest.raises(ValueError):
        WatchdogGate(())


def test_watchdog_if_sends_only_while_ticks_succeed(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"}
    notifier = Notifier.from_env(env, pid=os.getpid())
    gate = WatchdogGate(("poll", "heartbeat"))

    assert notifier.watchdog_if(gate, 0.0, 20.0) is False  # nothing has run yet
    _assert_nothing_sent(sock)

    gate.mark("poll", 1.0)
    gate.mark("heartbeat", 1.0)
    assert notifier.watchdog_if(gate, 15.0, 20.0) is True
    sock.setblocking(True)
    assert _recv(sock) == b"WATCHDOG=1"

    gate.mark("heartbeat", 21.0)  # the heartbeat keeps going, the poll has stalled
    assert notifier.watchdog_if(gate, 30.0, 20.0) is False
    _assert_nothing_sent(sock)

    gate.mark("poll", 31.0)
    assert notifier.watchdog_if(gate, 32.0, 20.0) is True
    sock.setblocking(True)
    assert _recv(sock) == b"WATCHDOG=1"


def test_watchdog_if_without_watchdog_sends_nothing(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    gate = WatchdogGate(("poll",))
    gate.mark("poll", 1.0)

    assert Notifier(address).watchdog_if(gate, 2.0, 10.0) is False
    _assert_nothing_sent(sock)
