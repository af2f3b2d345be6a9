"""From a run's record to the targets (met / missed) and to bench/results.md: each table is
a list of columns, (heading, cell of one summary row)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import DASH, fmt, fmt_spread

MARKER = "<!-- Everything below this line is written by hand and kept when the bench reruns. -->"
Column = tuple[str, Callable[[str, dict[str, Any]], str]]


def _get(d: Any, *path: str) -> Any:
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def _med(d: Any, *path: str) -> float | None:
    return _get(d, *path, "median")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _val(v: float | None, unit: str) -> str:
    if v is None:
        return DASH
    digits = 0 if unit == "ms" and abs(v) >= 10 else 3 if abs(v) < 1 else 2 if abs(v) < 10 else 1
    return f"{v:,.{digits}f} {unit}".replace(" x", "\u00d7").replace(" %", "%")


PAGE_MS = 50.0
_OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}
_RATE = {"peers": "jobs_per_s", "io": "deliveries_per_s"}
# (target, renewald's configuration, the other, least ratio)
PEER_TARGETS = (
    ("SQLite run --once >= 1.0x bare per-job loop (JSONL)", "renewald-sqlite", "bare-sqlite-job",
     1.0),
    ("SQLite run --once >= 2.5x Huey", "renewald-sqlite", "huey", 2.5),
    ("PostgreSQL 1 daemon >= 1.0x PgQueuer", "renewald-postgresql-1", "pgqueuer", 1.0),
    ("PostgreSQL 1 daemon >= 10x Procrastinate", "renewald-postgresql-1", "procrastinate", 10.0),
)  # fmt: skip


def targets(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15's "Done when", from the peers, io, footprint and pickup sections."""
    s = record.get("sections", {})

    def rate(sec: str, key: str) -> float | None:
        return _med(s, sec, "summary", key, _RATE[sec])

    rows = [
        (name, _ratio(rate("peers", a), rate("peers", b)), ">=", x, "x")
        for name, a, b, x in PEER_TARGETS
    ]
    io = _ratio(rate("io", "postgresql-3"), rate("io", "postgresql-1"))
    rows.append(("I/O-bound: 3 daemons >= 2.9x one daemon", io, ">=", 2.9, "x"))
    for d in ("postgresql-1", "postgresql-3"):
        ideal = _med(s, "io", "summary", d, "of_ideal_pct")
        rows.append((f"I/O-bound {d} >= 95% of ideal", ideal, ">=", 95, "%"))
    for b in ("sqlite", "postgresql"):
        cpu = _get(s, "footprint", "idle", b, "cpu_pct_of_core")
        rows.append((f"idle CPU < 0.3% of a core ({b})", cpu, "<", 0.3, "%"))
        p50 = _med(s, "pickup", b, "summary", "due", "p50")
        rows.append((f"pickup p50 <= 5 ms, job inserted due ({b})", p50, "<=", 5, "ms"))
        pages = [p["median_ms"] for p in (_get(s, "pages", b) or {}).values()]
        rows.append((f"status page: every page <= {PAGE_MS:g} ms ({b})", max(pages, default=None),
                     "<=", PAGE_MS, "ms"))  # fmt: skip
    return [
        {"target": n, "value": v, "op": op, "limit": lim, "unit": unit,
         "met": None if v is None else _OPS[op](v, lim)}
        for n, v, op, lim, unit in rows
    ]  # fmt: skip


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table, a blank line after it (results.md, the profiles)."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return [*out, *("| " + " | ".join(r) + " |" for r in rows), ""]


def _columns(summary: dict[str, Any], columns: list[Column]) -> list[str]:
    rows = [[k, *(cell(k, v) for _, cell in columns)] for k, v in summary.items()]
    return table(["", *(h for h, _ in columns)], rows)


def _sp(key: str, digits: int = 0, unit: str = "") -> Callable[[str, dict[str, Any]], str]:
    return lambda _k, v: fmt_spread(v.get(key), digits, unit)


def _txt(key: str, digits: int | None = None) -> Callable[[str, dict[str, Any]], str]:
    return lambda _k, v: str(v[key]) if digits is None else fmt(v[key], digits)


