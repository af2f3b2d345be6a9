"""From a run's record to the targets (met / missed) and to bench/results.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import fmt, fmt_spread

MARKER = "<!-- Everything below this line is written by hand and kept when the bench reruns. -->"


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _med(d: Any, *path: str) -> float | None:
    s = _get(d, *path)
    return s.get("median") if isinstance(s, dict) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _target(
    name: str,
    value: float | None,
    op: str,
    limit: float,
    unit: str,
    *,
    extra: bool = True,
    detail: str = "",
) -> dict[str, Any]:
    if value is None:
        met = None
    elif op == ">=":
        met = value >= limit and extra
    elif op == "<=":
        met = value <= limit and extra
    else:
        met = value < limit and extra
    return {
        "target": name,
        "value": value,
        "op": op,
        "limit": limit,
        "unit": unit,
        "met": met,
        "detail": detail,
    }


def targets(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15's "Done when", from the peers, io, footprint and pickup sections."""
    s = record.get("sections", {})
    peers = s.get("peers", {})

    def rate(key: str) -> float | None:
        return _med(peers, "summary", key, "jobs_per_s")

    out = []
    for name, ours, theirs, limit in (
        ("SQLite run --once >= 1.0x bare per-job loop (JSONL)", "renewald-sqlite",
         "bare-sqlite-job", 1.0),
        ("SQLite run --once >= 2.5x Huey", "renewald-sqlite", "huey", 2.5),
        ("PostgreSQL 1 daemon >= 1.0x PgQueuer", "renewald-postgresql-1", "pgqueuer", 1.0),
        ("PostgreSQL 1 daemon >= 10x Procrastinate", "renewald-postgresql-1",
         "procrastinate", 10.0),
    ):  # fmt: skip
        out.append(_target(name, _ratio(rate(ours), rate(theirs)), ">=", limit, "x"))
    io = s.get("io", {})
    one, three = (_med(io, "summary", f"postgresql-{d}", "deliveries_per_s") for d in (1, 3))
    out.append(
        _target("I/O-bound: 3 daemons >= 2.9x one daemon", _ratio(three, one), ">=", 2.9, "x")
    )
    for key in ("postgresql-1", "postgresql-3"):
        v = _med(io, "summary", key, "of_ideal")
        out.append(
            _target(f"I/O-bound {key} >= 95% of ideal", v * 100 if v else None, ">=", 95, "%")
        )
    fp, pickup = s.get("footprint", {}), s.get("pickup", {})
    for backend in ("sqlite", "postgresql"):
        cpu = _get(fp, "idle", backend, "cpu_pct_of_core")
        out.append(_target(f"idle CPU < 0.3% of a core ({backend})", cpu, "<", 0.3, "%"))
    for backend in ("sqlite", "postgresql"):
        p50 = _med(pickup, backend, "summary", "due", "p50")
        out.append(_target(f"pickup p50 <= 5 ms, job inserted due ({backend})", p50, "<=", 5, "ms"))
    return out


def _met(t: dict[str, Any]) -> str:
    return {True: "**met**", False: "**missed**", None: "not measured"}[t["met"]]


