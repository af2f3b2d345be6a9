"""Section 5, I/O-bound delivery: `http.webhook` to a local target that answers after 50 ms.

The target is a threaded HTTP/1.1 server (keep-alive) on 127.0.0.1 in the bench process.
M jobs, each in a conversation of its own (so "one at a time per conversation" never
holds one back), `renewald run --once --workers 8` in 1 and in 3 daemons on PostgreSQL
(1 daemon on SQLite without PostgreSQL). The ideal is daemons x 8 / 0.05 s (160 or 480
deliveries/s). deliveries/s = M / (last attempt finished_at - first attempt started_at);
the wall time (first spawn to last exit, start-up included) is reported beside it. The
bench config sets `max_in_flight_per_target = 8` for the webhook adapter so that the test
measures the pipeline rather than the per-target limit (every job goes to the same origin).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.common import now_ms, renewald_env, say, spawn, spread
from bench.context import Ctx
from bench.db import DataSet, fresh_db

DELAY = 0.05
WORKERS = 8


class Target(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 16 connections open at once: the default backlog of 5 resets some

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.first: float | None = None
        self.last: float | None = None
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def reset(self) -> None:
        with self.lock:
            self.count = 0
            self.max_in_flight = 0
            self.first = self.last = None

    def stop(self) -> None:
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
            if s.first is None:
                s.first = time.monotonic()
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(DELAY)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with s.lock:
            s.in_flight -= 1
            s.count += 1
            s.last = time.monotonic()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def once(ctx: Ctx, backend: str, daemons: int, target: Target, ds: DataSet) -> dict[str, Any]:
    db = fresh_db(backend, ds, now_ms(), ctx.sqlite, ctx.pg)
    run_dir = ctx.run_dir(f"io-{backend}-{daemons}")
    config = ctx.config(
        run_dir,
        daemon={"workers": WORKERS},
        extra=f'[adapters."http.webhook"]\nmax_in_flight_per_target = {WORKERS}',
    )
    target.reset()
    ideal = daemons * WORKERS / DELAY
    try:
        procs = [
            spawn(
                ["run", "--once", "--workers", str(WORKERS)],
                env=renewald_env(db.url, config),
                cwd=run_dir,
                console=run_dir / f"console-{i}.txt",
            )
            for i in range(daemons)
        ]
        codes = [p.wait(timeout=600) for p in procs]
        code = max(codes, key=abs)
        wall = max(p.ended or p.started for p in procs) - min(p.started for p in procs)
        (span_ms, attempts) = db.query(
            "SELECT max(finished_at) - min(started_at), count(*) FROM renewal_job_attempts"
        )[0]
        counts = db.status_counts()
        server_span = (target.last or 0) - (target.first or 0)
        rate = ds.jobs / (span_ms / 1000) if span_ms else 0.0
        out = {
            "backend": backend,
            "daemons": daemons,
            "ideal_per_s": ideal,
            "jobs": ds.jobs,
            "exit_code": code,
            "deliveries_per_s": rate,
            "of_ideal": rate / ideal,
            "db_span_s": (span_ms or 0) / 1000,
            "server_span_s": server_span,
            "server_requests": target.count,
            "server_max_in_flight": target.max_in_flight,
            "wall_s": wall,
            "wall_deliveries_per_s": ds.jobs / wall,
            "rss_peak_mb": round(max(p.rss_peak for p in procs) / 2**20, 1),
            "cpu_s": round(sum(p.cpu_seconds for p in procs), 2),
            "status_counts": counts,
            "attempt_rows": attempts,
        }
        if counts.get("done") != ds.jobs or code:
            out["error"] = f"{counts}, exit {codes}: {procs[0].console_tail(3)}"
        return out
    finally:
        db.discard(ctx.sqlite)


def run(ctx: Ctx) -> dict[str, Any]:
    target = Target()
    try:
        m = ctx.pick(3_200, 640)
        ds = DataSet(
            jobs=m,
            conversations=m,
            target_kind="http.webhook",
            target_snapshot=json.dumps({"url": target.url}),
        )
        configs = [("postgresql", 1), ("postgresql", 3)] if ctx.pg else [("sqlite", 1)]
        runs: dict[str, list[dict[str, Any]]] = {f"{b}-{d}": [] for b, d in configs}
        for rep in range(ctx.reps):
            for backend, daemons in configs:
                r = once(ctx, backend, daemons, target, ds)
                runs[f"{backend}-{daemons}"].append(r)
                say(
                    f"io {backend}-{daemons} rep {rep + 1}: {r['deliveries_per_s']:.0f}/s "
                    f"({r['of_ideal']:.0%} of {r['ideal_per_s']:.0f}), server max in flight "
                    f"{r['server_max_in_flight']}, wall {r['wall_s']:.1f}s"
                    + (f" ERROR {r['error']}" if "error" in r else "")
                )
        summary = {
            b: {
                "daemons": rs[0]["daemons"],
                "ideal_per_s": rs[0]["ideal_per_s"],
                "deliveries_per_s": spread([r["deliveries_per_s"] for r in rs]),
                "of_ideal": spread([r["of_ideal"] for r in rs]),
                "wall_deliveries_per_s": spread([r["wall_deliveries_per_s"] for r in rs]),
                "server_max_in_flight": spread([r["server_max_in_flight"] for r in rs]),
                "cpu_ms_per_delivery": spread([r["cpu_s"] / r["jobs"] * 1000 for r in rs]),
                "errors": [r["error"] for r in rs if "error" in r],
            }
            for b, rs in runs.items()
        }
        return {
            "delay_s": DELAY,
            "workers": WORKERS,
            "jobs": m,
            "runs": runs,
            "summary": summary,
        }
    finally:
        target.stop()
