"""The metrics a dashboard needs, checked with Prometheus' own tool on a running daemon:
`promtool check metrics` on a live scrape, `promtool check rules` on the shipped alert
file, and every series the alert file and the Grafana dashboard name is on the scrape.

promtool comes with Debian's `prometheus` package (.ci/run installs it); without it the
test skips, except under CI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from renewald.store import Store
from renewald.store.schema import conversation_links
from tests.e2e.conftest import HookTarget, Renewald, add_webhook_jobs
from tests.e2e.test_ops import get, listening_address
from tests.waiting import wait_for

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
RULES = MONITORING / "renewald.rules.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
SERIES = re.compile(r"\b((?:renewald|process)_[a-z_]+)\b")
# Made by Prometheus itself for every target, never on a scrape.
SYNTHETIC = {"up"}


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (CI is set: install Debian's prometheus package)")
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    return found


def names_on(scrape: str) -> set[str]:
    """Every series name a scrape offers: families (even without samples) and samples."""
    names: set[str] = set()
    for family in text_string_to_metric_families(scrape):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "info":
            names.add(f"{family.name}_info")
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "count", "sum"))
        names.update(s.name for s in family.samples)
    return names


def exprs_in_dashboard() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_rules_file_is_valid(promtool: str) -> None:
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_live_scrape_passes_promtool_and_has_every_dashboard_series(
    renewald: Renewald, e2e_store: Store, hook_target: HookTarget, promtool: str
) -> None:
    renewald.write_config(extra='[http]\nlisten = "127.0.0.1:0"')
    hook_target.status = lambda job_id, attempt: 503 if attempt == 1 else 200
    add_webhook_jobs(e2e_store, hook_target.url, ["flaky", "typo"])
    # A tracker's target kind renewald does not know: its label is folded into `other`.
    e2e_store.write(
        lambda c: c.execute(
            update(conversation_links)
            .where(conversation_links.c.local_conversation_id == "conv-typo")
            .values(target_kind="nosuch")
        )
    )
    proc = renewald.start()
    try:
        base = f"http://{listening_address(renewald, proc)}"
        renewald.enqueue("c1", "hello", "--target-kind", "log")

        def scraped() -> str | None:
            code, text = get(f"{base}/metrics")
            assert code == 200
            done = 'renewald_jobs_finished_total{reason="delivered"} 2.0'
            return text if done in text and "renewald_last_successful_poll" in text else None

        scrape = wait_for(scraped, timeout=60, what="both deliveries in /metrics")
    finally:
        code, err = renewald.stop(proc)
    assert code == 0, err

    out = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr

    assert "_created" not in scrape
    assert 'renewald_jobs_finished_total{reason="permanent"} 1.0' in scrape
    assert 'renewald_attempts_total{adapter="other",outcome="permanent"} 1.0' in scrape
    assert "nosuch" not in scrape
    assert (
        'renewald_delivery_duration_seconds_count{adapter="http.webhook",outcome="retry"} 1.0'
        in scrape
    )
    assert "renewald_build_info{" in scrape and "process_cpu_seconds_total" in scrape
    assert "renewald_in_flight 0.0" in scrape
    assert "Database-wide" in next(
        x for x in scrape.splitlines() if x.startswith("# HELP renewald_jobs_running")
    )

    offered = names_on(scrape)
    exprs = exprs_in_dashboard() + re.findall(r"expr: (.+)", RULES.read_text())
    named = {name for expr in exprs for name in SERIES.findall(expr)}
    assert named, "the dashboard names no series?"
    assert named - SYNTHETIC <= offered, sorted(named - offered)
