"""Jobs of an adapter that does not block are sent by the sender thread, a claim at a
time; claims are sized to what can start now. A real store on both backends, a manual
clock, adapters that record where and what they were asked to send."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from renewald.adapters import Adapter, AdapterRegistry, Delivery, Outcome
from renewald.daemon.backoff import RetryPolicy
from renewald.daemon.dispatcher import Dispatcher, DispatchSettings
from renewald.daemon.parts import DaemonParts
from renewald.logging import JobLog, read_lines
from renewald.store import Store
from tests.clock import ManualClock
from tests.store.factories import T0, make_job
from tests.waiting import wait_for

OWNER = "test-host:1:at-once"


class Recording:
    """Delivers at once and remembers each job it was given, and on which thread."""

    kind = "instant"
    blocking = False
    max_in_flight_per_target = 1

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def target_key(self, delivery: Delivery) -> str:
        return f"instant:{delivery.conversation.local_id}"

    def deliver(self, delivery: Delivery) -> Outcome:
        self.sent.append((delivery.job_id, threading.current_thread().name))
        return Outcome.delivered()

    def close(self) -> None:
        pass


class Held(Recording):
    """A blocking adapter whose deliveries wait until the test lets them go."""

    kind = "held"
    blocking = True

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def deliver(self, delivery: Delivery) -> Outcome:
        self.go.wait(10)
        return super().deliver(delivery)


class OneTarget(Held):
    """Held jobs that all go to one target, which takes as many at once as there are
    workers."""

    kind = "one-target"
    max_in_flight_per_target = 2

    def target_key(self, delivery: Delivery) -> str:
        return "one-target:only"


class Gated(Recording):
    """Does not block by its own account, but each send waits until the test opens the
    gate: holds the sender thread mid-claim."""

    kind = "gated"

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.entered = threading.Event()

    def deliver(self, delivery: Delivery) -> Outcome:
        self.entered.set()
        self.go.wait(10)
        return super().deliver(delivery)


@pytest.fixture
def one_target() -> OneTarget:
    return OneTarget()


@pytest.fixture
def instant() -> Recording:
    return Recording()


@pytest.fixture
def held() -> Held:
    return Held()


@pytest.fixture
def gated() -> Gated:
    return Gated()


def _dispatcher(store: Store, job_log: JobLog, *adapters: Adapter) -> Dispatcher:
    registry = AdapterRegistry({})
    for adapter in adapters:
        registry.register(adapter.kind, lambda _settings, adapter=adapter: adapter)
    d = Dispatcher(
        DaemonParts(store, ManualClock(T0), job_log, OWNER),
        adapters=registry,
        settings=DispatchSettings(workers=2, batch=8),
        policy=RetryPolicy(base=30, factor=2, cap=3600, jitter=0),
    )
    d.start()
    return d


@pytest.fixture
def dispatcher(
    store: Store,
    job_log: JobLog,
    instant: Recording,
    held: Held,
    one_target: OneTarget,
    gated: Gated,
) -> Iterator[Dispatcher]:
    d = _dispatcher(store, job_log, instant, held, one_target, gated)
    yield d
    held.go.set()
    one_target.go.set()
    gated.go.set()
    # A worker still sending after close would write its lines to a closed job log.
    d.wait_idle(10)
    d.close(now=T0)


def _spy_begin_sends(
    store: Store, monkeypatch: pytest.MonkeyPatch, before: Any = None
) -> list[Sequence[tuple[str, int]]]:
    calls: list[Sequence[tuple[str, int]]] = []
    real = store.begin_sends

    def begin_sends(**kw: Any) -> list[bool]:
        calls.append(list(kw["held"]))
        if before is not None:
            before(kw["held"])
        return real(**kw)

    monkeypatch.setattr(store, "begin_sends", begin_sends)
    return calls


def test_a_claim_of_instant_jobs_is_sent_by_the_sender_thread_after_one_begin_write(
    dispatcher: Dispatcher, store: Store, instant: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [make_job(store, target_kind="instant") for _ in range(2)]
    calls = _spy_begin_sends(store, monkeypatch)
    assert dispatcher.poll_once(T0).claimed == 2
    assert dispatcher.wait_idle(10)
    assert sorted(j for j, _ in instant.sent) == sorted(j.job_id for j in jobs)
    assert {thread for _, thread in instant.sent} == {"renewald-sender"}
    assert [sorted(j for j, _ in c) for c in calls] == [sorted(j.job_id for j in jobs)]
    for job in jobs:
        done = store.get_job(job.job_id)
        assert done is not None and (done.status, done.attempt_count) == ("done", 1)


def test_a_claims_results_reach_the_recorder_in_one_hand_off(
    dispatcher: Dispatcher, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [make_job(store, target_kind="instant") for _ in range(4)]
    handed: list[list[str]] = []
    real = dispatcher.recorder.put

    def put(results: Sequence[Any]) -> None:
        handed.append(sorted(r.job_id for r in results))
        real(results)

    monkeypatch.setattr(dispatcher.recorder, "put", put)
    assert dispatcher.poll_once(T0).claimed == 4
    assert dispatcher.wait_idle(10)
    assert handed == [sorted(j.job_id for j in jobs)]


def test_an_instant_job_taken_away_before_its_send_began_is_not_sent(
    dispatcher: Dispatcher,
    store: Store,
    job_log: JobLog,
    instant: Recording,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept, taken = (make_job(store, target_kind="instant") for _ in range(2))

    def take_away(held: Sequence[tuple[str, int]]) -> None:
        # Another writer gets there first: the job is given back before our mark.
        token = dict(held)[taken.job_id]
        assert store.release_jobs(owner=OWNER, held=[(taken.job_id, token)], now=T0) == [True]

    _spy_begin_sends(store, monkeypatch, before=take_away)
    dispatcher.poll_once(T0)
    assert dispatcher.wait_idle(10)
    assert [j for j, _ in instant.sent] == [kept.job_id]
    back = store.get_job(taken.job_id)
    assert back is not None and (back.status, back.attempt_count) == ("pending", 0)
    job_log.flush()
    lost = [
        line
        for path in job_log.directory.glob("*.jsonl")
        for line in read_lines(path)
        if line["event"] == "lease.lost"
    ]
    assert [(x["job_id"], x["during"]) for x in lost] == [(taken.job_id, "send")]


@pytest.mark.parametrize("kind", ["held", "one-target"])
def test_claims_for_blocking_adapters_take_only_what_the_free_workers_can_start(
    dispatcher: Dispatcher, store: Store, request: pytest.FixtureRequest, kind: str
) -> None:
    """workers=2 and a lead of 2 (a worker that frees finds its next job), not batch=8.
    One target taking two at a time: the job in its line is the lead, where the line
    used to grow a lead at a time to the whole capacity (2 + 3 x batch)."""
    adapter = request.getfixturevalue(kind.replace("-", "_"))
    for _ in range(12):
        make_job(store, target_kind=kind)
    first = dispatcher.poll_once(T0)
    assert (first.claimed, dispatcher.holding()) == (4, 4)
    later = [dispatcher.poll_once(T0) for _ in range(5)]
    assert [(p.claimed, p.more_waiting) for p in later] == [(0, True)] * 5  # both busy
    assert not dispatcher.has_room() and dispatcher.holding() == 4
    adapter.go.set()
    assert dispatcher.wait_idle(10)
    assert dispatcher.poll_once(T0).claimed == 4


def test_once_claimed_jobs_go_out_at_once_a_claim_takes_a_whole_batch(
    dispatcher: Dispatcher, store: Store, instant: Recording
) -> None:
    for _ in range(12):
        make_job(store, target_kind="instant")
    assert dispatcher.poll_once(T0).claimed == 4  # sized to the workers until it knows
    assert dispatcher.poll_once(T0).claimed == 8  # batch
    assert dispatcher.wait_idle(10)
    assert len(instant.sent) == 12


def test_the_next_claim_is_taken_while_the_sender_thread_sends_the_last(
    dispatcher: Dispatcher, store: Store, gated: Gated
) -> None:
    jobs = [make_job(store, target_kind="gated") for _ in range(12)]
    assert dispatcher.poll_once(T0).claimed == 4
    assert gated.entered.wait(10)  # the first claim's sends are under way, and held
    assert dispatcher.poll_once(T0).claimed == 8
    assert gated.sent == []
    gated.go.set()
    assert dispatcher.wait_idle(10)
    assert sorted(j for j, _ in gated.sent) == sorted(j.job_id for j in jobs)
    assert {thread for _, thread in gated.sent} == {"renewald-sender"}
    for job in jobs:
        done = store.get_job(job.job_id)
        assert done is not None and (done.status, done.attempt_count) == ("done", 1)


def test_close_records_the_claim_being_sent_and_gives_back_the_claims_behind_it(
    store: Store, job_log: JobLog
) -> None:
    """The first claim's sends began (all marked at once), so they finish and are
    recorded; the claim queued behind them never began, so it goes back unspent."""
    gated = Gated()
    d = _dispatcher(store, job_log, gated)
    ids = [make_job(store, target_kind="gated").job_id for _ in range(12)]
    first = d.poll_once(T0).claimed
    assert first == 4 and gated.entered.wait(10)
    assert d.poll_once(T0).claimed == 8
    closing = threading.Thread(target=d.close, kwargs={"now": T0})
    closing.start()
    wait_for(
        lambda: sum(h.jobs for h in store.held_leases()) == first,
        timeout=10,
        what="close to give back the claim that never began",
    )
    gated.go.set()
    closing.join(10)
    assert not closing.is_alive()
    ends = [(j.status, j.attempt_count) for j in map(store.get_job, ids) if j is not None]
    assert sorted(ends) == [("done", 1)] * first + [("pending", 0)] * 8
