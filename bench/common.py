"""What every section shares: statistics, the machine, the renewald executable, processes."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

RENEWALD = str(Path(sys.executable).parent / "renewald")
BENCH_DIR = Path(__file__).resolve().parent
PACKAGES = (
    "renewald",
    "SQLAlchemy",
    "psycopg",
    "psycopg-binary",
    "alembic",
    "APScheduler",
    "structlog",
    "httpx",
    "click",
    "psutil",
    "py-spy",
    "pgqueuer",
    "asyncpg",
    "huey",
    "procrastinate",
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def say(*parts: object) -> None:
    """Progress on stderr (stdout stays free for the final tables)."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


# -- statistics --------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median with min-max, and the values themselves."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": vals,
    }


def percentiles(values: Iterable[float], ps: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles plus max (and count)."""
    vals = sorted(values)
    out: dict[str, float] = {}
    if not vals:
        return out
    for p in ps:
        rank = max(1, -(-len(vals) * p // 100))  # ceil(n * p / 100)
        out[f"p{p:g}"] = vals[int(rank) - 1]
    out["max"] = vals[-1]
    out["n"] = len(vals)
    return out


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "\u2013"
    return f"{value:,.{digits}f}"


def fmt_spread(s: dict[str, Any] | None, digits: int = 0, unit: str = "") -> str:
    """`1,234 (1,100-1,300)` for a spread; a single value when there was one run."""
    if not s or s.get("median") is None:
        return "\u2013"
    head = f"{fmt(s['median'], digits)}{unit}"
    if s["n"] == 1:
        return head
    return f"{head} ({fmt(s['min'], digits)}\u2013{fmt(s['max'], digits)})"


# -- the machine -------------------------------------------------------------------------


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info(pg_conninfo: str | None) -> dict[str, Any]:
    cpu_model = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    pg_version = None
    pg_settings: dict[str, str] = {}
    if pg_conninfo:
        try:
            import psycopg

            with psycopg.connect(pg_conninfo, autocommit=True) as conn:
                pg_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
                for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections"):
                    pg_settings[name] = conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
        except Exception as exc:
            pg_version = f"unreachable: {str(exc).splitlines()[0]}"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(_psutil().virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version,
        "postgresql_settings": pg_settings,
        "packages": versions,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "loadavg_at_start": loadavg(),
    }


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# -- renewald as a real process ----------------------------------------------------------


def write_config(
    path: Path,
    *,
    log_dir: Path,
    daemon: dict[str, Any] | None = None,
    log_level: str | None = None,
    extra: str = "",
) -> Path:
    """A config.toml with renewald's defaults except where the bench says otherwise."""
    lines: list[str] = []
    if daemon:
        lines.append("[daemon]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in daemon.items()]
    lines += ["[logging]", f"dir = {json.dumps(str(log_dir))}", 'console = "json"']
    if log_level:
        lines.append(f"level = {json.dumps(log_level)}")
    lines.append(extra)
    path.write_text("\n".join(lines) + "\n")
    return path


def renewald_env(db_url: str, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENEWALD_")}
    env.update(RENEWALD_DB=db_url, RENEWALD_CONFIG=str(config), PYTHONUNBUFFERED="0")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    return env


STARTED: list[Proc] = []


@dataclass
class Proc:
    """A renewald process with its console in a file and its RSS sampled while it runs."""

    popen: subprocess.Popen[bytes]
    console: Path
    started: float
    rss_peak: int = 0
    cpu_seconds: float = 0.0
    rss_samples: list[int] = field(default_factory=list)
    ended: float | None = None
    _sampler: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait(self, timeout: float | None = None) -> int:
        code = self.popen.wait(timeout)
        if self.ended is None:
            self.ended = time.perf_counter()
        if self._sampler is not None:
            self._sampler.join(timeout=1)
        return code

    @property
    def wall(self) -> float:
        assert self.ended is not None
        return self.ended - self.started

    def stop(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def console_stats(self) -> dict[str, int]:
        try:
            data = self.console.read_bytes()
        except OSError:
            return {"bytes": 0, "lines": 0}
        return {"bytes": len(data), "lines": data.count(b"\n")}

    def console_tail(self, n: int = 5) -> str:
        try:
            lines = self.console.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def spawn(
    args: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    console: Path,
    sample_rss: bool = True,
) -> Proc:
    """Start `renewald <args>`, stdout and stderr into `console` (never a TTY)."""
    fh = open(console, "wb")  # noqa: SIM115 - handed to the child, closed below
    started = time.perf_counter()
    popen = subprocess.Popen(
        [RENEWALD, *args],
        env=env,
        cwd=cwd,
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    fh.close()
    proc = Proc(popen=popen, console=console, started=started)
    STARTED.append(proc)
    if sample_rss:
        proc._sampler = threading.Thread(target=_sample_rss, args=(proc,), daemon=True)
        proc._sampler.start()
    return proc


def _psutil() -> Any:
    """psutil, imported when a run measures (it is a `bench` extra; `--help` needs none)."""
    import psutil

    return psutil


def _sample_rss(proc: Proc, every: float = 0.05) -> None:
    psutil = _psutil()
    try:
        ps = psutil.Process(proc.pid)
        while proc.popen.poll() is None:
            with ps.oneshot():
                rss = ps.memory_info().rss
                times = ps.cpu_times()
            proc.rss_samples.append(rss)
            proc.rss_peak = max(proc.rss_peak, rss)
            proc.cpu_seconds = times.user + times.system
            time.sleep(every)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass


def stop_started() -> None:
    """End the renewald processes this bench started (by pid) that are still running."""
    for proc in STARTED:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(10)


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, what: str, every: float = 0.02
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def importtime_top(stderr: str, n: int = 15) -> list[dict[str, Any]]:
    """The slowest imports (cumulative µs) from `python -X importtime` output."""
    rows = []
    pattern = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")
    for line in stderr.splitlines():
        m = pattern.match(line)
        if m:
            rows.append(
                {
                    "self_us": int(m.group(1)),
                    "cumulative_us": int(m.group(2)),
                    "depth": len(m.group(3)) // 2,
                    "module": m.group(4),
                }
            )
    total = max((r["cumulative_us"] for r in rows if r["depth"] == 0), default=0)
    top = sorted(rows, key=lambda r: r["cumulative_us"], reverse=True)
    return [{"total_top_level_us": total}, *top[:n]]


def registered(db: Any) -> bool:
    """A renewald daemon has registered in `db`."""
    return bool(db.query("SELECT count(*) FROM renewald_daemons")[0][0] > 0)
