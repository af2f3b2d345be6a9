"""The `log` adapter's summary is the attempt row's `response_summary`: a payload that
carries a secret reaches neither the database nor the job log unmasked."""

from __future__ import annotations

from renewald.adapters.base import OutcomeKind
from renewald.adapters.log import LogAdapter
from renewald.redact import MASK
from tests.adapters.conftest import make_delivery


def test_the_summary_is_the_payload_with_its_secrets_masked() -> None:
    payload = "call https://bot.example/hook?token=s3cr3t-value and say hi"
    outcome = LogAdapter().deliver(make_delivery(target_kind="log", payload=payload))
    assert outcome.kind is OutcomeKind.delivered
    assert outcome.summary == f"logged: call https://bot.example/hook?token={MASK} and say hi"


def test_a_long_payload_is_cut_and_says_how_much_was_left_out() -> None:
    outcome = LogAdapter().deliver(make_delivery(target_kind="log", payload="x" * 1005))
    assert outcome.summary == "logged: " + "x" * 1000 + " (+5 chars)"


def test_without_the_payload_the_summary_counts_it() -> None:
    adapter = LogAdapter({"include_payload": False})
    outcome = adapter.deliver(make_delivery(target_kind="log", payload="token=abc12345"))
    assert outcome.summary == "logged 14 chars"
