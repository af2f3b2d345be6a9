"""The total deadline of an HTTP request, which httpx alone does not have.

httpx's timeouts are per phase: a read timeout bounds each `recv`, so a server that
trickles one byte a second never trips it. `http.HttpSender` therefore sends its requests
on `DeadlineTransport`, httpcore connections whose network streams clamp every
connect, TLS handshake, write and read to the time left before the request's deadline
(kept in a context variable that `total_deadline` sets around the request, so it belongs
to the calling thread). When no time is left the next I/O raises the
ordinary httpcore timeout, which httpx reports as `ReadTimeout`, `WriteTimeout` or
`ConnectTimeout`. No watchdog thread is needed, and the cut-off connection is
discarded like any other failed connection. The limit: name resolution (`getaddrinfo`)
cannot be interrupted.
"""

from __future__ import annotations

import contextvars
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "renewald_http_deadline", default=None
)


@contextmanager
def total_deadline(seconds: float) -> Iterator[None]:
    """Within the block, this thread's requests on a `DeadlineTransport` end by `seconds`
    from now, whatever their per-phase timeouts say."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _clamp(timeout: float | None, timeout_error: type[Exception]) -> float | None:
    """`timeout` shortened to what is left of the current request's total deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise timeout_error("total timeout exceeded")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# Most specific first: the first match wins.
_HTTPCORE_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


class _MappedErrors:
    """Re-raise httpcore's exceptions as httpx's, as httpx's own transport does."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        for source, target in _HTTPCORE_ERRORS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _MappedErrors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


_OriginKey = tuple[bytes, bytes, int]


class _ThreadConnections(threading.local):
    def __init__(self) -> None:
        # Most recently used last.
        self.by_origin: dict[_OriginKey, httpcore.HTTPConnection] = {}


class DeadlineTransport(httpx.BaseTransport):
    """httpx's HTTP/1.1 transport on keep-alive connections whose I/O honours `_deadline`.

    Each thread keeps its own connection per origin (up to `ORIGINS_PER_THREAD`, the least
    recently used closed first): a delivery thread sends one request at a time, so a
    connection shared between threads would only add bookkeeping. httpcore's pool cost a
    quarter of a request's CPU with 8 delivery threads (it scans every connection, and
    polls each idle one's socket, twice per request). A connection is reused while it is
    idle, its keep-alive has not run out and the server has not closed it; any other is
    closed and replaced. At most `ORIGINS_PER_THREAD` x threads connections stay open
    (httpcore's pool kept up to 20 idle ones).

    No proxies and no environment: outbound hosts are allow-listed, and a proxy from
    `HTTP_PROXY` would send the request somewhere the allow-list never saw.
    """

    ORIGINS_PER_THREAD = 8
    KEEPALIVE_EXPIRY = 5.0

    def __init__(self) -> None:
        self._backend = _DeadlineBackend()
        self._local = _ThreadConnections()
        # Every connection any thread holds, so that `close` reaches them all.
        self._open: set[httpcore.HTTPConnection] = set()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        origin = core_request.url.origin
        key = (origin.scheme, origin.host, origin.port)
        connection = self._connection(origin, key)
        try:
            with _MappedErrors():
                response = connection.handle_request(core_request)
        except BaseException:
            if self._local.by_origin.get(key) is connection:
                del self._local.by_origin[key]
            self._discard(connection)
            raise
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def _connection(self, origin: httpcore.Origin, key: _OriginKey) -> httpcore.HTTPConnection:
        """This thread's connection to `origin`, a new one unless it has one to reuse."""
        held = self._local.by_origin
        connection = held.pop(key, None)
        if connection is not None and (not connection.is_idle() or connection.has_expired()):
            self._discard(connection)
            connection = None
        if connection is None:
            connection = httpcore.HTTPConnection(
                origin, keepalive_expiry=self.KEEPALIVE_EXPIRY, network_backend=self._backend
            )
            with self._lock:
                self._open.add(connection)
        held[key] = connection
        while len(held) > self.ORIGINS_PER_THREAD:
            self._discard(held.pop(next(iter(held))))
        return connection

    def _discard(self, connection: httpcore.HTTPConnection) -> None:
        with self._lock:
            self._open.discard(connection)
        connection.close()

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()
