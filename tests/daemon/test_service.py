"""When the daemon polls next: at the earliest due time, never later than the longest gap
between polls (`poll_interval`, five of them while a change watcher is up); and what an
idle daemon costs the database, counted over simulated minutes on a manual clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from renewald.clock import ms_to_datetime
from renewald.config import Config, DaemonConfig, LoggingConfig
from renewald.daemon.pacing import Pacer
from renewald.daemon.service import Service
from renewald.store import NewJob, Store
from tests.store.test_schedules import make_schedule

T0 = 1_800_000_000_000
SECOND = 1000


class ManualClock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1000


class SchedulerProbe:
    """Records what the service asks of APScheduler's `modify_job`."""

    def __init__(self) -> None:
        self.runs: list[datetime] = []
        self.moved: list[tuple[str, datetime]] = []

    def modify_job(self, job_id: str, **changes: datetime) -> None:
        self.moved.append((job_id, changes["next_run_time"]))
        if job_id == "poll":
            self.runs.append(changes["next_run_time"])


class SimulatedScheduler:
    """APScheduler's interval jobs on a manual clock: a job runs at its next run time,
    which is first moved one interval on (as APScheduler does before submitting it);
    the tick may then move it again (`modify_job`)."""

    def __init__(self, clock: ManualClock, ticks: dict[str, tuple[Callable[[], None], int]]):
        self.clock = clock
        self.ticks = ticks
        self.next = {job_id: clock.now for job_id in ticks}
        self.ran: Counter[str] = Counter()

    def modify_job(self, job_id: str, *, next_run_time: datetime) -> None:
        self.next[job_id] = round(next_run_time.timestamp() * 1000)

    def run_until(self, end_ms: int) -> None:
        while True:
            job_id, at = min(self.next.items(), key=lambda item: (item[1], item[0]))
            if at > end_ms:
                self.clock.now = end_ms
                return
            self.clock.now = max(self.clock.now, at)
            tick, interval_ms = self.ticks[job_id]
            self.next[job_id] = at + interval_ms
            tick()
            self.ran[job_id] += 1


class Watch:
    """A change watcher whose watch is up or down as the test says."""

    def __init__(self, watching: bool) -> None:
        self.watching = watching