def _val(v: float | None, unit: str) -> str:
    if v is None:
        return "\u2013"
    digits = 3 if abs(v) < 1 else (2 if abs(v) < 10 else 1)
    if unit in ("ms",) and abs(v) >= 10:
        digits = 0
    return f"{v:,.{digits}f} {unit}".replace(" x", "\u00d7").replace(" %", "%")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def markdown(record: dict[str, Any], *, json_name: str) -> str:
    m = record["machine"]
    s = record["sections"]
    reps = record["reps"]
    L: list[str] = []
    L.append("# renewald benchmark results")
    L.append("")
    L.append(
        f"Written by `python -m bench{' --quick' if record['mode'] == 'quick' else ''}` at "
        f"{record['timestamp']} ({record['mode']} run, {reps} repetition(s): medians with "
        f"min-max in brackets; total {record['timing'].get('total', 0):.0f} s). The raw record "
        f"is [`results/{json_name}`](results/{json_name}). How to run: [README.md](README.md)."
    )
    L.append("")
    L.append("## Machine")
    L.append("")
    pkgs = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items())
    pgs = ", ".join(f"{k}={v}" for k, v in (m.get("postgresql_settings") or {}).items())
    load = "; ".join(f"{k} {v}" for k, v in record.get("loadavg", {}).items())
    L += _table(
        ["machine", ""],
        [
            ["CPUs (`nproc`)", str(m.get("nproc"))],
            ["CPU model", str(m.get("cpu_model"))],
            ["memory", f"{m.get('memory_gb')} GB"],
            ["kernel", str(m.get("kernel"))],
            ["Python", f"{m.get('python')} ({m.get('python_impl')})"],
            ["SQLite", str(m.get("sqlite"))],
            ["PostgreSQL", f"{m.get('postgresql')} ({pgs})"],
            ["packages", pkgs],
            ["renewald commit", f"{m.get('git_commit')} (branch {m.get('git_branch')})"],
            [
                "load average (1/5/15 min)",
                f"at start {m.get('loadavg_at_start')}; after each section: {load}",
            ],
            ["seconds per section", ", ".join(f"{k} {v}" for k, v in record["timing"].items())],
        ],
    )
    L.append("")
    L.append(
        "The machine is shared: other engineers ran test suites throughout, so absolute rates "
        "move by a factor of 2 or more between repetitions. Ratios taken within one "
        "repetition order (configurations interleaved) are the steadier figures."
    )
    L.append("")
    L.append("## Targets")
    L.append("")
    L += _table(
        ["target", "measured", "result", "note"],
        [
            [t["target"], _val(t["value"], t["unit"]), _met(t), t.get("detail", "")]
            for t in record.get("targets", [])
        ],
    )
    L.append("")
    L += _peers(s.get("peers"))
    L += _limit(s.get("limit"))
    L += _drain(s.get("drain"), s.get("limit"))
    L += _pickup(s.get("pickup"))
    L += _poll(s.get("poll"))
    L += _io(s.get("io"))
    L += _footprint(s.get("footprint"))
    errors = {k: v["error"] for k, v in s.items() if isinstance(v, dict) and "error" in v}
    if errors:
        L.append("## Sections that failed")
        L.append("")
        L += [f"- {k}: `{v}`" for k, v in errors.items()]
        L.append("")
    return "\n".join(L).rstrip() + "\n"


def _limit(sec: dict[str, Any] | None) -> list[str]:
    if not sec or "summary" not in sec:
        return []
    L = ["## 1. Bare-SQL limit", ""]
    L.append(
        "Claim → no-op → fenced job update + attempt insert → one JSONL line per attempt, in "
        "plain `sqlite3` (WAL, synchronous=NORMAL, BEGIN IMMEDIATE) and plain psycopg "
        "(`FOR UPDATE SKIP LOCKED`, no advisory lock), renewald's own statements compiled to "
        "SQL text (bench/statements.py, bench/bare.py). Two transactions per claim. Data: the "
        "drain's set (due jobs, "
        "two per conversation); each run stops after the job count shown."
    )
    L.append("")
    names = {
        "sqlite-job": "SQLite, per job",
        "sqlite-100": "SQLite, batches of 100",
        "postgresql-job-1": "PostgreSQL, per job, 1 process",
        "postgresql-job-3": "PostgreSQL, per job, 3 processes",
        "postgresql-100-1": "PostgreSQL, batches of 100, 1 process",
        "postgresql-100-3": "PostgreSQL, batches of 100, 3 processes",
    }
    rows = []
    for key, v in sec["summary"].items():
        rows.append([names.get(key, key), f"{v['jobs']:,}", fmt_spread(v["jobs_per_s"])])
    L += _table(["loop", "jobs per run", "jobs/s"], rows)
    L.append("")
    return L


