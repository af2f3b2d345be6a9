"""The dispatcher over hostile rows: a bad job ends failed/malformed, an error in one job
ends only that job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from renewald.config import Config, DaemonConfig, LoggingConfig
from renewald.daemon.breaker import TargetAttempt, Verdict
from renewald.daemon.service import Service
from renewald.store import Store
from tests.clock import ManualClock
from tests.store.factories import T0, make_conversation, make_job, make_link
from tests.store.test_hostile_rows import attempts, set_raw


@pytest.fixture
def service(store: Store, tmp_path: Path) -> Iterator[Service]:
    config = Config(daemon=DaemonConfig(workers=2), logging=LoggingConfig(dir=tmp_path / "logs"))
    svc = Service(config, store, clock=ManualClock(T0))
    svc.dispatcher.start()
    yield svc
    svc.dispatcher.wait_idle(10)
    svc.dispatcher.close(now=T0)
    svc.job_log.close()


def _log_target(store: Store) -> str:
    conv = make_conversation(store)
    make_link(store, conv, target_kind="log")
    return conv


def test_malformed_jobs_fail_without_a_delivery(service: Service, store: Store) -> None:
    good = make_job(store, conversation=_log_target(store))
    bad = make_job(store, conversation=_log_target(store))
    set_raw(store, bad.job_id, "target_snapshot = '[', attempt_count = 1")
    service.dispatcher.poll_once(T0)
    assert service.dispatcher.wait_idle(10)
    done, failed = store.get_job(good.job_id), store.get_job(bad.job_id)
    assert done is not None and failed is not None
    assert done.status == "done"
    assert (failed.status, failed.terminal_reason) == ("failed", "malformed")
    assert failed.last_error == (
        "malformed: renewal_jobs.target_snapshot is not JSON (Expecting value at column 2)"
    )
    assert failed.attempt_count == 1  # the claim's attempt was handed back
    [attempt] = attempts(store, bad.job_id)
    assert (attempt["outcome"], attempt["error_class"]) == ("malformed", "MalformedRow")


def test_an_error_in_one_job_ends_that_job_and_the_workers_go_on(
    service: Service, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = make_job(store, conversation=_log_target(store))
    admit = service.dispatcher.breakers.admit

    def flaky_admit(at: TargetAttempt, now: int) -> Verdict:
        if at.job_id == victim.job_id:
            raise TypeError("'<' not supported between instances of 'int' and 'str'")
        return admit(at, now)

    monkeypatch.setattr(service.dispatcher.breakers, "admit", flaky_admit)
    service.dispatcher.poll_once(T0)
    assert service.dispatcher.wait_idle(10)
    ended = store.get_job(victim.job_id)
    assert ended is not None
    assert (ended.status, ended.terminal_reason) == ("failed", "malformed")
    assert "handling the job raised TypeError" in (ended.last_error or "")
    assert service.dispatcher.fatal is None
    after = [make_job(store, conversation=_log_target(store)) for _ in range(3)]
    service.dispatcher.poll_once(T0)
    assert service.dispatcher.wait_idle(10)
    assert {store.get_job(j.job_id).status for j in after} == {"done"}  # type: ignore[union-attr]
    events = [line for line in _log_lines(service) if line["event"] == "job.handling_failed"]
    assert [e["job_id"] for e in events] == [victim.job_id]


def test_an_error_while_planning_ends_that_job_not_the_poll(
    service: Service, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = make_job(store, conversation=_log_target(store))
    other = make_job(store, conversation=_log_target(store))
    plan = service.dispatcher._plan

    def flaky_plan(claimed):  # type: ignore[no-untyped-def]
        if claimed.job.job_id == victim.job_id:
            raise ValueError("boom\r\nforged")
        return plan(claimed)

    monkeypatch.setattr(service.dispatcher, "_plan", flaky_plan)
    service.dispatcher.poll_once(T0)
    assert service.dispatcher.wait_idle(10)
    assert store.get_job(other.job_id).status == "done"  # type: ignore[union-attr]
    ended = store.get_job(victim.job_id)
    assert ended is not None and ended.terminal_reason == "malformed"
    assert "\n" not in (ended.last_error or "") and "boom\\r\\nforged" in (ended.last_error or "")


def _log_lines(service: Service) -> list[dict[str, Any]]:
    import json

    service.job_log.flush()
    lines: list[dict[str, Any]] = []
    for path in sorted(service.config.logging.dir.glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line]
    return lines


def test_a_token_nested_in_a_target_url_is_never_stored(service: Service, store: Store) -> None:
    conv = make_conversation(store)
    nested = "http%3A%2F%2Fhost%2F%3Ftoken%3Dsekrit123"
    make_link(store, conv, target_kind="log", page_url=f"http://h/?next={nested}")
    job = make_job(store, conversation=conv, target_snapshot=f'{{"url": "http://h/?u={nested}"}}')
    service.dispatcher.poll_once(T0)
    assert service.dispatcher.wait_idle(10)
    [attempt] = attempts(store, job.job_id)
    assert "%3Dsekrit123" not in attempt["target"] and "%3D***" in attempt["target"]
