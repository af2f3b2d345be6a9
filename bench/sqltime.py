"""`python -m bench.sqltime --out FILE.json -- <renewald args>`: where the store's time goes.

Runs renewald's own CLI in this process with timers added at start-up (src/renewald is not
changed): every public `Store` method (calls, wall seconds including lock waits and
retries, and the share of that spent waiting for SQLite's `BEGIN IMMEDIATE`), every SQL
statement sent to the driver (count, seconds, keyed by its first words), and every
driver commit. Written to FILE.json at exit. Used for issue 12's before/after profile;
works with any renewald checkout whose venv runs it (it only wraps, never replaces).
"""

from __future__ import annotations

import atexit
import functools
import json
import re
import sys
import threading
import time
from collections import defaultdict
from typing import Any

_lock = threading.Lock()
_methods: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
_sql: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
_commits = [0, 0.0]
_local = threading.local()


def _key(statement: str) -> str:
    s = re.sub(r"\s+", " ", statement).strip()
    s = re.sub(r"\$\d+|%\(\w+\)s|\?|:\w+", "?", s)
    m = re.match(r"(?i)(UPDATE \w+|INSERT INTO \w+|DELETE FROM \w+|BEGIN \w*|SELECT pg_\w+)", s)
    if m:
        head = m.group(1)
        if head.upper().startswith("UPDATE"):
            w = re.search(r"(?i)\bSET (\w+)", s)
            head += f" SET {w.group(1)}…" if w else ""
            fence = re.search(r"(?i)WHERE (.{0,140})", s)
            head += f" WHERE {fence.group(1)}" if fence else ""
        return head[:220]
    return s[:220]


def _install() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.engine.default import DefaultDialect

    from renewald.store.store import Store

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        _local.t = time.perf_counter()

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        dt = time.perf_counter() - getattr(_local, "t", time.perf_counter())
        rows = len(params) if executemany and isinstance(params, list | tuple) else 1
        with _lock:
            e = _sql[_key(statement)]
            e[0] += 1
            e[1] += dt
            e[2] += rows

    commit = DefaultDialect.do_commit

    def do_commit(self, dbapi_connection):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return commit(self, dbapi_connection)
        finally:
            with _lock:
                _commits[0] += 1
                _commits[1] += time.perf_counter() - t

    DefaultDialect.do_commit = do_commit  # type: ignore[method-assign]

    def timed(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                with _lock:
                    e = _methods[name]
                    e[0] += 1
                    e[1] += time.perf_counter() - t

        return wrapper

    for name, fn in list(vars(Store).items()):
        if callable(fn) and not name.startswith("_") and name not in ("write", "read"):
            setattr(Store, name, timed(name, fn))


def _dump(path: str, started: float) -> None:
    with _lock:
        data = {
            "wall_s": time.perf_counter() - started,
            "store_methods": {
                k: {"calls": v[0], "s": round(v[1], 4)}
                for k, v in sorted(_methods.items(), key=lambda kv: -kv[1][1])
            },
            "sql": {
                k: {"calls": v[0], "s": round(v[1], 4), "rows": v[2]}
                for k, v in sorted(_sql.items(), key=lambda kv: -kv[1][1])
            },
            "commits": {"calls": _commits[0], "s": round(_commits[1], 4)},
        }
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1)


def main(argv: list[str]) -> None:
    if argv[:1] != ["--out"] or len(argv) < 2:
        raise SystemExit("usage: python -m bench.sqltime --out FILE.json -- <renewald args>")
    out, argv = argv[1], argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    started = time.perf_counter()
    _install()
    atexit.register(_dump, out, started)
    from renewald.cli import main as renewald_main

    renewald_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