def _drain(sec: dict[str, Any] | None, limit: dict[str, Any] | None) -> list[str]:
    if not sec or "summary" not in sec:
        return []
    ds = sec["dataset"]
    L = ["## 2. renewald drain (`run --once`)", ""]
    L.append(
        f"{ds['jobs']:,} due jobs over {ds['conversations']:,} conversations, `log` adapter, "
        "default config (workers 8, batch 32), `renewald run --once` as real processes, "
        "console (JSON lines: one `delivery_logged` per job from the `log` adapter plus the "
        "daemon's own) redirected to a file. jobs/s = jobs / process wall time (start-up "
        "included); steady = jobs / (last finished_at - first started_at). Ratios: to the "
        "bare per-job loop and to the bare batch-100 loop of the same backend and process "
        "count."
    )
    L.append("")
    bare = {
        "sqlite-1": ("sqlite-job", "sqlite-100"),
        "sqlite-1-quiet": ("sqlite-job", "sqlite-100"),
        "postgresql-1": ("postgresql-job-1", "postgresql-100-1"),
        "postgresql-3": ("postgresql-job-3", "postgresql-100-3"),
    }
    names = {
        "sqlite-1": "SQLite",
        "sqlite-1-quiet": "SQLite, console level = warning",
        "postgresql-1": "PostgreSQL, 1 daemon",
        "postgresql-3": "PostgreSQL, 3 daemons",
    }
    rows = []
    for key, v in sec["summary"].items():
        per_job, batch = bare.get(key, (None, None))
        r1 = _ratio(_med(v, "jobs_per_s"), _med(limit, "summary", per_job or "", "jobs_per_s"))
        r2 = _ratio(_med(v, "jobs_per_s"), _med(limit, "summary", batch or "", "jobs_per_s"))
        rows.append(
            [
                names.get(key, key),
                fmt_spread(v["jobs_per_s"]),
                fmt_spread(v["steady_jobs_per_s"]),
                _val(r1, "x") if r1 else "\u2013",
                _val(r2, "x") if r2 else "\u2013",
                fmt_spread(v["rss_peak_mb"], 1),
                fmt_spread(v["cpu_s_per_1k_jobs"], 2),
                f"{v['console_bytes_per_job']:.0f} B",
            ]
        )
    L += _table(
        [
            "daemons",
            "jobs/s",
            "steady jobs/s",
            "÷ bare per-job",
            "÷ bare batch-100",
            "peak RSS MB",
            "daemon CPU s per 1k jobs",
            "console per job",
        ],
        rows,
    )
    errors = [e for v in sec["summary"].values() for e in v.get("errors", [])]
    if errors:
        L += ["", "Errors: " + "; ".join(errors)]
    L.append("")
    return L


def _pickup(sec: dict[str, Any] | None) -> list[str]:
    if not sec:
        return []
    L = ["## 3. Pickup latency (`renewald run`, default config)", ""]
    any_b = next((v for v in sec.values() if isinstance(v, dict) and "summary" in v), None)
    if any_b:
        L.append(
            f"Jobs inserted one transaction each at {any_b['rate_per_s']}/s by the bench "
            f"process (as the tracker would), each in its own conversation, for "
            f"{any_b['window_s']:g} s per window; scheduled {any_b['lead_ms']} ms ahead, or "
            "already due at insert. Latency = `started_at - next_attempt_at` from the database "
            "(ms; the columns are whole milliseconds). Per percentile: the median over windows "
            "(min-max); 'all' pools every window."
        )
        L.append("")
    rows = []
    for backend, v in sec.items():
        if not isinstance(v, dict) or "summary" not in v:
            continue
        for kind in ("scheduled", "due"):
            k = v["summary"][kind]
            pooled = k["pooled"]
            rows.append(
                [
                    backend,
                    kind,
                    fmt_spread(k["p50"]),
                    fmt_spread(k["p95"]),
                    fmt_spread(k["p99"]),
                    fmt_spread(k["max"]),
                    f"{fmt(pooled.get('p50'))} / {fmt(pooled.get('p99'))} / "
                    f"{fmt(pooled.get('max'))} (n={pooled.get('n', 0):,})",
                ]
            )
    L += _table(
        ["backend", "jobs", "p50 ms", "p95 ms", "p99 ms", "max ms", "all: p50 / p99 / max"], rows
    )
    L.append("")
    return L


