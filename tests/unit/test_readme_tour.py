"""The README's tour leaves the test suite's database alone (issue 18)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parents[2]


def test_the_tour_uses_a_database_of_its_own() -> None:
    readme = (ROOT / "README.md").read_text()
    tour = readme.split("## A short tour", 1)[1].split("\n## ", 1)[0]
    urls = re.findall(r"postgresql\+psycopg://\S+?/(\w+)", tour)
    assert urls, "the tour shows PostgreSQL"
    suite_db = PG_URL.rsplit("/", 1)[1].split("?")[0]
    assert suite_db not in urls and set(urls) == {"renewald_tour"}
    assert "createdb -h 127.0.0.1 -U postgres renewald_tour" in tour  # created first
