"""The status page in real headless Chromium against a live `renewald run` daemon
(`[http] listen`), on SQLite and PostgreSQL: every page opens, a job is followed from the
list to its detail, and script-injection canaries stored in a payload and a `last_error`
are shown as text and never run.

Debian's /usr/bin/chromium and /usr/bin/chromedriver, driven by Selenium with both paths
given (Selenium Manager never reaches for the network). Without them the tests are
skipped, except under CI, where that fails. With RENEWALD_SCREENSHOTS=DIR each page is
saved there as a PNG (docs/screenshots/ holds the committed ones).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from renewald.store import Store
from renewald.store.schema import renewal_jobs
from tests.conftest import fresh_pg_schema
from tests.e2e.conftest import Renewald
from tests.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CANARY = "<script>window.__pwned=1</script>"
IMG_CANARY = '<img src=x onerror="window.__pwned=1">'


def _require_chromium() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    reason = f"headless Chromium needs {CHROMIUM} and {CHROMEDRIVER}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('web') / 'artifact.db'}"
        return
    with fresh_pg_schema() as url:
        yield url


class Live:
    def __init__(self, base: str, delivered: str, failed: str) -> None:
        self.base = base
        self.delivered = delivered
        self.failed = failed


@pytest.fixture(scope="module")
def live(module_db_url: str, tmp_path_factory: Any) -> Iterator[Live]:
    """One daemon per backend: a job it delivered (canary payload), a failed job (canary
    last_error), a schedule."""
    r = Renewald(tmp_path_factory.mktemp("daemon"), module_db_url)
    r.write_config(extra='[http]\nlisten = "127.0.0.1:0"')
    try:
        assert r.run("migrate").returncode == 0
        delivered = r.enqueue("conv-web", f"hello {CANARY}{IMG_CANARY}", "--target-kind", "log")
        failed = r.enqueue("conv-web", "later", "--target-kind", "log", "--at", "+1h")
        added = r.run(
            "schedules", "add", "--conversation", "conv-web", "--every", "6h",
            "--payload", "keepalive", "--target-kind", "log", "--id", "sched-web",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        store = Store.open(module_db_url)
        try:
            store.write(
                lambda conn: conn.execute(
                    update(renewal_jobs)
                    .where(renewal_jobs.c.job_id == failed)
                    .values(
                        status="failed",
                        terminal_reason="permanent",
                        last_error=f"rejected {IMG_CANARY}{CANARY}",
                        finished_at=renewal_jobs.c.created_at,
                    )
                )
            )
            proc = r.start()
            wait_for(lambda: _job_status(store, delivered) == "done", what="delivered")
        finally:
            store.close()
        yield Live(f"http://{_address(r, proc)}", delivered, failed)
    finally:
        r.cleanup()


def _job_status(store: Store, job_id: str) -> str | None:
    job = store.get_job(job_id)
    return job.status if job else None


def _address(r: Renewald, proc: Any) -> str:
    def address() -> str | None:
        for line in r.stderr(proc).splitlines():
            if '"http.listening"' in line:
                return str(json.loads(line)["address"])
        return None

    return str(wait_for(address, what="http.listening"))


def _open(browser: Any, url: str, shot: str) -> str:
    from selenium.webdriver.common.by import By

    browser.get(url)
    body = str(browser.find_element(By.TAG_NAME, "body").text)
    where = os.environ.get("RENEWALD_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(where) / f"{shot}.png"))
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    return body


def test_every_page_and_a_job_from_the_list(live: Live, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    overview = _open(browser, live.base + "/", "overview")
    assert "live daemons" in overview and "Recent failures" in overview
    assert live.failed in overview
    jobs = _open(browser, live.base + "/jobs", "jobs")
    assert live.delivered in jobs and live.failed in jobs
    browser.find_element(By.LINK_TEXT, live.delivered).click()
    detail = str(browser.find_element(By.TAG_NAME, "body").text)
    assert browser.current_url.endswith(f"/jobs/{live.delivered}")
    assert "done (delivered)" in detail
    assert "#1 delivered" in detail  # the attempt timeline
    assert "attempt.finished" in detail  # a job-log line
    _open(browser, browser.current_url, "job")
    conversations = _open(browser, live.base + "/conversations", "conversations")
    assert "conv-web" in conversations and "sched-web" in conversations
    schedules = _open(browser, live.base + "/schedules", "schedules")
    assert "sched-web" in schedules and "every" in schedules


def test_script_canaries_are_shown_never_run(live: Live, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    for job_id, where, canary in (
        (live.delivered, "payload", CANARY + IMG_CANARY),
        (live.failed, "last-error", IMG_CANARY + CANARY),
    ):
        _open(browser, f"{live.base}/jobs/{job_id}", f"canary-{where}")
        assert canary in str(browser.find_element(By.ID, where).text)
        assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img")
    for page in ("/", "/jobs?status=failed"):
        _open(browser, live.base + page, "canary-list")
        assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img")
