"""Redaction: what counts as a secret, and that nothing else is touched."""

from __future__ import annotations

import threading

import pytest

from renewald import redact
from renewald.redact import MASK, add_secret, is_secret_key, redact_text, redact_value


@pytest.fixture(autouse=True)
def _no_configured_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "_secrets", ())


# --- key names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "db_password",
        "dbPassword",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "clientSecret",
        "token",
        "access_token",
        "refreshToken",
        "csrftoken",
        "api_key",
        "api-key",
        "apiKey",
        "APIKey",
        "X-Api-Key",
        "apikey",
        "private_key",
        "AWS_SECRET_ACCESS_KEY",
        "aws_access_key_id",
        "Authorization",
        "HTTP_AUTHORIZATION",
        "proxy-authorization",
        "auth",
        "Cookie",
        "Set-Cookie",
        "session",
        "sessionid",
        "session_id",
        "signature",
        "X-Renewald-Signature",
        "sig",
        "credentials",
        "passwordHash",
    ],
)
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        # contain "sig", "key", "auth", "token" or "pass" without being secrets
        "design",
        "assignee",
        "signed",
        "signal",
        "author",
        "authored_at",
        "keyword",
        "monkey",
        "tokenizer",
        "passage",
        "compass",
        "max_tokens",
        "input_tokens",
        # describe a secret rather than hold it
        "token_count",
        "token_type",
        "secret_env",
        "signature_header",
        "password_file",
        "auth_url",
        # plain keys
        "clientId",
        "pageUrl",
        "url",
        "key",
        "code",
        "",
        "_",
    ],
)
def test_not_secret_keys(key):
    assert not is_secret_key(key)


def test_url_parameters_also_treat_key_and_code_as_secret():
    assert is_secret_key("key", in_url=True)
    assert is_secret_key("code", in_url=True)
    assert not is_secret_key("keyword", in_url=True)
    assert not is_secret_key("design", in_url=True)


# --- URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:hunter2@example.com/x", f"https://user:{MASK}@example.com/x"),
        ("https://ghp_0123456789@github.com/o/r.git", f"https://{MASK}@github.com/o/r.git"),
        (
            "https://h/cb?access_token=abc&design=blue&state=1",
            f"https://h/cb?access_token={MASK}&design=blue&state=1",
        ),
        ("https://maps/api?key=AIzaSy123&q=paris", f"https://maps/api?key={MASK}&q=paris"),
        ("https://h/cb?code=4%2F0Ab&scope=x", f"https://h/cb?code={MASK}&scope=x"),
        ("https://blob/x?sv=2020&sig=abc%2Bdef", f"https://blob/x?sv=2020&sig={MASK}"),
        (
            "https://h/#id_token=eyJ.x.y&expires_in=3600",
            f"https://h/#id_token={MASK}&expires_in=3600",
        ),
        ("https://h/p?q=a+b&page=2", "https://h/p?q=a+b&page=2"),  # untouched, encoding kept
        ("http://127.0.0.1:4317/deliver", "http://127.0.0.1:4317/deliver"),
        ("https://h/p?token=", "https://h/p?token="),
    ],
)
def test_urls_lose_their_credentials(url, expected):
    assert redact_text(url) == expected


# --- free text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGci.eyJzdWIi.sig", f"Authorization: {MASK}"),
        ("authorization=Basic dXNlcjpwYXNz", f"authorization={MASK}"),
        ("Cookie: a=1; sessionid=2\nnext", f"Cookie: {MASK}\nnext"),
        ("x-api-key: k-123", f"x-api-key: {MASK}"),
        ("call failed with bearer abcdef0123456789", f"call failed with bearer {MASK}"),
        ("GitHub wants token ghp_0123456789abc", f"GitHub wants token {MASK}"),
        ('{"api_key": "sk-1", "design": "x"}', f'{{"api_key": "{MASK}", "design": "x"}}'),
        ("{'password': 'hunter2'}", f"{{'password': '{MASK}'}}"),
        ('{"pin_secret": 1234, "n": 5}', f'{{"pin_secret": {MASK}, "n": 5}}'),
        ("password=hunter2 user=bob", f"password={MASK} user=bob"),
        # words, not credentials
        ("the token expired; basic authentication required", None),
        ("timeout: 10s, code: 404, design: flat", None),
        ("see http://127.0.0.1:8080/path", None),
        ('{"auth": {"user": "bob"}}', None),
    ],
)
def test_redact_text(text, expected):
    assert redact_text(text) == (text if expected is None else expected)


def test_redact_text_none_and_idempotent():
    assert redact_text(None) is None
    once = redact_text("Authorization: Bearer abcdef012345 https://u:p@h/?token=t")
    assert redact_text(once) == once


