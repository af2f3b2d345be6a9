"""Keep-alive connections of the HTTP adapters (`deadline.DeadlineTransport`): each thread
reuses its own connection per origin, replaces one the server closed, and `close` ends
them all. A real HTTP/1.1 server on 127.0.0.1 tells connections apart by the client's
port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from renewald.adapters.allowlist import HostAllowList
from renewald.adapters.base import OutcomeKind
from renewald.adapters.deadline import DeadlineTransport
from renewald.adapters.http import HttpSender, Timeouts
from tests.httpd import reply
from tests.waiting import wait_for

TIMEOUTS = Timeouts(total=5.0, connect=3.0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: KeepAliveServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.ports.append(self.client_address[1])
        self.server.by_sender.append((self.headers.get("X-Sender"), self.client_address[1]))
        reply(self, 200, b"ok")
        if self.path == "/then-hang-up":
            # Closed without a `Connection: close`: the client learns it only from the socket.
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class KeepAliveServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ports: list[int] = []
        self.ended: list[int] = []
        self.by_sender: list[tuple[str | None, int]] = []
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}).start()

    def shutdown_request(self, request: Any) -> None:
        """Count a connection as ended once its socket is closed, not when its handler
        returns: a client told earlier could still send on it and meet the close."""
        port = request.getpeername()[1]
        super().shutdown_request(request)
        self.ended.append(port)

    def url(self, path: str = "/ok") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def servers() -> Iterator[list[KeepAliveServer]]:
    started = [KeepAliveServer(), KeepAliveServer()]
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sender() -> Iterator[HttpSender]:
    sent = HttpSender(HostAllowList(["127.0.0.1"]))
    yield sent
    sent.close()


def post(sender: HttpSender, url: str) -> None:
    headers = {"Content-Type": "application/json", "X-Sender": threading.current_thread().name}
    outcome = sender.post(url, b"{}", headers, TIMEOUTS)
    assert outcome.kind is OutcomeKind.delivered, outcome


def test_a_thread_sends_its_requests_on_one_connection(servers, sender):
    for _ in range(3):
        post(sender, servers[0].url())

    assert len(set(servers[0].ports)) == 1


def test_threads_do_not_share_a_connection(servers, sender):
    both_sent = threading.Barrier(2)

    def send_twice() -> None:
        for _ in range(2):
            post(sender, servers[0].url())
            both_sent.wait(timeout=5)

    threads = [threading.Thread(target=send_twice, name=f"t{n}") for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    ports = {name: {p for n, p in servers[0].by_sender if n == name} for name in ("t0", "t1")}
    assert len(ports["t0"]) == len(ports["t1"]) == 1 and ports["t0"] != ports["t1"]


def test_a_connection_the_server_closed_is_replaced_not_failed(servers, sender):
    post(sender, servers[0].url("/then-hang-up"))
    wait_for(lambda: servers[0].ended, timeout=5, what="the server to hang up")

    post(sender, servers[0].url())

    assert len(set(servers[0].ports)) == 2


def test_close_ends_every_threads_connections(servers, sender):
    other = threading.Thread(target=post, args=(sender, servers[0].url()))
    other.start()
    other.join(timeout=10)
    post(sender, servers[0].url())
    assert len(set(servers[0].ports)) == 2 and not servers[0].ended

    sender.close()

    wait_for(lambda: len(servers[0].ended) == 2, timeout=5, what="both connections to end")


def test_a_thread_keeps_a_bounded_number_of_origins(servers, sender, monkeypatch):
    monkeypatch.setattr(DeadlineTransport, "ORIGINS_PER_THREAD", 1)
    post(sender, servers[0].url())

    post(sender, servers[1].url())

    wait_for(lambda: servers[0].ended, timeout=5, what="the least recently used to close")
    assert not servers[1].ended