def _poll(sec: dict[str, Any] | None) -> list[str]:
    if not sec or "rows" not in sec:
        return []
    ds = sec["dataset"]
    L = [f"## 4. Poll cost at scale ({sec['rows']:,} rows)", ""]
    L.append(
        f"{ds['finished']:,} finished (done/failed), {ds['jobs']:,} pending and due, "
        f"{ds['future']:,} pending later; {ds['conversations']:,} conversations. Per statement "
        "the median of per-repetition medians (ms, client side: Python driver call to rows "
        "fetched); claims commit 32 jobs each. See bench/sections/pollcost.py for exactly "
        "what each row measures."
    )
    L.append("")
    rows = []
    for backend in ("sqlite", "postgresql"):
        v = sec.get(backend)
        if not v:
            continue
        t = v["timings"]
        plan = v["plans"]["due"]
        server = plan.get("execution_ms")
        rows.append(
            [
                backend,
                f"{v['load_s']:.0f} s",
                fmt_spread(t["due"]["ms"], 3),
                f"{server:.3f}" if server is not None else "\u2013",
                fmt_spread(t["due_empty"]["ms"], 3) if "due_empty" in t else "\u2013",
                fmt_spread(t["next_due"]["ms"], 3),
                fmt_spread(t["claim_sql"]["ms"], 2),
                fmt_spread(t["claim_renewald"]["ms"], 2),
                ("yes" if plan["uses_status_due_index"] else "no")
                + (", table scan!" if plan["full_scan"] else ""),
            ]
        )
    L += _table(
        [
            "backend",
            "bulk load",
            "due query ms (backlog)",
            "due: server execution ms (EXPLAIN ANALYZE)",
            "due query ms, nothing due",
            "next due ms",
            "claim 32 (SQL) ms",
            "claim 32 (renewald Store) ms",
            "due plan on idx_renewal_jobs_status_due",
        ],
        rows,
    )
    L.append("")
    for backend in ("sqlite", "postgresql"):
        v = sec.get(backend)
        if not v:
            continue
        for name in ("due", "claim", "next_due"):
            label = "EXPLAIN QUERY PLAN" if backend == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS)"
            L.append(f"<details><summary>{backend}: {label} — {name}</summary>")
            L.append("")
            L.append("```")
            L.append(v["plans"][name]["plan"])
            L.append("```")
            L.append("</details>")
            L.append("")
    return L


def _io(sec: dict[str, Any] | None) -> list[str]:
    if not sec or "summary" not in sec:
        return []
    L = ["## I/O-bound scale-out (`http.webhook`, target answers after 50 ms)", ""]
    L.append(
        f"{sec['jobs']:,} jobs, one conversation each, `run --once --workers {sec['workers']}` "
        "per daemon; ideal = daemons x workers / 50 ms. Rate = jobs / (last attempt finished - "
        "first attempt started); 'with start-up' uses first spawn to last exit."
    )
    L.append("")
    rows = []
    for key, v in sec["summary"].items():
        rows.append(
            [
                key,
                fmt(v.get("ideal_per_s")),
                fmt_spread(v["deliveries_per_s"]),
                fmt_spread(_scaled(v["of_ideal"], 100), 0, "%"),
                fmt_spread(v["wall_deliveries_per_s"]),
                fmt_spread(v["server_max_in_flight"]),
                fmt_spread(v["cpu_ms_per_delivery"], 2),
            ]
        )
    L += _table(
        [
            "daemons",
            "ideal /s",
            "deliveries/s",
            "of ideal",
            "with start-up /s",
            "max in flight at the target",
            "CPU ms per delivery",
        ],
        rows,
    )
    L.append("")
    return L