def markdown(record: dict[str, Any], *, json_name: str) -> str:
    m, s = record["machine"], record["sections"]

    def items(d: dict[str, Any], sep: str = " ") -> str:
        return ", ".join(f"{k}{sep}{v}" for k, v in (d or {}).items())

    machine = [
        ["CPUs, memory, kernel",
         f"{m['nproc']} x {m['cpu_model']}, {m['memory_gb']} GB, {m['kernel']}"],
        ["Python, SQLite, PostgreSQL",
         f"{m['python']}, {m['sqlite']}, {items(m['postgresql'], '=')}"],
        ["packages", items(m["packages"])],
        ["renewald commit", f"{m['git_commit']} (branch {m['git_branch']})"],
        ["bytecode of renewald and bench/", m.get("bytecode", "not recorded")],
        ["load average (1/5/15 min)", f"at start {m['loadavg_at_start']}; after each "
         f"section: {items(record['loadavg'])}"],
        ["seconds per section", items(record["timing"])],
    ]  # fmt: skip
    result = {True: "**met**", False: "**missed**", None: "not measured"}
    L = [
        "# renewald benchmark results", "",
        f"Written by `python -m bench{' --quick' if record['mode'] == 'quick' else ''}` at "
        f"{record['timestamp']} ({record['mode']} run, {record['reps']} repetition(s): medians "
        f"with min-max in brackets). The raw record is [`results/{json_name}`](results/"
        f"{json_name}). How to run: [README.md](README.md).", "",
        "## Machine", "", *table(["machine", ""], machine),
        "The machine is shared: absolute rates move by 2x between repetitions; ratios within "
        "one repetition (configurations interleaved) are steadier.", "",
        "## Targets", "",
        *table(["target", "measured", "result"], [[t["target"], _val(t["value"], t["unit"]),
                                                     result[t["met"]]] for t in record["targets"]]),
    ]  # fmt: skip
    for name, render in SECTIONS:
        sec = s.get(name)
        if isinstance(sec, dict) and "error" not in sec:
            L += render(sec, s)
    errors = {k: v["error"] for k, v in s.items() if isinstance(v, dict) and "error" in v}
    if errors:
        L += ["## Sections that failed", "", *(f"- {k}: `{v}`" for k, v in errors.items()), ""]
    return "\n".join(L).rstrip() + "\n"


def _peers(sec: dict[str, Any], _s: dict[str, Any]) -> list[str]:
    summ = sec["summary"]
    bare = "renewald's own statements in plain sqlite3/psycopg, attempt row + JSONL line per job"
    notes = {
        "renewald-sqlite": "`run --once`: fenced lease, attempt row, per-conversation rule, JSONL",
        "renewald-postgresql-1": "`run --once`, 1 daemon: as above",
        "bare-sqlite-job": f"{bare}, claim one at a time",
        "bare-postgresql-job-1": f"{bare}, claim one at a time",
        "bare-postgresql-100-1": f"{bare}, batches of 100",
        **sec.get("does_less", {}),
    }

    def ratio(key: str, v: dict[str, Any]) -> str:
        ours = "renewald-sqlite" if "sqlite" in key or key == "huey" else "renewald-postgresql-1"
        mine = _ratio(_med(summ, ours, "jobs_per_s"), _med(v, "jobs_per_s"))
        return "" if key == ours else _val(mine, "x")

    return [
        f"## Throughput beside the peers ({sec['jobs']:,} no-op jobs, same run)", "",
        "Every configuration timed the same way: jobs / wall time of a child process, spawn "
        "to exit (start-up included). Ratio = renewald on the same backend / the row.", "",
        *_columns(summ, [("jobs/s", _sp("jobs_per_s")), ("renewald /", ratio),
                         ("per job, compared with renewald", lambda k, _v: notes.get(k, ""))]),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sec.get("versions", {}).items()), "",
    ]  # fmt: skip


def _limit(sec: dict[str, Any], _s: dict[str, Any]) -> list[str]:
    return [
        "## 1. Bare-SQL limit", "",
        "Claim → no-op → fenced update + attempt row → JSONL line, renewald's statements in "
        "plain sqlite3 / psycopg (bench/bare.py), on the drain's data set. In the loop: first "
        "loop start to last loop end; spawn to exit: start-up included.", "",
        *_columns(sec["summary"], [("jobs per run", lambda _k, v: f"{v['jobs']:,}"),
                                   ("jobs/s in the loop", _sp("loop_jobs_per_s")),
                                   ("jobs/s spawn to exit", _sp("jobs_per_s"))]),
    ]  # fmt: skip


