"""renewald on an artifact.db the tracker made, and the tracker on one renewald migrated.

The DDL below is the tracker's, verbatim (DESIGN §1). Rows are written the way the
tracker writes them: INSERT with an explicit column list, and the 17-column
`INSERT … ON CONFLICT(job_id) DO UPDATE`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from renewald.store import Store, check_schema, migrate
from renewald.store.schema import TRACKER_JOB_COLUMNS

TRACKER_DDL = """
CREATE TABLE IF NOT EXISTS local_conversations (
  local_conversation_id TEXT PRIMARY KEY, platform TEXT NOT NULL,
  automation_status TEXT NOT NULL DEFAULT 'manual',   -- 'manual' | 'auto' | 'paused'
  title TEXT, summary TEXT, last_message_id TEXT, last_message_at INTEGER,
  cooldown_until INTEGER, paused_at INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS conversation_links (
  link_id TEXT PRIMARY KEY, local_conversation_id TEXT NOT NULL, platform TEXT NOT NULL,
  remote_conversation_id TEXT, client_id TEXT, page_url TEXT, page_title TEXT,
  route_path TEXT, route_pattern TEXT, route_params TEXT,
  target_kind TEXT,            -- e.g. 'browser.proxy_delivery'
  target_id TEXT, target_payload TEXT,   -- target_payload: JSON, e.g. {"clientId": "firefox-claude"}
  is_active INTEGER NOT NULL DEFAULT 1, observed_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS idx_conversation_links_remote ON conversation_links(platform, remote_conversation_id);

CREATE TABLE IF NOT EXISTS renewal_jobs (
  job_id TEXT PRIMARY KEY, local_conversation_id TEXT NOT NULL, message_id TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',      -- 'pending' | 'running' | 'done' | 'failed'
  payload TEXT NOT NULL, payload_kind TEXT NOT NULL DEFAULT 'text',   -- 'text' | 'json'
  target_snapshot TEXT,                        -- JSON, e.g. {"clientId": "...", "pageUrl": "..."}
  attempt_count INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL DEFAULT 3,
  next_attempt_at INTEGER, last_attempt_at INTEGER, last_error TEXT,
  log_path TEXT,                               -- e.g. 'logs/renewal/2026-03-28.jsonl'
  started_at INTEGER, finished_at INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
  FOREIGN KEY (local_conversation_id) REFERENCES local_conversations(local_conversation_id),
  FOREIGN KEY (message_id) REFERENCES messages(id));
CREATE UNIQUE INDEX IF NOT EXISTS idx_renewal_jobs_message ON renewal_jobs(message_id);
CREATE INDEX IF NOT EXISTS idx_renewal_jobs_status_due ON renewal_jobs(status, next_attempt_at ASC, created_at ASC);
CREATE INDEX IF NOT EXISTS idx_renewal_jobs_local_conversation ON renewal_jobs(local_conversation_id, status, created_at DESC);
"""

T = 1_774_000_000_000

UPSERT = f"""
INSERT INTO renewal_jobs ({", ".join(TRACKER_JOB_COLUMNS)})
VALUES ({", ".join("?" for _ in TRACKER_JOB_COLUMNS)})
ON CONFLICT(job_id) DO UPDATE SET
  {", ".join(f"{c} = excluded.{c}" for c in TRACKER_JOB_COLUMNS if c != "job_id")}
"""


def tracker_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(TRACKER_DDL)
    return conn


def tracker_writes(conn: sqlite3.Connection, n: int) -> None:
    conn.execute(
        "INSERT INTO local_conversations (local_conversation_id, platform, automation_status,"
        " created_at, updated_at) VALUES (?, 'claude', 'auto', ?, ?)",
        (f"conv-{n}", T, T),
    )
    conn.execute(
        "INSERT INTO conversation_links (link_id, local_conversation_id, platform,"
        " remote_conversation_id, target_kind, target_payload, observed_at, created_at,"
        " updated_at) VALUES (?, ?, 'claude', ?, 'browser.proxy_delivery', ?, ?, ?, ?)",
        (f"link-{n}", f"conv-{n}", f"r-{n}", '{"clientId": "firefox-claude"}', T, T, T),
    )
    conn.execute(
        "INSERT INTO renewal_jobs (job_id, local_conversation_id, message_id, payload,"
        " created_at, updated_at) VALUES (?, ?, ?, 'hello', ?, ?)",
        (f"job-{n}", f"conv-{n}", f"msg-{n}", T, T),
    )
    row = (
        f"job-{n}", f"conv-{n}", f"msg-{n}", "pending", '{"a": 1}', "json",
        '{"clientId": "firefox-claude", "pageUrl": "https://claude.ai/chat/x"}',
        0, 3, T + n, None, None, "logs/renewal/2026-03-28.jsonl", None, None, T, T + 1,
    )  # fmt: skip
    conn.execute(UPSERT, row)


def dump(path: Path) -> tuple[list[tuple], dict[str, list[tuple]]]:
    conn = sqlite3.connect(path)
    schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    data = {
        t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
        for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    conn.close()
    return schema, data


def columns(conn: sqlite3.Connection, table: str) -> list[tuple]:
    return [tuple(r) for r in conn.execute(f"PRAGMA table_info({table})")]


def test_migrate_a_tracker_database(tmp_path: Path) -> None:
    path = tmp_path / "artifact.db"
    conn = tracker_db(path)
    tracker_writes(conn, 1)
    before = {t: columns(conn, t) for t in ("local_conversations", "conversation_links")}
    jobs_before = columns(conn, "renewal_jobs")
    conn.close()

    store = Store.open(f"sqlite:///{path}")
    migrate(store.engine)
    check_schema(store.engine)

    conn = sqlite3.connect(path, isolation_level=None)
    for table, cols in before.items():
        assert columns(conn, table) == cols
    assert columns(conn, "renewal_jobs")[: len(jobs_before)] == jobs_before
    # The tracker keeps writing: explicit-column INSERTs and its 17-column upsert.
    tracker_writes(conn, 2)
    conn.execute(UPSERT, (
        "job-1", "conv-1", "msg-1", "done", "bye", "text", None, 1, 3, None, T, None,
        None, T, T + 5, T, T + 5,
    ))  # fmt: skip
    conn.close()

    job1, job2 = store.get_job("job-1"), store.get_job("job-2")
    assert job1 is not None and (job1.status, job1.payload, job1.lease_token) == ("done", "bye", 0)
    assert job2 is not None and job2.payload_kind == "json" and job2.next_attempt_at == T + 2
    assert {j.job_id for j in store.list_jobs()} == {"job-1", "job-2"}

    schema, data = dump(path)
    migrate(store.engine)
    assert dump(path) == (schema, data)
    store.close()


def test_fresh_database_is_what_the_tracker_makes(tmp_path: Path) -> None:
    tracker_path, ours = tmp_path / "tracker.db", tmp_path / "ours.db"
    tracker_db(tracker_path).close()
    store = Store.open(f"sqlite:///{ours}", create=True)
    migrate(store.engine)
    store.close()
    theirs_conn, ours_conn = sqlite3.connect(tracker_path), sqlite3.connect(ours)
    for table in ("local_conversations", "conversation_links"):
        assert columns(ours_conn, table) == columns(theirs_conn, table)
    tracker_cols = columns(theirs_conn, "renewal_jobs")
    assert columns(ours_conn, "renewal_jobs")[: len(tracker_cols)] == tracker_cols
    indexes = "SELECT name, tbl_name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
    assert set(theirs_conn.execute(indexes)) <= set(ours_conn.execute(indexes))
    assert ours_conn.execute("SELECT 1 FROM sqlite_master WHERE name='messages'").fetchone() is None
    # and the tracker writes into it as into its own
    ours_conn.isolation_level = None
    tracker_writes(ours_conn, 1)
    theirs_conn.close()
    ours_conn.close()


def test_renewald_columns_do_not_reject_tracker_writes(tmp_path: Path) -> None:
    """Two pending jobs of one conversation, a running one beside them: nothing renewald
    added may refuse what the tracker is allowed to write."""
    path = tmp_path / "artifact.db"
    store = Store.open(f"sqlite:///{path}", create=True)
    migrate(store.engine)
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    tracker_writes(conn, 1)
    for n, status in ((2, "running"), (3, "running"), (4, "pending")):
        conn.execute(UPSERT, (
            f"job-x{n}", "conv-1", f"msg-x{n}", status, "p", "text", None, 0, 3, T, None,
            None, None, None, None, T, T,
        ))  # fmt: skip
    assert conn.execute("SELECT count(*) FROM renewal_jobs").fetchone() == (4,)
    conn.close()


@pytest.mark.parametrize("n", [50])
def test_many_tracker_rows_survive(tmp_path: Path, n: int) -> None:
    path = tmp_path / "artifact.db"
    conn = tracker_db(path)
    for i in range(n):
        tracker_writes(conn, i)
    conn.close()
    store = Store.open(f"sqlite:///{path}")
    migrate(store.engine)
    assert len(store.list_jobs(limit=1000)) == n
    store.close()