def test_configured_secrets_are_masked_anywhere():
    add_secret("s3cr3t/v@lue")
    add_secret("abc")  # too short: would mangle ordinary text

    text = "key s3cr3t/v@lue in url https://h/p?x=s3cr3t%2Fv%40lue abc"

    assert redact_text(text) == f"key {MASK} in url https://h/p?x={MASK} abc"


def test_a_secret_configured_after_a_text_was_redacted_is_masked_in_it_next_time():
    text = "short text with q7-late-secret in it"
    assert redact_text(text) == text  # remembered as it was
    add_secret("q7-late-secret")
    assert redact_text(text) == f"short text with {MASK} in it"


def test_long_texts_are_redacted_like_short_ones():
    long = "x" * 600 + " Authorization: Bearer abcdef012345"
    assert redact_text(long) == "x" * 600 + f" Authorization: {MASK}"


def test_longer_secret_containing_a_shorter_one_is_masked_whole():
    add_secret("abcd")
    add_secret("abcd-efgh")

    assert redact_text("x abcd-efgh y") == f"x {MASK} y"


def test_add_secret_is_safe_with_concurrent_readers():
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(2000):
                redact_text("nothing secret here")
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    for n in range(500):
        add_secret(f"secret-{n:04d}")
    for thread in readers:
        thread.join()

    assert errors == []


# --- JSON-like values -----------------------------------------------------------------


def test_redact_value_masks_secret_keys_recursively():
    value = {
        "clientId": "firefox-claude",
        "design": "compact",
        "assignee": "bob",
        "token": "t-123",
        "headers": {"Authorization": "Bearer x", "Accept": "text/html"},
        "auth": {"user": "bob", "password": "hunter2"},
        "hooks": [{"url": "https://u:pw@h/x?sig=abc"}],
        "password": None,
        "secret": "",
        "has_secret": True,
        "max_tokens": 1024,
        "secret_env": "RENEWALD_WEBHOOK_SECRET",
    }

    assert redact_value(value) == {
        "clientId": "firefox-claude",
        "design": "compact",
        "assignee": "bob",
        "token": MASK,
        "headers": {"Authorization": MASK, "Accept": "text/html"},
        "auth": MASK,
        "hooks": [{"url": f"https://u:{MASK}@h/x?sig={MASK}"}],
        "password": None,
        "secret": "",
        "has_secret": True,
        "max_tokens": 1024,
        "secret_env": "RENEWALD_WEBHOOK_SECRET",
    }


def test_redact_value_masks_free_text_inside_values():
    add_secret("configured-secret-1")

    assert redact_value(["configured-secret-1", "Authorization: Bearer abcdefgh1"]) == [
        MASK,
        f"Authorization: {MASK}",
    ]


# --- secrets inside another URL carried in a query value -------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://a/x?url=http%3A%2F%2Fhost%2F%3Ftoken%3Dsekrit123&b=1",
            "http://a/x?url=http%3A%2F%2Fhost%2F%3Ftoken%3D***&b=1",
        ),
        (
            "http://a/x?url=http%3a%2f%2fhost%2f%3fa%3D1%26access_token%3Dsekrit123",
            "http://a/x?url=http%3A%2F%2Fhost%2F%3Fa%3D1%26access_token%3D***",
        ),
        (
            "http://a/x?url=http%253A%252F%252Fh%252F%253Fapi_key%253Dzzz",
            "http://a/x?url=http%253A%252F%252Fh%252F%253Fapi_key%253D***",
        ),
        ("http://a/?next=/b?token=abc&q=1", "http://a/?next=/b?token=***&q=1"),
        ("http://a/?url=http%3A%2F%2Fu%3Apw%40h%2F", "http://a/?url=http%3A%2F%2Fu%3A***%40h%2F"),
    ],
)
def test_secrets_nested_in_query_values_are_masked(url, expected):
    assert redact_text(url) == expected
    assert "sekrit123" not in (redact_text(f"POST {url} failed") or "")


@pytest.mark.parametrize(
    "url",
    [
        "http://a/?q=100%25&x=a%20b",
        "http://a/?url=http%3A%2F%2Fh%2F%3Fpage%3D2",
        "http://a/?u=%25%25%2525%252525",
        "http://a/?bad=%zz%3",
    ],
)
def test_nested_values_without_secrets_are_untouched(url):
    assert redact_text(url) == url


def test_nested_secret_is_masked_in_a_target_value():
    target = {"url": "http://127.0.0.1/hook?next=http%3A%2F%2Fx%2F%3Ftoken%3Dsekrit123"}
    assert "sekrit123" not in str(redact_value(target))