def _drain(sec: dict[str, Any], s: dict[str, Any]) -> list[str]:
    ds = sec["dataset"]
    lite = ("sqlite-job", "sqlite-100")
    bare = {"sqlite-1": lite, "sqlite-1-quiet": lite,
            **{f"postgresql-{n}": (f"postgresql-job-{n}", f"postgresql-100-{n}")
               for n in (1, 3)}}  # fmt: skip

    def over(i: int) -> Callable[[str, dict[str, Any]], str]:
        def cell(key: str, v: dict[str, Any]) -> str:
            pair = bare.get(key)
            limit = _med(s.get("limit"), "summary", pair[i], "loop_jobs_per_s") if pair else None
            return _val(_ratio(_med(v, "jobs_per_s"), limit), "x")

        return cell

    return [
        "## 2. renewald drain (`run --once`)", "",
        f"{ds['jobs']:,} due `log` jobs over {ds['conversations']:,} conversations, default "
        "config. jobs/s: spawn to exit; steady: last finished_at - first started_at. Ratios: "
        "to the bare loops' in-loop rates (same backend and process count).", "",
        *_columns(sec["summary"], [
            ("jobs/s", _sp("jobs_per_s")), ("steady jobs/s", _sp("steady_jobs_per_s")),
            ("÷ bare per-job", over(0)), ("÷ bare batch-100", over(1)),
            ("peak RSS MB", _sp("rss_peak_mb", 1)),
            ("CPU s per 1k jobs", _sp("cpu_s_per_1k_jobs", 2)),
            ("console per job", _sp("console_bytes_per_job", 0, " B")),
        ]),
    ]  # fmt: skip


def _pickup(sec: dict[str, Any], _s: dict[str, Any]) -> list[str]:
    rows = {f"{b} {k}": v["summary"][k] for b, v in sec.items() for k in ("scheduled", "due")}
    one = next(iter(sec.values()))

    def pooled(_k: str, v: dict[str, Any]) -> str:
        p = v["pooled"]
        return " / ".join(fmt(p.get(k)) for k in ("p50", "p99", "max")) + f" (n={p.get('n', 0):,})"

    return [
        "## 3. Pickup latency (`renewald run`, default config)", "",
        f"{one['rate_per_s']} jobs/s for {one['window_s']:g} s a window, scheduled "
        f"{one['lead_ms']} ms ahead or due at insert. Per percentile: the median over windows "
        "(min-max); 'all' pools every window.", "",
        *_columns(rows, [*((f"{p} ms", _sp(p)) for p in ("p50", "p95", "p99", "max")),
                         ("all: p50 / p99 / max", pooled)]),
    ]  # fmt: skip


def _poll(sec: dict[str, Any], _s: dict[str, Any]) -> list[str]:
    ds = sec["dataset"]
    backends = {b: sec[b] for b in ("sqlite", "postgresql") if b in sec}
    rows: dict[str, Any] = {
        b: {**{k: t["ms"] for k, t in v["timings"].items()}, "load": f"{v['load_s']:.0f} s",
            "server": fmt(v["plans"]["due"]["execution_ms"], 3),
            "index": ("yes" if v["plans"]["due"]["uses_status_due_index"] else "no")
            + (", table scan!" if v["plans"]["due"]["full_scan"] else "")}
        for b, v in backends.items()
    }  # fmt: skip

    def t(name: str, digits: int = 3) -> Column:
        return f"{name} ms", _sp(name, digits)

    L = [
        f"## 4. Poll cost at scale ({sec['rows']:,} rows)", "",
        f"{ds['finished']:,} finished, {ds['jobs']:,} due, {ds['future']:,} later. Medians "
        "of per-repetition medians (ms, client side); see bench/sections/pollcost.py.", "",
        *_columns(rows, [
            ("bulk load", _txt("load")), t("due"),
            ("due: server ms (EXPLAIN ANALYZE)", _txt("server")),
            t("due_empty"), t("next_due"), t("claim_sql", 2), t("claim_renewald", 2),
            ("due plan on the status/due index", _txt("index")),
        ]),
    ]  # fmt: skip
    for b, v in backends.items():
        for name, plan in v["plans"].items():
            L += [f"<details><summary>{b}: plan of {name}</summary>", "", "```", plan["plan"],
                  "```", "</details>", ""]  # fmt: skip
    return L


