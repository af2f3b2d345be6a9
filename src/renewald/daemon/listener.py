"""The HTTP listener (`[http] listen`): `/metrics`, `/healthz` and the status page.

The standard library's `ThreadingHTTPServer` on a daemon thread. It answers GET and HEAD
only; each request goes to the first route that claims its path. The status page's routes
are guarded (web/server.py `PageGuard`): a token when one is set, and on a non-loopback
bind only with one; `/metrics` and `/healthz` stay open for scrapers and probes.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST

from renewald.errors import ConfigError

if TYPE_CHECKING:
    from renewald.daemon.metrics import Metrics

TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Response:
    code: int
    body: bytes
    content_type: str = TEXT
    headers: Mapping[str, str] = field(default_factory=dict)


# A route answers the requests it knows and returns None for the others.
Route = Callable[[Request], Response | None]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def metrics_route(metrics: Metrics) -> Route:
    def route(request: Request) -> Response | None:
        if request.path == "/metrics":
            return Response(200, metrics.exposition(), CONTENT_TYPE_LATEST)
        if request.path == "/healthz":
            ok, why = metrics.health()
            return Response(200 if ok else 503, f"{'ok' if ok else 'unhealthy'}: {why}\n".encode())
        return None

    return route


class _Handler(BaseHTTPRequestHandler):
    routes: Sequence[Route]  # set on the per-server subclass

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path, _, qs = self.path.partition("?")
        request = Request(path, parse_qs(qs), {k.lower(): v for k, v in self.headers.items()})
        for route in self.routes:
            response = route(request)
            if response is not None:
                break
        else:
            response = Response(404, b"not found\n")
        self.send_response(response.code)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and page views are frequent and unremarkable: no access log."""


class Listener:
    """A threading HTTP server on `listen` ("host:port"; port 0 picks a free one)."""

    def __init__(self, listen: str, routes: Sequence[Route] = ()) -> None:
        host, port = split_listen(listen)
        self.host = host
        self.routes: list[Route] = list(routes)
        handler = type("Handler", (_Handler,), {"routes": self.routes})
        server_class = type(
            "Server",
            (ThreadingHTTPServer,),
            {
                "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET,
                "daemon_threads": True,
            },
        )
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"[http] listen {listen!r}: cannot listen there ({exc.strerror or exc})"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="renewald-http", daemon=True
        )

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def add_route(self, route: Route) -> None:
        self.routes.append(route)

    def start(self) -> None:
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve on this thread (`renewald web`) until `close()` or an interrupt."""
        self._server.serve_forever()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class MetricsServer(Listener):
    """`/metrics` and `/healthz` (and whatever else is mounted) on `listen`."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        super().__init__(listen, [metrics_route(metrics)])
        self.metrics = metrics

    def close(self) -> None:
        self.metrics.reader.close()
        super().close()
