"""Section 5, I/O-bound delivery: `http.webhook` to a local target that answers after 50 ms.

M jobs, one conversation each, `run --once --workers 8` in 1 and 3 daemons on PostgreSQL
(1 on SQLite without it) against the ideal daemons x 8 / 50 ms. `max_in_flight_per_target`
is the workers: the pipeline is measured, not the per-target limit. bench/profile.py uses
the same figures (ARGS, CONFIG).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.common import Ctx, repeat
from bench.db import DataSet
from bench.sections import drain

DELAY = 0.05
WORKERS = 8
CONFIG: dict[str, Any] = {
    "daemon": {"workers": WORKERS},
    "extra": f'[adapters."http.webhook"]\nmax_in_flight_per_target = {WORKERS}',
}
ARGS = ["run", "--once", "--workers", str(WORKERS)]


class Target(ThreadingHTTPServer):
    """The webhook receiver, serving from its start to the end of a `with` block on it."""

    daemon_threads = True
    request_queue_size = 256  # many connections at once: the default backlog of 5 resets some

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def dataset(self, m: int) -> DataSet:
        snapshot = json.dumps({"url": f"http://127.0.0.1:{self.server_address[1]}/hook"})
        return DataSet(
            jobs=m, conversations=m, target_kind="http.webhook", target_snapshot=snapshot
        )

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # http.server writes the headers and the body in two segments: with Nagle on, the body
    # waits for the client's delayed ACK (~40 ms on Linux), which would be measured as
    # renewald's. Real receivers answer in one segment or set TCP_NODELAY.
    disable_nagle_algorithm = True
    server: Target

    def do_POST(self) -> None:
        s = self.server
        with s.lock:
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(DELAY)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "12")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')
        with s.lock:
            s.in_flight -= 1

    def log_message(self, format: str, *args: Any) -> None:
        pass


def once(ctx: Ctx, backend: str, daemons: int, target: Target, ds: DataSet) -> dict[str, Any]:
    target.max_in_flight = 0
    ideal = daemons * WORKERS / DELAY
    d = drain.drain_once(ctx, backend, daemons, ds, name="io", args=ARGS, **CONFIG)
    rate = d["steady_jobs_per_s"] or 0.0
    return {
        "daemons": daemons, "ideal_per_s": ideal, "jobs": ds.jobs, "exit_codes": d["exit_codes"],
        "deliveries_per_s": rate, "of_ideal_pct": rate / ideal * 100,
        "wall_deliveries_per_s": d["jobs_per_s"], "server_max_in_flight": target.max_in_flight,
        "cpu_ms_per_delivery": d["cpu_s_per_1k_jobs"], "status_counts": d["status_counts"],
        **{k: d[k] for k in ("error",) if k in d},
    }  # fmt: skip


def run(ctx: Ctx) -> dict[str, Any]:
    with Target() as target:
        ds = target.dataset(ctx.pick(3_200, 640))
        pg = "postgresql" in ctx.backends  # scale-out is measured where daemons can share work
        configs = [("postgresql", 1), ("postgresql", 3)] if pg else [("sqlite", 1)]
        todo = {f"{b}-{d}": functools.partial(once, ctx, b, d, target, ds) for b, d in configs}
        keys = ("deliveries_per_s", "of_ideal_pct", "wall_deliveries_per_s", "server_max_in_flight",
                "cpu_ms_per_delivery", "ideal_per_s")  # fmt: skip
        return {"workers": WORKERS, "jobs": ds.jobs, **repeat(ctx, "io", todo, *keys)}