def _io(sec: dict[str, Any], _s: dict[str, Any]) -> list[str]:
    return [
        "## 5. I/O-bound scale-out (`http.webhook`, target answers after 50 ms)", "",
        f"{sec['jobs']:,} jobs, `--workers {sec['workers']}` per daemon; ideal = daemons x "
        "workers / 50 ms. Rate: first attempt started to last finished.", "",
        *_columns(sec["summary"], [
            ("ideal /s", _sp("ideal_per_s")), ("deliveries/s", _sp("deliveries_per_s")),
            ("of ideal", _sp("of_ideal_pct", 0, "%")),
            ("spawn to exit /s", _sp("wall_deliveries_per_s")),
            ("max in flight at the target", _sp("server_max_in_flight")),
            ("CPU ms per delivery", _sp("cpu_ms_per_delivery", 2)),
        ]),
    ]  # fmt: skip


def _footprint(sec: dict[str, Any], s: dict[str, Any]) -> list[str]:
    st = sec.get("startup", {})
    L = ["## 6. Footprint", "", "Idle `renewald run` on an empty database, default config:", "",
         *_columns(sec.get("idle", {}), [
             ("window s", _txt("window_s", 0)), ("CPU (% of one core)", _txt("cpu_pct_of_core", 2)),
             ("RSS MB", _txt("rss_mb", 1)), ("USS MB", _txt("uss_mb", 1)),
             ("threads", _txt("threads")),
         ])]  # fmt: skip
    if drain := _get(s, "drain", "summary"):
        peaks = (f"{k} {fmt_spread(v['rss_peak_mb'], 1)} MB" for k, v in drain.items())
        L += ["Peak RSS while draining (section 2): " + ", ".join(peaks) + ".", ""]
    names = {"python_c_pass_s": "`python -c pass`", "renewald_version_s": "`renewald --version`",
             **{f"run_once_empty_{b}_s": f"`renewald run --once`, empty database ({b})"
                for b in ("sqlite", "postgresql")}}  # fmt: skip
    L += table(["start-up (spawn to exit)", "seconds"],
                [[names[k], fmt_spread(v, 3)] for k, v in st.items() if k in names])  # fmt: skip
    top = st.get("importtime_top_sqlite") or []
    if len(top) > 1:
        L += [f"`python -X importtime renewald run --once` (SQLite): top-level imports "
              f"{top[0]['total_top_level_us'] / 1000:.0f} ms; slowest (cumulative):", "",
              *table(["module", "cumulative ms", "self ms"],
                      [[f"`{r['module']}`", fmt(r["cumulative_us"] / 1000, 1),
                        fmt(r["self_us"] / 1000, 1)] for r in top[1:]])]  # fmt: skip
    return L


def _pages(sec: dict[str, Any], _s: dict[str, Any]) -> list[str]:
    backends = [b for b in ("sqlite", "postgresql") if b in sec]
    rows = {page: {b: sec[b][page] for b in backends} for page in sec[backends[0]]}

    def cell(b: str) -> Column:
        return f"{b} median (max) ms", lambda _k, v: f"{v[b]['median_ms']} ({v[b]['max_ms']})"

    def met(_k: str, v: dict[str, Any]) -> str:
        return "yes" if all(x["median_ms"] <= PAGE_MS for x in v.values()) else "NO"

    return [
        f"## 7. Status page ({sec['rows']:,} jobs)", "",
        "Server time of one request (`StatusApp.route`: store reads, `explain`, Jinja2 render), "
        f"median of {sec['n']} after a warm-up; PostgreSQL after ANALYZE, without VACUUM.", "",
        *_columns(rows, [*map(cell, backends), (f"<= {PAGE_MS:g} ms", met)]),
    ]  # fmt: skip


SECTIONS = [("peers", _peers), ("limit", _limit), ("drain", _drain), ("pickup", _pickup),
            ("poll", _poll), ("io", _io), ("footprint", _footprint), ("pages", _pages)]  # fmt: skip


def write_results_md(path: Path, text: str) -> None:
    """Rewrite the generated part of results.md; keep the hand-written part below MARKER."""
    old = path.read_text() if path.exists() else ""
    kept = old.split(MARKER, 1)[1] if MARKER in old else "\n## Profiles and plan\n"
    path.write_text(text.rstrip() + "\n\n" + MARKER + kept)