def count_transactions(store: Store, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counts: Counter[str] = Counter()
    run = store._run

    def counted(fn: Callable[..., Any], *, write: bool) -> Any:
        counts["write" if write else "read"] += 1
        return run(fn, write=write)

    monkeypatch.setattr(store, "_run", counted)
    return counts


_made: list[Service] = []


def make_service(store: Store, tmp_path: Any, clock: ManualClock) -> Service:
    config = Config(
        daemon=DaemonConfig(poll_interval=1.0),
        logging=LoggingConfig(dir=tmp_path / "logs"),
    )
    _made.append(Service(config, store, clock=clock))
    return _made[-1]


@pytest.fixture(autouse=True)
def _close_job_logs() -> Iterator[None]:
    yield
    while _made:
        _made.pop().job_log.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def bare(store: Store, tmp_path: Any, clock: ManualClock) -> Service:
    """A service on `clock` with no scheduler yet (each test gives it one)."""
    return make_service(store, tmp_path, clock)


@pytest.fixture
def service(bare: Service) -> Service:
    bare.pace.scheduler = SchedulerProbe()  # type: ignore[assignment]
    return bare


def probe(service: Service) -> SchedulerProbe:
    assert isinstance(service.pace.scheduler, SchedulerProbe)
    return service.pace.scheduler


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_wake_at_the_due_time_when_sooner_than_the_interval(service: Service) -> None:
    service.wake_at(T0 + 250, polled_at=T0)
    assert probe(service).runs == [ms_to_datetime(T0 + 250)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_far_due_time_never_stretches_the_interval(service: Service) -> None:
    service.wake_at(T0 + 3_600_000, polled_at=T0)
    assert probe(service).runs == [ms_to_datetime(T0 + 1000)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_later_wake_does_not_replace_a_sooner_one(service: Service) -> None:
    service.wake_at(T0 + 100, polled_at=T0)
    service.wake_at(T0 + 500)
    service.wake_at(T0 + 50)
    assert probe(service).runs == [
        ms_to_datetime(T0 + 100),
        ms_to_datetime(T0 + 50),
    ]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_live_watcher_stretches_the_gap_to_five_intervals(service: Service) -> None:
    service.pace.changes = Watch(watching=True)  # type: ignore[assignment]
    service.wake_at(T0 + 3_600_000, polled_at=T0)
    service.pace.changes = Watch(watching=False)  # type: ignore[assignment]
    service.wake_at(T0 + 3_600_000, polled_at=T0)
    assert probe(service).runs == [ms_to_datetime(T0 + 5_000), ms_to_datetime(T0 + 1000)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_lost_watch_polls_and_looks_at_the_schedules_at_once(service: Service) -> None:
    service.pace.on_watch_lost()
    assert probe(service).moved == [
        ("poll", ms_to_datetime(T0)),
        ("schedules", ms_to_datetime(T0)),
    ]


def idle_minute(service: Service, clock: ManualClock, *, watching: bool) -> SimulatedScheduler:
    service.pace.changes = Watch(watching=watching)  # type: ignore[assignment]
    sim = SimulatedScheduler(
        clock,
        {
            "poll": (service.guarded(service.poll_tick), service.timings.poll_ms),
            "schedules": (service.guarded(service.schedule_tick), service.timings.schedule_tick_ms),
            "rescue": (service.guarded(service.upkeep.rescue_tick), 15 * SECOND),
        },
    )
    service.pace.scheduler = sim  # type: ignore[assignment]
    sim.run_until(clock.now + 60 * SECOND)
    return sim


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("watching", "polls"), [(True, 13), (False, 61)])
def test_an_idle_daemon_with_a_live_watcher_polls_every_five_seconds(
    bare: Service,
    clock: ManualClock,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    watching: bool,
    polls: int,
) -> None:
    """With a watcher up: at 0, 5, ..., 60 s; without, every second."""
    service = bare
    claims = Counter[int]()
    claim = store.claim_due_jobs
    monkeypatch.setattr(store, "claim_due_jobs", lambda **kw: claims.update([1]) or claim(**kw))
    sim = idle_minute(service, clock, watching=watching)
    assert sim.ran["poll"] == polls and claims[1] == polls
    # SQLite's watcher sees every commit, schedule writes included: the schedule tick
    # sleeps as long as the poll.
    assert sim.ran["schedules"] == polls


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_idle_ticks_cost_reads_not_write_transactions(
    bare: Service, clock: ManualClock, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = bare
    service.upkeep.rescue_tick()  # the first prunes the registry of dead daemons
    counts = count_transactions(store, monkeypatch)
    sim = idle_minute(service, clock, watching=True)
    # The claim is the only write an idle poll makes; a rescue tick (0, 15, ... 60 s)
    # makes none: the malformed sweep (store/sweep.py) reads first and finds nothing, the
    # registry of dead daemons was pruned above and is pruned at most every ten minutes.
    assert sim.ran["rescue"] == 5
    assert counts["write"] == sim.ran["poll"], counts
    # Idle schedule ticks read once each.
    assert counts["read"] >= sim.ran["schedules"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_due_time_known_from_the_poll_is_kept_while_watching(bare: Service, store: Store) -> None:
    service = bare
    store.enqueue(
        job=NewJob(
            job_id="later",
            local_conversation_id="c1",
            message_id="m-later",
            payload="hi",
            next_attempt_at=T0 + 4_321,
        ),
        now=T0,
    )
    service.pace.changes = Watch(watching=True)  # type: ignore[assignment]
    service.pace.scheduler = SchedulerProbe()  # type: ignore[assignment]
    service.poll_tick()
    assert probe(service).runs == [ms_to_datetime(T0 + 4_321)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_schedule_tick_sleeps_until_the_next_fire(
    bare: Service, clock: ManualClock, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = bare
    service.pace.changes = Watch(watching=True)  # type: ignore[assignment]
    service.pace.scheduler = SchedulerProbe()  # type: ignore[assignment]
    make_schedule(store, schedule_id="s1", every_ms=60_000, next_fire_at=T0 + 2_500)
    counts = count_transactions(store, monkeypatch)
    service.schedule_tick()
    assert counts == Counter(read=1), "an idle schedule tick is one read"
    assert probe(service).moved == [("schedules", ms_to_datetime(T0 + 2_500))]

    clock.now = T0 + 2_500
    service.schedule_tick()
    fired = store.get_schedule("s1")
    assert fired is not None and fired.last_fire_at == T0 + 2_500
    # The next fire is a minute away: the safety interval comes first.
    assert probe(service).moved[-1] == ("schedules", ms_to_datetime(T0 + 2_500 + 5_000))


def test_the_schedule_tick_sleeps_to_the_next_fire_within_the_watched_interval() -> None:
    """Both watchers see schedule writes (SQLite's every commit, PostgreSQL's LISTEN a
    trigger on the schedules): while one is up the tick sleeps to the next fire, up to the
    long safety interval; while it is down (PgBouncer, a reconnect), up to one second."""
    from renewald.config import Timings

    clock = ManualClock(T0)
    pace = Pacer(clock, Timings.of(DaemonConfig(poll_interval=1.0)), stopping=lambda: False)
    pace.scheduler = SchedulerProbe()  # type: ignore[assignment]
    watch = pace.changes = Watch(watching=True)  # type: ignore[assignment]
    pace.after_schedule_tick(T0 + 60_000, T0)
    pace.after_schedule_tick(T0 + 300, T0)
    pace.after_schedule_tick(None, T0)
    watch.watching = False
    pace.after_schedule_tick(T0 + 60_000, T0)
    pace.after_schedule_tick(None, T0)
    assert pace.scheduler.moved == [  # type: ignore[attr-defined]
        ("schedules", ms_to_datetime(T0 + 5_000)),
        ("schedules", ms_to_datetime(T0 + 300)),
        ("schedules", ms_to_datetime(T0 + 5_000)),
        ("schedules", ms_to_datetime(T0 + 1_000)),
        ("schedules", ms_to_datetime(T0 + 1_000)),
    ]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_dead_daemons_are_pruned_every_ten_minutes_not_every_rescue(
    bare: Service, clock: ManualClock, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = bare
    pruned: list[int] = []
    monkeypatch.setattr(store, "prune_daemons", lambda *, stale_before: pruned.append(stale_before))
    for _ in range(41):  # ten minutes of rescue ticks, 15 s apart
        service.upkeep.rescue_tick()
        clock.now += 15 * SECOND
    day = 24 * 3600 * SECOND
    assert pruned == [T0 - day, T0 + 600 * SECOND - day]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_change_while_a_poll_ends_is_not_left_for_the_safety_net(service: Service) -> None:
    """A wake-up that arrives after the poll's last look at `poll_again` (here: while it
    plans the next poll) still brings a poll at once, not five intervals later."""
    service.pace.changes = Watch(watching=True)  # type: ignore[assignment]
    plan = service.pace.wake_at

    def plan_then_change(at_ms: int, *, polled_at: int | None = None) -> None:
        plan(at_ms, polled_at=polled_at)
        if polled_at is not None:
            service.pace.on_change()

    service.pace.wake_at = plan_then_change  # type: ignore[method-assign]
    service.poll_tick()
    assert probe(service).runs == [ms_to_datetime(T0 + 5_000), ms_to_datetime(T0)]
