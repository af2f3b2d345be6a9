"""Real HTTP servers on 127.0.0.1 for the adapter tests, scripted per path.

Each test gets its own `ThreadingHTTPServer` on port 0. Routes are functions of the
request handler; `server.release` is set at teardown so that handlers that hang or
trickle return, and `server_close` joins every handler thread before the test ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from renewald.adapters.base import Conversation, Delivery
from tests.httpd import reply

Route = Callable[["Handler"], None]

# A fixed instant for Retry-After in HTTP-date form (epoch 1445412480).
RETRY_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
RETRY_DATE_EPOCH = 1445412480.0
# How long a hanging or trickling handler may hold on before giving up by itself:
# far beyond any adapter timeout used here, so only the adapter can end the wait.
HOLD = 10.0
TRICKLE_EVERY = 0.02


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: Message
    body: bytes


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        scripted = self.server.scripted
        scripted.requests.append(Recorded("POST", self.path, self.headers, body))
        route = scripted.routes.get(self.path.split("?", 1)[0], respond(404, b"no route"))
        route(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    # Join handler threads on close, so no thread outlives its test.
    daemon_threads = False
    block_on_close = True
    scripted: ScriptedServer


def respond(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    def route(handler: Handler) -> None:
        reply(handler, status, body, headers)

    return route


def hang(handler: Handler) -> None:
    """Never answer; return (without a response) once the test is over."""
    handler.server.scripted.release.wait(HOLD)


def trickle_headers(handler: Handler) -> None:
    """Send the status line, then header bytes one at a time, each well within any
    per-read timeout: only a total deadline can cut this response short. After HOLD
    the headers end, so a client without that deadline gets a 200 (and the test fails
    instead of hanging)."""
    release = handler.server.scripted.release
    try:
        handler.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
        for _ in range(int(HOLD / TRICKLE_EVERY)):
            if release.wait(TRICKLE_EVERY):
                return
            handler.wfile.write(b"a")
        handler.wfile.write(b"\r\nContent-Length: 0\r\n\r\n")
    except OSError:
        pass  # the client gave up: what this route is for


def trickle_body(handler: Handler) -> None:
    """A 200 whose 1000-byte body arrives a byte at a time."""
    release = handler.server.scripted.release
    try:
        handler.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            if release.wait(TRICKLE_EVERY):
                return
            handler.wfile.write(b"a")
    except OSError:
        pass


def default_routes() -> dict[str, Route]:
    return {
        "/ok": respond(200, b'{"accepted": true}', {"Content-Type": "application/json"}),
        "/created": respond(201),
        "/bad": respond(
            400,
            b'{"error": "payload rejected", "api_key": "sk-live-0123456789"}',
            {"Content-Type": "application/json"},
        ),
        "/missing": respond(404, b"not here"),
        "/conflict": respond(409, b"conversation busy"),
        "/error": respond(500, b"internal error"),
        "/bad-gateway": respond(502),
        "/unavailable": respond(503, b"maintenance", {"Retry-After": "30"}),
        "/unavailable-bare": respond(503, b"maintenance"),
        "/busy": respond(429, b"slow down", {"Retry-After": "120"}),
        "/busy-date": respond(429, b"slow down", {"Retry-After": RETRY_DATE}),
        "/busy-bare": respond(429, b"slow down"),
        "/moved": respond(302, b"", {"Location": "http://127.0.0.1:9/next?token=abc123secret"}),
        "/hang": hang,
        "/trickle-headers": trickle_headers,
        "/trickle-body": trickle_body,
    }


class ScriptedServer:
    """A live server; `routes` maps a path to what its handler does."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = default_routes()
        self.requests: list[Recorded] = []
        self.release = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.scripted = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}
        )

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    scripted.start()
    yield scripted
    scripted.stop()


def make_delivery(**overrides: object) -> Delivery:
    """A delivery with sensible defaults; any field can be overridden."""
    fields: dict[str, object] = {
        "job_id": "job-1",
        "attempt": 2,
        "attempt_id": "att-1",
        "target_kind": "http.webhook",
        "target": {},
        "payload": "Please continue where we left off.",
        "payload_kind": "text",
        "conversation": Conversation(
            local_id="conv-1",
            platform="claude",
            remote_id="remote-1",
            page_url="https://claude.ai/chat/remote-1",
        ),
    }
    fields.update(overrides)
    return Delivery(**fields)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _forget_added_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets registered by an adapter under test are forgotten after the test."""
    from renewald import redact

    monkeypatch.setattr(redact, "_secrets", redact._secrets)
