"""The lease protocol with real processes: kill -9 loops, late stops, killed one-shots and
the tracker's own upserts, against a bridge that runs one delivery per browser at a time.

The bridge target records each request from arrival to answer, per conversation, so two
deliveries of one conversation in flight at once are seen where they happen.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import insert, text

from renewald.store import Store
from renewald.store.schema import (
    TRACKER_JOB_COLUMNS,
    conversation_links,
    local_conversations,
    renewal_job_attempts,
    renewal_jobs,
)
from tests.e2e.conftest import QuietHandler, RecordingTarget, Renewald, read_body, table
from tests.httpd import reply
from tests.waiting import wait_for

BRIDGE = "browser.proxy_delivery"
FAST_RETRY = {"RENEWALD_RETRY_BASE": "100ms", "RENEWALD_RETRY_CAP": "500ms"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Request:
    job_id: str
    conversation: str
    client: str
    attempt: int
    key: str | None
    arrived: int
    answered: int | None = None


class Bridge(RecordingTarget[Request]):
    """A browser bridge on 127.0.0.1: holds each request `hold(job_id)` seconds, and
    counts what it holds per conversation (`peak`: the most at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: Callable[[str], float] = lambda job_id: 0.0
        self.peak: Counter[str] = Counter()
        bridge = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = read_body(self)
                if raw is None:
                    return
                body = json.loads(raw)
                req = Request(
                    job_id=body["job_id"],
                    conversation=body["conversation"]["local_id"],
                    client=body["target"].get("clientId", ""),
                    attempt=int(self.headers["X-Renewald-Attempt"]),
                    key=self.headers.get("Idempotency-Key"),
                    arrived=now_ms(),
                )
                with bridge.lock:
                    bridge.requests.append(req)
                    bridge.in_flight[req.conversation] += 1
                    bridge.peak[req.conversation] = max(
                        bridge.peak[req.conversation], bridge.in_flight[req.conversation]
                    )
                try:
                    bridge.release.wait(bridge.hold(req.job_id))
                finally:
                    with bridge.lock:
                        bridge.in_flight[req.conversation] -= 1
                        req.answered = now_ms()
                with contextlib.suppress(ConnectionError):  # the sender may be gone
                    reply(self, 200, b'{"accepted":true}')

        self._serve(Handler, "/deliver")


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    b = Bridge()
    yield b
    b.close()


def add_bridge_jobs(
    store: Store, *, conversations: int, per_conversation: int, clients: int, max_attempts: int = 3
) -> list[str]:
    """Tracker rows: conversation n on browser client n % clients, jobs due in order."""
    t = now_ms()
    convs, links, jobs = [], [], []
    for c in range(conversations):
        cid = f"conv-{c:03d}"
        convs.append({"local_conversation_id": cid, "platform": "claude",
                      "automation_status": "auto", "created_at": t, "updated_at": t})  # fmt: skip
        links.append({"link_id": f"link-{cid}", "local_conversation_id": cid,
                      "platform": "claude", "remote_conversation_id": f"remote-{cid}",
                      "client_id": f"tab-{c % clients}", "target_kind": BRIDGE, "is_active": 1,
                      "page_url": f"https://claude.ai/chat/remote-{cid}",
                      "observed_at": t, "created_at": t, "updated_at": t})  # fmt: skip
        for n in range(per_conversation):
            jobs.append({"job_id": f"job-{c:03d}-{n:03d}", "local_conversation_id": cid,
                         "message_id": f"msg-{c:03d}-{n:03d}", "status": "pending",
                         "payload": f"keepalive {c}/{n}", "payload_kind": "text",
                         "attempt_count": 0, "max_attempts": max_attempts,
                         "next_attempt_at": t + n, "created_at": t + n,
                         "updated_at": t})  # fmt: skip

    def tx(conn: Any) -> None:
        conn.execute(insert(local_conversations), convs)
        conn.execute(insert(conversation_links), links)
        conn.execute(insert(renewal_jobs), jobs)

    store.write(tx)
    return [str(j["job_id"]) for j in jobs]


def bridge_config(renewald: Renewald, bridge: Bridge, **daemon: Any) -> None:
    renewald.write_config(
        f'[adapters."{BRIDGE}"]\nurl = "{bridge.url}"\nmax_in_flight_per_target = 1\n', **daemon
    )
    renewald.extra_env.update(FAST_RETRY)


def jobs_by_id(store: Store) -> dict[str, dict[str, Any]]:
    return {r["job_id"]: r for r in table(store, renewal_jobs)}


def all_done(store: Store) -> bool:
    return all(r["status"] == "done" for r in table(store, renewal_jobs))


def assert_ledger_and_log(renewald: Renewald, store: Store) -> list[dict[str, Any]]:
    """Attempts numbered 1..n per job without gaps, and one JSONL line per attempt row."""
    rows = table(store, renewal_job_attempts)
    by_job: dict[str, list[int]] = {}
    for a in rows:
        by_job.setdefault(a["job_id"], []).append(a["attempt_no"])
    for job_id, job in jobs_by_id(store).items():
        numbers = sorted(by_job.get(job_id, []))
        assert numbers == list(range(1, job["attempt_count"] + 1)), (job_id, numbers)
    lines = Counter(
        x["attempt_id"]
        for x in renewald.log_lines()
        if x["event"] in ("attempt.finished", "job.rescued") and x.get("attempt_id")
    )
    assert not [k for k, n in lines.items() if n > 1], lines.most_common(3)
    assert set(lines) == {a["attempt_id"] for a in rows}
    return rows


# -- 1. a crash loop costs at most what was in flight ----------------------------------------


def crash_loop(
    renewald: Renewald, store: Store, bridge: Bridge, backend: str, *, conversations: int,
    per_conversation: int, kills: int, lease: str, rescue: str, seed: int,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    print(f"crash loop: seed={seed} kills={kills} backend={backend}")
    holds = random.Random(seed + 1)
    bridge.hold = lambda job_id: holds.uniform(0.01, 0.06)
    job_ids = add_bridge_jobs(
        store, conversations=conversations, per_conversation=per_conversation, clients=5
    )
    bridge_config(
        renewald, bridge, workers=8, batch=16, poll_interval="100ms", lease=lease,
        rescue_interval=rescue, shutdown_grace="2s",
    )  # fmt: skip
    daemons = 2 if backend != "sqlite" else 1
    running = [renewald.start() for _ in range(daemons)]
    in_flight_at_kills = 0
    for _ in range(kills):
        before = bridge.count()
        k = rng.randint(1, 6)

        def in_flight(before: int = before, k: int = k) -> bool:
            return bridge.count() >= before + k and bool(bridge.busy())

        wait_for(
            in_flight,
            timeout=60,
            what="deliveries in flight",
        )
        time.sleep(rng.uniform(0.0, 0.03))
        victim = running.pop(rng.randrange(len(running)))
        in_flight_at_kills += bridge.busy()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        running.append(renewald.start())
    wait_for(lambda: all_done(store), timeout=180, what="every job done")
    wait_for(
        lambda: len(renewald.log_lines()) >= len(table(store, renewal_job_attempts)),
        timeout=30,
        what="the lost lines recovered",
    )
    for proc in running:
        code, err = renewald.stop(proc)
        assert code == 0, err[-2000:]

    jobs = jobs_by_id(store)
    assert len(jobs) == len(job_ids)
    assert Counter(j["status"] for j in jobs.values()) == {"done": len(job_ids)}
    seen = bridge.by_job()
    assert set(seen) == set(job_ids), "every job reached the bridge"
    duplicates = sum(len(reqs) - 1 for reqs in seen.values())
    assert all({r.key for r in reqs} == {job_id} for job_id, reqs in seen.items())
    assert max(bridge.peak.values()) == 1, "two deliveries of one conversation in flight"
    rows = assert_ledger_and_log(renewald, store)
    numbers: dict[str, set[int]] = {}
    for a in rows:
        numbers.setdefault(a["job_id"], set()).add(a["attempt_no"])
    for job_id, reqs in seen.items():
        assert {r.attempt for r in reqs} <= numbers[job_id], "a send the ledger does not know"
    # A duplicate is a send whose result a kill lost: the next owner recorded it abandoned.
    abandoned = [a for a in rows if a["outcome"] == "abandoned"]
    assert duplicates <= len(abandoned), (duplicates, len(abandoned))
    # An abandoned attempt the bridge never saw was killed between its begin-send and the
    # request: at most a few per kill, never the jobs waiting in a target's line.
    unseen = [a for a in abandoned if a["attempt_no"] not in {r.attempt for r in seen[a["job_id"]]}]
    assert len(unseen) <= kills, (len(unseen), kills)
    if backend == "sqlite":
        assert store.read(lambda c: c.execute(text("PRAGMA integrity_check")).scalar()) == "ok"
    print(
        f"kills {kills}: in flight at kills {in_flight_at_kills}, duplicates {duplicates}, "
        f"abandoned attempts {len(abandoned)} ({len(unseen)} never reached the bridge), "
        f"attempts {len(rows)}"
    )


def _seed() -> int:
    return random.SystemRandom().randrange(10**6)


def test_crash_loop_costs_only_sends_in_flight(
    renewald: Renewald, e2e_store: Store, bridge: Bridge, backend: str
) -> None:
    crash_loop(
        renewald, e2e_store, bridge, backend, conversations=20, per_conversation=8, kills=10,
        lease="2s", rescue="500ms", seed=_seed(),
    )  # fmt: skip


@pytest.mark.slow
def test_crash_loop_long(
    renewald: Renewald, e2e_store: Store, bridge: Bridge, backend: str
) -> None:
    crash_loop(
        renewald, e2e_store, bridge, backend, conversations=50, per_conversation=20, kills=50,
        lease="3s", rescue="1s", seed=_seed(),
    )  # fmt: skip


# -- 2. the tracker's stale upserts ------------------------------------------------------------

UPSERT = text(
    f"INSERT INTO renewal_jobs ({', '.join(TRACKER_JOB_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in TRACKER_JOB_COLUMNS)}) "
    "ON CONFLICT(job_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in TRACKER_JOB_COLUMNS if c != "job_id")
)


def tracker_upsert(store: Store, row: dict[str, Any], **changes: Any) -> None:
    values = {c: row[c] for c in TRACKER_JOB_COLUMNS} | changes
    store.write(lambda conn: conn.execute(UPSERT, values))


def test_stale_tracker_upserts_never_double_a_send(
    renewald: Renewald, e2e_store: Store, bridge: Bridge
) -> None:
    bridge.hold = lambda job_id: 1.0
    job_ids = add_bridge_jobs(e2e_store, conversations=3, per_conversation=2, clients=3)
    first = {j: r for j, r in jobs_by_id(e2e_store).items() if j.endswith("-000")}
    bridge_config(renewald, bridge, lease="3s", rescue_interval="200ms", poll_interval="100ms")
    proc = renewald.start()
    wait_for(lambda: bridge.busy() == 3, what="three deliveries in flight")
    pending, same, running = sorted(first)
    stale = first[pending]  # as the tracker last saw it: pending, never attempted
    tracker_upsert(e2e_store, stale)
    tracker_upsert(e2e_store, jobs_by_id(e2e_store)[same])  # current values over running
    wait_for(lambda: all_done(e2e_store), timeout=30, what="every job done")

    # Over done jobs: running (as seen mid-flight) and pending (as first seen).
    tracker_upsert(e2e_store, jobs_by_id(e2e_store)[running], status="running", finished_at=None)
    tracker_upsert(e2e_store, stale)
    wait_for(
        lambda: sum(1 for x in renewald.log_lines() if x["event"] == "job.reconciled") >= 2,
        what="both rewound jobs reconciled",
    )
    wait_for(lambda: all_done(e2e_store), what="every job done again")
    time.sleep(1.0)  # a few poll and rescue ticks in which a second send would show
    code, err = renewald.stop(proc)
    assert code == 0, err
    seen = bridge.by_job()
    assert {j: len(r) for j, r in seen.items()} == dict.fromkeys(job_ids, 1)
    assert max(bridge.peak.values()) == 1
    rows = assert_ledger_and_log(renewald, e2e_store)
    assert [a["outcome"] for a in rows] == ["delivered"] * len(job_ids)


# -- 3. a stop past its grace leaves its leases to expire -----------------------------------


def test_sigterm_past_grace_leaves_leases_to_expiry(
    renewald: Renewald, e2e_store: Store, bridge: Bridge
) -> None:
    bridge.hold = lambda job_id: 2.5
    job_ids = add_bridge_jobs(e2e_store, conversations=3, per_conversation=1, clients=3)
    bridge_config(
        renewald, bridge, lease="4s", rescue_interval="200ms", poll_interval="100ms",
        shutdown_grace="500ms",
    )  # fmt: skip
    first = renewald.start()
    wait_for(lambda: bridge.busy() == 3, what="three deliveries in flight")
    code, err = renewald.stop(first)
    assert code == 0, err
    held = {j: r["lease_expires_at"] for j, r in jobs_by_id(e2e_store).items()}
    assert all(held.values()), "the stopped daemon kept its leases"
    second = renewald.start()
    wait_for(lambda: all_done(e2e_store), timeout=30, what="every job done")
    code, err = renewald.stop(second)
    assert code == 0, err
    for job_id, reqs in bridge.by_job().items():
        assert all(r.arrived >= held[job_id] for r in reqs[1:]), (job_id, reqs, held[job_id])
    assert set(bridge.by_job()) == set(job_ids)
    assert max(bridge.peak.values()) == 1, "two deliveries of one conversation in flight"
    assert_ledger_and_log(renewald, e2e_store)


# -- 4. a killed one-shot, then the next one -----------------------------------------------


def test_killed_run_once_then_run_once_delivers_everything(
    renewald: Renewald, e2e_store: Store, bridge: Bridge
) -> None:
    bridge.hold = lambda job_id: 0.3
    job_ids = add_bridge_jobs(e2e_store, conversations=6, per_conversation=2, clients=2)
    bridge_config(renewald, bridge, lease="2s", poll_interval="100ms")
    killed = renewald.start("--once")
    wait_for(lambda: bridge.count() >= 3 and bridge.busy(), what="deliveries under way")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    out: subprocess.CompletedProcess[str] = renewald.run("run", "--once", timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    jobs = jobs_by_id(e2e_store)
    assert Counter(j["status"] for j in jobs.values()) == {"done": len(job_ids)}
    assert set(bridge.by_job()) == set(job_ids)
    assert max(bridge.peak.values()) == 1
    assert_ledger_and_log(renewald, e2e_store)


# -- 5. a PostgreSQL outage longer than the lease, under load --------------------------------


def outage_under_load(
    renewald: Renewald, store: Store, bridge: Bridge, *, lease: str, outage_s: float
) -> None:
    from sqlalchemy.engine import make_url

    from tests.e2e.test_outage import TcpProxy

    url = make_url(renewald.db_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.up()
    renewald.db_url = url.set(port=proxy.port).render_as_string(hide_password=False)
    try:
        bridge.hold = lambda job_id: 0.5
        job_ids = add_bridge_jobs(store, conversations=8, per_conversation=5, clients=4)
        bridge_config(renewald, bridge, lease=lease, rescue_interval="200ms",
                      poll_interval="100ms")  # fmt: skip
        daemons = [renewald.start(), renewald.start()]
        wait_for(lambda: bridge.count() >= 6 and bridge.busy() >= 2, what="deliveries under way")
        proxy.down()
        time.sleep(outage_s)  # the outage itself: longer than the lease
        proxy.up()
        wait_for(lambda: all_done(store), timeout=120, what="every job done after the outage")
        assert all(p.poll() is None for p in daemons), "a daemon died in the outage"
        time.sleep(1.0)  # rescue ticks in which a second send would show
        for p in daemons:
            code, err = renewald.stop(p)
            assert code == 0, err[-2000:]
    finally:
        proxy.down()
    seen = bridge.by_job()
    assert {j: len(r) for j, r in seen.items()} == dict.fromkeys(job_ids, 1), "a duplicate"
    assert max(bridge.peak.values()) == 1
    rows = assert_ledger_and_log(renewald, store)
    assert Counter(a["outcome"] for a in rows) == {"delivered": len(job_ids)}
    lost = [x for x in renewald.log_lines() if x["event"] == "lease.lost"]
    assert not lost, lost[:3]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_outage_longer_than_the_lease_doubles_nothing(
    renewald: Renewald, e2e_store: Store, bridge: Bridge
) -> None:
    outage_under_load(renewald, e2e_store, bridge, lease="2s", outage_s=8.0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_outage_of_90s_doubles_nothing(
    renewald: Renewald, e2e_store: Store, bridge: Bridge
) -> None:
    outage_under_load(renewald, e2e_store, bridge, lease="10s", outage_s=90.0)
