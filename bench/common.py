"""What every section shares: statistics, the machine, child processes timed spawn to exit."""

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import psycopg

from bench.bare import now_ms as now_ms  # the loop's clock, for every section too

if TYPE_CHECKING:
    from bench.db import DBs, RunDB

RENEWALD = str(Path(sys.executable).parent / "renewald")
BENCH_DIR = Path(__file__).resolve().parent
PACKAGES = "renewald SQLAlchemy psycopg alembic APScheduler structlog httpx click psutil py-spy"
PEER_PACKAGES = "pgqueuer asyncpg huey procrastinate"
DASH = "\u2013"


def say(*parts: object) -> None:
    """Progress on stderr (stdout stays free for the final tables)."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


def spread(values: Iterable[float | None]) -> dict[str, Any]:
    """Median with min-max, and the values themselves (None values left out)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "n": 0, "values": []}
    median = statistics.median(vals)
    return {"median": median, "min": min(vals), "max": max(vals), "n": len(vals), "values": vals}


Once = Callable[[], dict[str, Any]]


def repeat(ctx: Ctx, label: str, configs: Mapping[str, Once], *keys: str) -> dict[str, Any]:
    """Each configuration once per repetition, in turn (a drift of the machine falls on all):
    `runs`, every run's record, and `summary`, per configuration the spread of `keys` and the
    errors."""
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in configs}
    for rep in range(ctx.reps):
        for key, once in configs.items():
            try:
                r = once()
            except Exception as exc:
                r = {"error": f"{type(exc).__name__}: {exc}"}
            runs[key].append(r)
            shown = ", ".join(f"{k} {r[k]:.0f}" for k in keys[:2] if r.get(k) is not None)
            error = f" ERROR {r['error']}" if "error" in r else ""
            say(f"{label} {key} rep {rep + 1}: {shown}{error}")
    summary = {
        key: {**{k: spread(r.get(k) for r in rs) for k in keys}, "jobs": rs[0].get("jobs"),
              "errors": [r["error"] for r in rs if "error" in r]}
        for key, rs in runs.items()
    }  # fmt: skip
    return {"runs": runs, "summary": summary}


