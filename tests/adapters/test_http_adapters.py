"""The HTTP adapters against real servers on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from renewald.adapters import AdapterRegistry, OutcomeKind
from renewald.adapters.bridge import BridgeAdapter
from renewald.adapters.http import parse_retry_after
from renewald.adapters.webhook import WebhookAdapter
from renewald.errors import ConfigError
from renewald.redact import MASK, redact_text
from tests.adapters.conftest import (
    RETRY_DATE,
    RETRY_DATE_EPOCH,
    ScriptedServer,
    make_delivery,
    respond,
)

SECRET = "webhook-test-secret-0123456789"


@pytest.fixture
def make_webhook(server: ScriptedServer) -> Iterator[Callable[..., WebhookAdapter]]:
    """Builds webhook adapters (no secret from the environment) and closes them after."""
    made: list[WebhookAdapter] = []

    def make(
        clock: Callable[[], float] | None = None,
        environ: dict[str, str] | None = None,
        **settings: Any,
    ) -> WebhookAdapter:
        extra = {"clock": clock} if clock else {}
        adapter = WebhookAdapter(settings, environ=environ or {}, **extra)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


@pytest.fixture
def make_bridge(server: ScriptedServer) -> Iterator[Callable[..., BridgeAdapter]]:
    made: list[BridgeAdapter] = []

    def make(**settings: Any) -> BridgeAdapter:
        adapter = BridgeAdapter(settings)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


def to(server: ScriptedServer, path: str, **overrides: Any):
    return make_delivery(target={"url": server.url(path)}, **overrides)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the request ----------------------------------------------------------------------


def test_webhook_sends_the_bridge_request_signed(server, make_webhook):
    adapter = make_webhook(secret=SECRET)

    outcome = adapter.deliver(to(server, "/ok", job_id="job-42", attempt=3))

    assert outcome.kind is OutcomeKind.delivered
    assert outcome.summary == "HTTP 200, 18 bytes"
    [request] = server.requests
    assert request.path == "/ok"
    assert request.headers["Idempotency-Key"] == "job-42"
    assert request.headers["X-Renewald-Attempt"] == "3"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("renewald/")
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Renewald-Signature"], expected)
    assert json.loads(request.body) == {
        "job_id": "job-42",
        "attempt": 3,
        "conversation": {
            "local_id": "conv-1",
            "platform": "claude",
            "remote_id": "remote-1",
            "page_url": "https://claude.ai/chat/remote-1",
        },
        "target": {"url": server.url("/ok")},
        "payload": "Please continue where we left off.",
        "payload_kind": "text",
    }


def test_each_delivery_stands_alone_no_cookie_no_compression(server, make_webhook):
    """A cookie a target sets is never sent back: deliveries carry no state from one to
    the next. Bodies are asked for as they are (read only as an excerpt)."""
    server.routes["/cookie"] = respond(200, b"ok", {"Set-Cookie": "session=abc; Path=/"})
    adapter = make_webhook()

    first = adapter.deliver(to(server, "/cookie", job_id="job-1"))
    second = adapter.deliver(to(server, "/cookie", job_id="job-2"))

    assert first.kind is second.kind is OutcomeKind.delivered
    assert [r.headers.get("Cookie") for r in server.requests] == [None, None]
    assert [r.headers["Accept-Encoding"] for r in server.requests] == ["identity"] * 2
    assert server.requests[1].headers["Idempotency-Key"] == "job-2"


def test_a_header_replaces_its_default_whatever_its_case(server, make_webhook):
    """A configured header named like a default one (any case) replaces it: one header on
    the wire, never both."""
    adapter = make_webhook(secret=SECRET, signature_header="user-agent")

    assert adapter.deliver(to(server, "/ok")).kind is OutcomeKind.delivered
    [request] = server.requests
    [agent] = request.headers.get_all("User-Agent")
    assert agent.startswith("sha256=")


def test_json_payload_is_sent_as_a_json_value(server, make_webhook):
    adapter = make_webhook()

    outcome = adapter.deliver(
        to(server, "/ok", payload='{"text": "hi", "n": 2}', payload_kind="json")
    )

    assert outcome.kind is OutcomeKind.delivered
    body = json.loads(server.requests[0].body)
    assert body["payload"] == {"text": "hi", "n": 2}
    assert body["payload_kind"] == "json"


def test_payload_that_is_not_json_is_permanent_and_not_sent(server, make_webhook):
    outcome = make_webhook().deliver(to(server, "/ok", payload="{nope", payload_kind="json"))

    assert outcome.kind is OutcomeKind.permanent
    assert outcome.reason.startswith("payload is not valid JSON")
    assert server.requests == []


def test_webhook_without_secret_is_unsigned(server, make_webhook):
    make_webhook().deliver(to(server, "/ok"))

    assert "X-Renewald-Signature" not in server.requests[0].headers


def test_webhook_secret_from_environment_signs_and_is_redacted(server, make_webhook):
    adapter = make_webhook(
        environ={"HOOK_KEY": SECRET}, secret_env="HOOK_KEY", signature_header="X-Sig"
    )

    adapter.deliver(to(server, "/ok"))

    request = server.requests[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Sig"], expected)
    assert redact_text(f"key was {SECRET}") == f"key was {MASK}"


def test_webhook_secret_configuration_errors(server, make_webhook):
    with pytest.raises(ConfigError, match="HOOK_KEY is not set"):
        make_webhook(secret_env="HOOK_KEY")
    with pytest.raises(ConfigError, match="not both"):
        make_webhook(secret=SECRET, secret_env="HOOK_KEY")
    with pytest.raises(ConfigError, match="signature_header"):
        make_webhook(signature_header="Bad Header:")


# --- status mapping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind", "after", "error_class"),
    [
        ("/ok", OutcomeKind.delivered, None, None),
        ("/created", OutcomeKind.delivered, None, None),
        ("/bad", OutcomeKind.permanent, None, "HTTP400"),
        ("/missing", OutcomeKind.permanent, None, "HTTP404"),
        ("/conflict", OutcomeKind.retry, None, "HTTP409"),
        ("/error", OutcomeKind.retry, None, "HTTP500"),
        ("/bad-gateway", OutcomeKind.retry, None, "HTTP502"),
        ("/unavailable", OutcomeKind.rate_limited, 30.0, "RateLimited"),
        ("/unavailable-bare", OutcomeKind.retry, None, "HTTP503"),
        ("/busy", OutcomeKind.rate_limited, 120.0, "RateLimited"),
        ("/busy-bare", OutcomeKind.rate_limited, None, "RateLimited"),
    ],
)
def test_status_mapping(server, make_webhook, path, kind, after, error_class):
    outcome = make_webhook().deliver(to(server, path))

    assert outcome.kind is kind
    assert outcome.after == after
    assert outcome.error_class == error_class
    assert outcome.summary.startswith("HTTP ")


def test_rejection_reason_has_status_and_redacted_body_excerpt(server, make_webhook):
    outcome = make_webhook().deliver(to(server, "/bad"))

    assert outcome.reason.startswith("HTTP 400: ")
    assert "payload rejected" in outcome.reason
    assert "sk-live-0123456789" not in outcome.reason
    assert MASK in outcome.reason


def test_retry_after_http_date_is_measured_from_the_injected_clock(server, make_webhook):
    adapter = make_webhook(clock=lambda: RETRY_DATE_EPOCH - 90)

    outcome = adapter.deliver(to(server, "/busy-date"))

    assert outcome.kind is OutcomeKind.rate_limited
    assert outcome.after == 90.0


def test_redirect_is_not_followed(server, make_webhook):
    outcome = make_webhook().deliver(to(server, "/moved"))

    assert outcome.kind is OutcomeKind.permanent
    assert outcome.reason == "redirect not followed: 302 to http://127.0.0.1:9/next?token=***"
    assert len(server.requests) == 1


# --- timeouts and connection errors ---------------------------------------------------


def test_server_that_never_answers_is_cut_at_the_timeout(server, make_webhook):
    outcome = make_webhook(timeout="300ms").deliver(to(server, "/hang"))

    assert outcome.kind is OutcomeKind.retry
    assert outcome.error_class == "ReadTimeout"
    assert outcome.reason == "no complete response within 300ms"


def test_trickled_headers_are_cut_at_the_total_timeout(server, make_webhook):
    # Every byte comes well within the per-read timeout: only the total deadline ends it.
    outcome = make_webhook(timeout="300ms").deliver(to(server, "/trickle-headers"))

    assert outcome.kind is OutcomeKind.retry
    assert outcome.error_class == "ReadTimeout"


def test_trickled_body_after_2xx_is_cut_but_delivered(server, make_webhook):
    outcome = make_webhook(timeout="300ms").deliver(to(server, "/trickle-body"))

    assert outcome.kind is OutcomeKind.delivered
    assert outcome.summary.startswith("HTTP 200, ")
    assert outcome.summary.endswith("bytes, then ReadTimeout")


def test_connection_refused_is_retried(server, make_webhook):
    delivery = make_delivery(target={"url": f"http://127.0.0.1:{closed_port()}/x"})

    outcome = make_webhook().deliver(delivery)

    assert outcome.kind is OutcomeKind.retry
    assert outcome.error_class == "ConnectError"


# --- allow-list and bad targets -------------------------------------------------------


def test_host_outside_allow_list_is_refused_before_connecting(server, make_webhook):
    outcome = make_webhook(allow_hosts=["10.0.0.0/8"]).deliver(to(server, "/ok"))

    assert outcome.kind is OutcomeKind.permanent
    assert outcome.reason == "host 127.0.0.1 is not in [adapters.http] allow_hosts"
    assert server.requests == []


def test_names_are_not_resolved_to_match_networks(server, make_webhook):
    adapter = make_webhook(allow_hosts=["127.0.0.0/8"])

    by_name = adapter.deliver(make_delivery(target={"url": server.url("/ok", "localhost")}))
    by_address = adapter.deliver(to(server, "/ok"))

    assert by_name.kind is OutcomeKind.permanent
    assert by_name.reason == "host localhost is not in [adapters.http] allow_hosts"
    assert by_address.kind is OutcomeKind.delivered
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ({}, "target has no url"),
        ({"url": ""}, "target has no url"),
        ({"url": 42}, "target url is missing"),
        ({"url": "not a url"}, "target url must be http or https: not a url"),
        ({"url": "ftp://u:hunter2@127.0.0.1/x"}, "target url must be http or https: ftp://u:***@"),
        ({"url": "http:///nohost"}, "target url has no host"),
        ({"url": "http://[::1/x"}, "target url is not a valid URL"),
    ],
)
def test_bad_target_url_is_permanent(server, make_webhook, target, reason):
    outcome = make_webhook().deliver(make_delivery(target=target))

    assert outcome.kind is OutcomeKind.permanent
    assert outcome.reason.startswith(reason)
    assert "hunter2" not in outcome.reason
    assert server.requests == []


def test_webhook_target_key_is_the_origin(server, make_webhook):
    adapter = make_webhook()

    def key(url: object) -> str:
        return adapter.target_key(make_delivery(target={"url": url}))

    assert key(server.url("/a?x=1")) == f"webhook:http://127.0.0.1:{server.port}"
    assert key("https://Hooks.Example.com/x") == "webhook:https://hooks.example.com:443"
    assert key("http://[::1]/x") == "webhook:http://[::1]:80"
    assert key(None) == "webhook:invalid"
    assert adapter.max_in_flight_per_target == 4
    assert make_webhook(max_in_flight_per_target=2).max_in_flight_per_target == 2


def test_adapter_settings_are_validated(server, make_webhook, make_bridge):
    with pytest.raises(ConfigError, match="timeout"):
        make_webhook(timeout="soon")
    with pytest.raises(ConfigError, match="max_in_flight_per_target"):
        make_webhook(max_in_flight_per_target=0)
    with pytest.raises(ConfigError, match="allow_hosts"):
        make_webhook(allow_hosts=["10.0.0.0/33"])
    with pytest.raises(ConfigError, match="allow_hosts"):
        make_bridge(url="http://bridge.internal:4317/deliver")
    with pytest.raises(ConfigError, match="unknown keys"):
        make_bridge(clients={"ff": {"uri": "http://127.0.0.1/"}})


# --- the browser bridge ---------------------------------------------------------------


def test_bridge_posts_to_configured_url(server, make_bridge):
    adapter = make_bridge(url=server.url("/ok"))
    delivery = make_delivery(target={"clientId": "firefox-claude", "pageUrl": "https://x/"})

    outcome = adapter.deliver(delivery)

    assert outcome.kind is OutcomeKind.delivered
    [request] = server.requests
    assert request.path == "/ok"
    assert request.headers["Idempotency-Key"] == "job-1"
    assert json.loads(request.body)["target"] == {
        "clientId": "firefox-claude",
        "pageUrl": "https://x/",
    }
    assert adapter.target_key(delivery) == "browser:firefox-claude"
    assert adapter.max_in_flight_per_target == 1


def test_bridge_needs_a_client_id(server, make_bridge):
    outcome = make_bridge(url=server.url("/ok")).deliver(make_delivery(target={}))

    assert outcome.kind is OutcomeKind.permanent
    assert outcome.reason == "target has no clientId"
    assert server.requests == []


def test_bridge_client_overrides_url_and_timeout(server, make_bridge):
    adapter = make_bridge(
        url=server.url("/ok"),
        clients={
            "chrome": {"url": server.url("/created")},
            "slow": {"url": server.url("/hang"), "timeout": "200ms"},
        },
    )

    chrome = adapter.deliver(make_delivery(target={"clientId": "chrome"}))
    other = adapter.deliver(make_delivery(target={"clientId": "firefox"}))
    slow = adapter.deliver(make_delivery(target={"clientId": "slow"}))

    assert chrome.summary.startswith("HTTP 201")
    assert other.summary.startswith("HTTP 200")
    assert (slow.kind, slow.reason) == (OutcomeKind.retry, "no complete response within 200ms")
    assert [r.path for r in server.requests] == ["/created", "/ok", "/hang"]


def test_one_adapter_serves_many_threads(server, make_bridge):
    adapter = make_bridge(url=server.url("/ok"))
    deliveries = [make_delivery(job_id=f"job-{n}", target={"clientId": "c"}) for n in range(16)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(adapter.deliver, deliveries))

    assert all(o.kind is OutcomeKind.delivered for o in outcomes)
    assert sorted(r.headers["Idempotency-Key"] for r in server.requests) == sorted(
        d.job_id for d in deliveries
    )


# --- the registry ---------------------------------------------------------------------


def test_registry_builds_http_kinds_with_the_shared_http_section(server, monkeypatch):
    monkeypatch.delenv("RENEWALD_WEBHOOK_SECRET", raising=False)
    registry = AdapterRegistry(
        {
            "http": {"allow_hosts": ["10.0.0.0/8"], "timeout": "5s"},
            "http.webhook": {"max_in_flight_per_target": 8},
            "browser.proxy_delivery": {"url": "http://10.1.2.3:4317/deliver"},
            "command": {"argv": ["true"]},
        }
    )
    try:
        webhook = registry.get("http.webhook")
        bridge = registry.get("browser.proxy_delivery")
        command = registry.get("command")
        assert isinstance(webhook, WebhookAdapter)
        assert isinstance(bridge, BridgeAdapter)
        assert webhook.max_in_flight_per_target == 8
        assert command.target_key(make_delivery()) == "command:conv-1"
        refused = webhook.deliver(to(server, "/ok"))
        assert refused.reason == "host 127.0.0.1 is not in [adapters.http] allow_hosts"
        assert server.requests == []
    finally:
        registry.close()


def test_third_party_adapter_registers_through_entry_point(tmp_path, monkeypatch):
    (tmp_path / "acme_pager.py").write_text(
        textwrap.dedent(
            """
            from renewald.adapters.base import Outcome

            class PagerAdapter:
                kind = "acme.pager"
                max_in_flight_per_target = 2

                def __init__(self, settings):
                    self.settings = dict(settings)
                    self.closed = False

                def target_key(self, delivery):
                    return "pager:" + self.settings["channel"]

                def deliver(self, delivery):
                    return Outcome.delivered("paged " + self.settings["channel"])

                def close(self):
                    self.closed = True

            def factory(settings):
                return PagerAdapter(settings)
            """
        )
    )
    dist_info = tmp_path / "acme_pager-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-pager\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[renewald.adapters]\nacme.pager = acme_pager:factory\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = AdapterRegistry({"acme.pager": {"channel": "ops"}})
        assert "acme.pager" in registry.kinds()
        adapter = registry.get("acme.pager")
        assert adapter is not None
        assert adapter.target_key(make_delivery()) == "pager:ops"
        assert adapter.deliver(make_delivery()).summary == "paged ops"
        registry.close()
        assert adapter.closed
        # The group is read when a kind is not built in, whether or not kinds() came first.
        fresh = AdapterRegistry({"acme.pager": {"channel": "ops"}})
        assert fresh.get("acme.pager") is not None
        assert fresh.get("no.such.kind") is None
    finally:
        sys.modules.pop("acme_pager", None)


# --- Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "after"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (RETRY_DATE, 60.0),
        ("Wed, 21 Oct 2015 07:28:00 -0000", 60.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: now
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value, after):
    assert parse_retry_after(value, now=RETRY_DATE_EPOCH - 60) == after
