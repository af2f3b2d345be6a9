"""Output for people: relative times, ages, durations, tables."""

from __future__ import annotations

import pytest

from renewald import render

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (NOW, "now"),
        (NOW + 999, "now"),
        (NOW + 1000, "in 1s"),
        (NOW - 90_000, "1m30s ago"),
        (NOW + 93_784_000, "in 1d2h"),
    ],
)
def test_relative(ms: int, expected: str) -> None:
    assert render.relative(ms, NOW) == expected


@pytest.mark.parametrize(
    ("since", "expected"),
    [(None, "-"), (NOW, "0s"), (NOW + 5000, "0s"), (NOW - 999, "0s"), (NOW - 3_723_000, "1h2m")],
)
def test_age(since: int | None, expected: str) -> None:
    assert render.age(since, NOW) == expected


@pytest.mark.parametrize(
    ("ms", "expected"),
    [(None, "-"), (0, "0ms"), (999, "999ms"), (1000, "1.0s"), (1250, "1.2s"), (123_000, "2m3s")],
)
def test_took(ms: int | None, expected: str) -> None:
    assert render.took(ms) == expected


def test_counts_keeps_order() -> None:
    assert render.counts({"pending": 2, "done": 0}) == "pending 2, done 0"
    assert render.counts({}) == "none"


def test_table_aligns_and_shows_none_as_dash() -> None:
    text = render.table(("A", "LONGER"), [("x", None), ("yyy", 3)])
    assert text.splitlines() == ["A    LONGER", "x    -", "yyy  3"]