def percentiles(values: Iterable[float], ps: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles plus max and count."""
    vals = sorted(values)
    if not vals:
        return {}
    out = {f"p{p:g}": vals[int(max(1, -(-len(vals) * p // 100))) - 1] for p in ps}
    return {**out, "max": vals[-1], "n": len(vals)}


def fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    return DASH if value is None else f"{value:,.{digits}f}{unit}"


def fmt_spread(s: dict[str, Any] | None, digits: int = 0, unit: str = "") -> str:
    """`1,234 (1,100-1,300)` for a spread; a single value when there was one run."""
    if not s or s.get("median") is None:
        return DASH
    head = fmt(s["median"], digits, unit)
    return head if s["n"] == 1 else f"{head} ({fmt(s['min'], digits)}{DASH}{fmt(s['max'], digits)})"


def versions(names: str) -> dict[str, str]:
    out = {}
    for name in names.split():
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def compile_bytecode() -> str:
    """Compile renewald's and the bench's own modules to bytecode, as installing a wheel
    does (pip compiles what it installs; the peers come from wheels). An editable install
    leaves the source tree without bytecode, and where PYTHONDONTWRITEBYTECODE is set
    (this workplace sets it) every child process would compile every module again at
    start-up: about 60 ms per `renewald` start that no installed copy pays."""
    import compileall

    import renewald

    trees = (Path(renewald.__file__).parent, BENCH_DIR)
    ok = all(compileall.compile_dir(tree, quiet=1) for tree in trees)
    return "compiled before the run" if ok else "compiling failed: modules compile at each start"


def machine_info(pg: psycopg.Connection[Any] | None) -> dict[str, Any]:
    """The machine; with `pg` (the run's own connection), the PostgreSQL server's settings."""
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    settings: dict[str, Any] = {}
    if pg is not None:
        for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers"):
            settings[name] = pg.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
    git = ["git", "-C", str(BENCH_DIR), "rev-parse"]
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu.group(1) if cpu else "?",
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": settings,
        "packages": versions(f"{PACKAGES} {PEER_PACKAGES}"),
        "git_commit": _out([*git, "--short", "HEAD"]),
        "git_branch": _out([*git, "--abbrev-ref", "HEAD"]),
        "loadavg_at_start": loadavg(),
    }


def _out(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# -- child processes ---------------------------------------------------------------------


def renewald_env(db_url: str, config: Path) -> dict[str, str]:
    ours = ("RENEWALD_", "NOTIFY_", "WATCHDOG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    return {**env, "RENEWALD_DB": db_url, "RENEWALD_CONFIG": str(config)}


STARTED: list[Proc] = []


@dataclass
class Proc(contextlib.AbstractContextManager["Proc"]):
    """A child process, its console in a file, its RSS and CPU sampled while it runs;
    stopped when a `with` block on it ends."""

    popen: subprocess.Popen[bytes]
    console: Path
    started: float
    rss_peak: int = 0
    cpu_seconds: float = 0.0
    ended: float | None = None
    sampler: threading.Thread | None = None

    def wait(self, timeout: float | None = None) -> int:
        code = self.popen.wait(timeout)
        self.ended = self.ended or time.perf_counter()
        if self.sampler is not None:
            self.sampler.join(timeout=1)
        return code

    def stop(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except OSError:
            return ""

    def last_json(self) -> dict[str, Any]:
        """The last line of the console, a JSON object (what a bench child prints)."""
        lines = self.console_text().strip().splitlines()
        return json.loads(lines[-1]) if lines else {}

    def tail(self, n: int = 3) -> str:
        return "\n".join(self.console_text().splitlines()[-n:])


def spawn(
    cmd: Sequence[str], *, env: dict[str, str] | None, cwd: Path, sample: bool = True
) -> Proc:
    """Start `cmd` (`renewald …` or `python -m bench…`), stdout and stderr to a file."""
    console = cwd / f"console-{len(STARTED)}.txt"
    with open(console, "wb") as fh:
        started = time.perf_counter()
        popen = subprocess.Popen(
            list(cmd), env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    proc = Proc(popen=popen, console=console, started=started)
    STARTED.append(proc)
    if sample:
        proc.sampler = threading.Thread(target=_sample, args=(proc,), daemon=True)
        proc.sampler.start()
    return proc


def run_all(procs: list[Proc], timeout: float = 900) -> tuple[list[int], float]:
    """Wait for every process: exit codes, and seconds from the first spawn to the last exit."""
    codes = [p.wait(timeout) for p in procs]
    return codes, max(p.ended or 0.0 for p in procs) - min(p.started for p in procs)


def bench_cmd(module: str, *args: object) -> list[str]:
    """`python -m bench.<module> args…` (with `child_env()`, from any directory)."""
    return [sys.executable, "-m", f"bench.{module}", *map(str, args)]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(BENCH_DIR.parent)}


def _sample(proc: Proc, every: float = 0.05) -> None:
    try:
        ps = psutil.Process(proc.popen.pid)
        while proc.popen.poll() is None:
            with ps.oneshot():
                proc.rss_peak = max(proc.rss_peak, ps.memory_info().rss)
                times = ps.cpu_times()
            proc.cpu_seconds = times.user + times.system
            time.sleep(every)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass


def stop_started() -> None:
    """Kill the processes this bench started (by pid) that are still running."""
    for proc in STARTED:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(10)


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, what: str, every: float = 0.02
) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)
    return value


def importtime_top(stderr: str, n: int = 15) -> list[dict[str, Any]]:
    """The slowest imports (cumulative µs) from `python -X importtime` output."""
    pattern = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")
    rows: list[dict[str, Any]] = [
        {"self_us": int(m[1]), "cumulative_us": int(m[2]), "depth": len(m[3]) // 2, "module": m[4]}
        for m in map(pattern.match, stderr.splitlines())
        if m
    ]
    total = sum(r["cumulative_us"] for r in rows if r["depth"] == 0)
    top = sorted(rows, key=lambda r: r["cumulative_us"], reverse=True)
    return [{"total_top_level_us": total}, *top[:n]]


@dataclass
class Ctx:
    """One benchmark run's settings and resources, handed to every section."""

    quick: bool
    reps: int
    work: Path
    dbs: DBs
    _n: int = field(default=0)

    @property
    def backends(self) -> list[str]:
        return ["sqlite", "postgresql"] if self.dbs.admin is not None else ["sqlite"]

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def run_dir(self, name: str) -> Path:
        """A fresh directory for one run: its config, consoles and JSONL logs."""
        self._n += 1
        safe = re.sub(r"[^\w.-]+", "-", name)
        path = self.work / f"{self._n:03d}-{safe}"
        path.mkdir(parents=True)
        return path

    def renewald(self, db: RunDB, name: str, args: Sequence[str], *, sample: bool = True,
                 under: Sequence[str] = (), **config: Any) -> Proc:  # fmt: skip
        """`renewald ARGS` on `db` (`under` a tool: py-spy), in a fresh run directory with a
        config of its own."""
        run_dir = self.run_dir(name)
        env = renewald_env(db.url, self.config(run_dir, **config))
        return spawn([*under, RENEWALD, *args], env=env, cwd=run_dir, sample=sample)

    def daemon(self, db: RunDB, name: str, *, sample: bool = True) -> Proc:
        """`renewald run` on `db`, once it has registered (its first poll comes next)."""
        proc = self.renewald(db, name, ["run"], sample=sample)
        registered = "SELECT count(*) FROM renewald_daemons"
        wait_until(lambda: db.one(registered) or proc.popen.poll() is not None, timeout=30,
                   what=f"the daemon of {name} to register")  # fmt: skip
        if proc.popen.poll() is not None:
            raise RuntimeError(f"renewald run exited: {proc.tail()}")
        return proc

    def config(self, run_dir: Path, *, extra: str = "", **tables: dict[str, Any]) -> Path:
        """A config.toml with renewald's defaults except where the bench says otherwise
        (`daemon={"workers": 8}`, `logging={"level": "warning"}`)."""
        logs = {"dir": str(run_dir / "logs"), "console": "json", **tables.pop("logging", {})}
        lines = []
        for table, values in {**tables, "logging": logs}.items():
            lines += [f"[{table}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
        path = run_dir / "renewald.toml"
        path.write_text("\n".join([*lines, extra]) + "\n")
        return path