def _peers(sec: dict[str, Any] | None) -> list[str]:
    if not sec or "summary" not in sec:
        return []
    L = [f"## Throughput beside the peers ({sec['jobs']:,} no-op jobs, same run)", ""]
    L.append(
        "jobs/s = jobs / wall time of the process, spawn to exit (start-up included), except "
        "the bare loops (timed inside the loop; the PostgreSQL per-job loop stops after "
        "3,000 jobs). Ratio = renewald on the same backend / the row."
    )
    L.append("")
    summ = sec["summary"]
    does_less = sec.get("does_less", {})
    bare = "renewald's own statements in plain sqlite3/psycopg, attempt row + JSONL line per job"
    notes = {
        "renewald-sqlite": "`run --once`: fenced lease, attempt row, per-conversation rule, JSONL",
        "renewald-postgresql-1": "`run --once`, 1 daemon: as above",
        "bare-sqlite-job": bare + ", claim one at a time",
        "bare-postgresql-job-1": bare + ", claim one at a time",
        "bare-postgresql-100-1": bare + ", batches of 100",
        **does_less,
    }
    rows = []
    for key, v in summ.items():
        ours = "renewald-sqlite" if "sqlite" in key or key == "huey" else "renewald-postgresql-1"
        ratio = _ratio(_med(summ, ours, "jobs_per_s"), _med(v, "jobs_per_s"))
        rows.append(
            [
                key,
                fmt_spread(v["jobs_per_s"]),
                "" if key == ours else _val(ratio, "x"),
                notes.get(key, ""),
            ]
        )
    L += _table(["configuration", "jobs/s", "renewald /", "per job, compared with renewald"], rows)
    L.append("")
    L.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sec.get("versions", {}).items()))
    L.append("")
    return L


def _scaled(sp: dict[str, Any], k: float) -> dict[str, Any]:
    return {
        key: (val * k if key in ("median", "min", "max") and val is not None else val)
        for key, val in sp.items()
    }


def _footprint(sec: dict[str, Any] | None) -> list[str]:
    if not sec:
        return []
    L = ["## 6. Footprint", ""]
    idle = sec.get("idle", {})
    if idle:
        rows = [
            [
                b,
                f"{v['window_s']:.0f} s",
                f"{v['cpu_pct_of_core']:.2f}%",
                f"{v['rss_mb']:.1f}",
                f"{v['uss_mb']:.1f}",
                str(v["threads"]),
            ]
            for b, v in idle.items()
        ]
        L.append("Idle `renewald run` on an empty database, default config:")
        L.append("")
        L += _table(
            ["backend", "window", "CPU (% of one core)", "RSS MB", "USS MB", "threads"], rows
        )
        L.append("")
    drss = sec.get("rss_draining_mb")
    if drss:
        L.append(
            "Peak RSS while draining (section 2): "
            + ", ".join(f"{k} {fmt_spread(v, 1)} MB" for k, v in drss.items())
            + "."
        )
        L.append("")
    st = sec.get("startup", {})
    if st:
        rows = [
            ["`python -c pass`", fmt_spread(st.get("python_c_pass_s"), 3)],
            ["`renewald --version`", fmt_spread(st.get("renewald_version_s"), 3)],
        ]
        for b in ("sqlite", "postgresql"):
            if f"run_once_empty_{b}_s" in st:
                rows.append(
                    [
                        f"`renewald run --once`, empty database ({b})",
                        fmt_spread(st[f"run_once_empty_{b}_s"], 3),
                    ]
                )
        L += _table(["start-up (spawn to exit)", "seconds"], rows)
        L.append("")
        top = st.get("importtime_top") or []
        if len(top) > 1:
            L.append(
                f"`python -X importtime renewald run --once` (SQLite): top-level imports total "
                f"{top[0]['total_top_level_us'] / 1000:.0f} ms; slowest (cumulative):"
            )
            L.append("")
            L += _table(
                ["module", "cumulative ms", "self ms"],
                [
                    [
                        f"`{r['module']}`",
                        f"{r['cumulative_us'] / 1000:.1f}",
                        f"{r['self_us'] / 1000:.1f}",
                    ]
                    for r in top[1:]
                ],
            )
            L.append("")
    return L


def write_results_md(path: Path, text: str) -> None:
    """Rewrite the generated part of results.md; keep the hand-written part below MARKER."""
    kept = (
        "\n## Profiles and plan\n\n(run `python -m bench --profile`, then write the findings "
        "here)\n"
    )
    if path.exists():
        old = path.read_text()
        if MARKER in old:
            kept = old.split(MARKER, 1)[1]
    path.write_text(text.rstrip() + "\n\n" + MARKER + kept)
