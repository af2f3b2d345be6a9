"""Hostile rows end to end: the real `renewald` next to rows another program wrote badly.

Each bad job ends failed/malformed (or, when it is not renewald's to touch, `show`
explains it), every good job around it reaches a real HTTP target, the daemon stays up,
and `show` prints every row without a traceback or a forged line.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from renewald.store import Store
from renewald.store.schema import renewal_jobs
from tests.e2e.conftest import HookTarget, Renewald, add_webhook_jobs, table
from tests.waiting import wait_for

FORGED = "status       done (delivered)"


@dataclass(frozen=True)
class Hostile:
    name: str
    sql: str  # an UPDATE's SET clause; :id is the job, :v the value
    value: Any = None
    sqlite_only: bool = False
    ends_malformed: bool = True
    link: bool = False  # the SET applies to the job's conversation_links row


HOSTILE = [
    Hostile("text_due", "next_attempt_at = :v", "soon", sqlite_only=True),
    Hostile("text_max", "max_attempts = :v", "three", sqlite_only=True),
    Hostile("blob_payload", "payload = :v", b"\xff\xfe\x00bad", sqlite_only=True),
    Hostile("bad_utf8_payload", "payload = CAST(x'ff61' AS TEXT)", sqlite_only=True),
    Hostile("real_attempts", "attempt_count = :v", 1.5, sqlite_only=True),
    Hostile("text_created", "created_at = :v", "yesterday", sqlite_only=True),
    Hostile("far_future", "next_attempt_at = :v", 100_000_000_000_000_000),
    Hostile("negative_due", "next_attempt_at = :v", -5),
    Hostile("zero_max", "max_attempts = :v", 0),
    Hostile("bad_snapshot", "target_snapshot = :v", "{not json"),
    Hostile("bad_json_payload", "payload_kind = 'json', payload = :v", "not json"),
    Hostile("bad_link", "target_payload = :v", "[1, 2", link=True),
    Hostile("unknown_status", "status = :v", "weird", ends_malformed=False),
    Hostile(
        "forged_error",
        "status = 'failed', terminal_reason = 'permanent', last_error = :v",
        f"boom\r\n{FORGED}\x1b[2J",
        ends_malformed=False,
    ),
]


# Each CLI start costs a second or more: `show` runs on the rows issue 13 names (every row
# goes through the same decoding in-process in tests/store/test_hostile_rows.py).
SHOWN = {
    "text_due",
    "text_max",
    "blob_payload",
    "bad_utf8_payload",
    "far_future",
    "unknown_status",
    "forged_error",
}
AS_JSON = {"blob_payload", "far_future"}
SHOWN_ON_PG = {"far_future", "forged_error", "bad_link"}


def _hostile(store: Store) -> list[Hostile]:
    return [h for h in HOSTILE if store.dialect == "sqlite" or not h.sqlite_only]


def _add_rows(store: Store, url: str, *, prefix: str) -> tuple[list[str], list[Hostile]]:
    good = [f"{prefix}good-{n}" for n in range(4)]
    hostile = _hostile(store)
    ids = good + [f"{prefix}{h.name}" for h in hostile]
    # Not due until the hostile values are in: a running daemon must never claim a row
    # between the two transactions (it would deliver it before it became hostile).
    later = time.time_ns() // 1_000_000 + 3_600_000
    add_webhook_jobs(store, url, ids, due=later)

    def tx(conn: Any) -> None:
        conn.execute(
            renewal_jobs.update()
            .where(renewal_jobs.c.job_id.in_(ids))
            .values(next_attempt_at=later - 3_600_000)
        )
        for h in hostile:
            job_id = f"{prefix}{h.name}"
            if h.link:
                where = "link_id = :id"
                job_id = f"link-{job_id}"
            else:
                where = "job_id = :id"
            table_name = "conversation_links" if h.link else "renewal_jobs"
            conn.execute(
                text(f"UPDATE {table_name} SET {h.sql} WHERE {where}"), {"id": job_id, "v": h.value}
            )

    store.write(tx)
    return good, hostile


def _jobs(store: Store) -> dict[str, dict[str, Any]]:
    rows = store.read(
        lambda c: c.execute(
            text("SELECT job_id, status, terminal_reason, last_error FROM renewal_jobs")
        ).all()
    )
    return {r[0]: {"status": r[1], "reason": r[2], "error": r[3]} for r in rows}


def _check_ends(store: Store, good: list[str], hostile: list[Hostile], prefix: str) -> None:
    jobs = _jobs(store)
    for job_id in good:
        assert jobs[job_id]["status"] == "done", (job_id, jobs[job_id])
    for h in hostile:
        row = jobs[f"{prefix}{h.name}"]
        if h.ends_malformed:
            assert (row["status"], row["reason"]) == ("failed", "malformed"), (h.name, row)
            assert row["error"].startswith("malformed: "), row
            assert "\n" not in row["error"] and "\r" not in row["error"]


def _check_show(renewald: Renewald, hostile: list[Hostile], prefix: str, shown: set[str]) -> None:
    """`show` on the rows named in `shown` (some with --json), `jobs` and `stats`: side by
    side, since each start of the CLI costs a second or two."""
    commands: list[tuple[str, ...]] = [
        ("show", f"{prefix}{h.name}") for h in hostile if h.name in shown
    ]
    commands += [
        ("show", f"{prefix}{h.name}", "--json") for h in hostile if h.name in AS_JSON & shown
    ]
    commands += [("jobs", "--limit", "100"), ("stats",)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outs = list(pool.map(lambda args: renewald.run(*args, timeout=60), commands))
    for args, out in zip(commands, outs, strict=True):
        assert out.returncode == 0, (args, out.stderr)
        assert "Traceback" not in out.stdout + out.stderr, args
        assert FORGED not in out.stdout.splitlines(), args
        assert "\x1b" not in out.stdout and "\r" not in out.stdout, args


def test_run_once_delivers_good_jobs_and_ends_bad_ones(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    good, hostile = _add_rows(e2e_store, hook_target.url, prefix="once-")
    out = renewald.run("run", "--once", timeout=60)
    assert "Traceback" not in out.stderr
    # DESIGN §6: 1 when a job ended failed in this run (the malformed ones did).
    assert out.returncode == 1, out.stderr
    assert set(hook_target.by_job()) == set(good)
    _check_ends(e2e_store, good, hostile, "once-")
    ended = [a for a in table(e2e_store, renewal_jobs) if a["terminal_reason"] == "malformed"]
    assert len(ended) == sum(h.ends_malformed for h in hostile)
    lines = [ln for ln in renewald.log_lines() if ln.get("reason") == "malformed"]
    assert {ln["job_id"] for ln in lines} == {f"once-{h.name}" for h in hostile if h.ends_malformed}
    shown = SHOWN if e2e_store.dialect == "sqlite" else SHOWN_ON_PG
    _check_show(renewald, hostile, "once-", shown)
    again = renewald.run("run", "--once", timeout=60)
    assert again.returncode == 0, again.stderr


def test_daemon_stays_up_through_hostile_rows(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    proc = renewald.start()
    time.sleep(0.5)
    good, hostile = _add_rows(e2e_store, hook_target.url, prefix="d-")

    def settled() -> bool:
        jobs = _jobs(e2e_store)
        return all(jobs[j]["status"] == "done" for j in good) and all(
            jobs[f"d-{h.name}"]["status"] == "failed" for h in hostile if h.ends_malformed
        )

    wait_for(settled, timeout=20, what="good jobs delivered and bad ones ended")
    assert proc.poll() is None, renewald.stderr(proc)
    _check_ends(e2e_store, good, hostile, "d-")
    later = [f"d-late-{n}" for n in range(2)]
    add_webhook_jobs(e2e_store, hook_target.url, later)
    wait_for(lambda: all(_jobs(e2e_store)[j]["status"] == "done" for j in later), timeout=10)
    code, stderr = renewald.stop(proc)
    assert code == 0, stderr
    assert "Traceback" not in stderr and "duty_died" not in stderr


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_invalid_utf8_in_every_text_column_is_readable(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget
) -> None:
    add_webhook_jobs(e2e_store, hook_target.url, ["utf8-a"])
    columns = ("message_id", "log_path", "last_error", "target_kind", "lease_owner")
    e2e_store.write(
        lambda c: c.execute(
            text(
                "UPDATE renewal_jobs SET "
                + ", ".join(f"{col} = CAST(x'c328' AS TEXT)" for col in columns)
                + " WHERE job_id = 'utf8-a'"
            )
        )
    )
    out = renewald.run("show", "utf8-a", timeout=30)
    assert out.returncode == 0, out.stderr
    assert "not valid UTF-8" in out.stdout
    renewald.run("run", "--once", timeout=60)
    assert _jobs(e2e_store)["utf8-a"]["reason"] == "malformed"
