"""Per-target in-flight limits: slots, the line, and handing a slot on."""

from __future__ import annotations

from renewald.daemon.limits import TargetLimits


def test_slots_up_to_the_limit_then_a_line() -> None:
    limits: TargetLimits[str] = TargetLimits()
    assert limits.acquire("a", 2, "a1")
    assert limits.acquire("a", 2, "a2")
    assert not limits.acquire("a", 2, "a3")
    assert not limits.acquire("a", 2, "a4")
    assert (limits.in_flight("a"), limits.waiting("a")) == (2, 2)


def test_targets_do_not_share_slots() -> None:
    limits: TargetLimits[str] = TargetLimits()
    assert limits.acquire("a", 1, "a1")
    assert not limits.acquire("a", 1, "a2")
    assert limits.acquire("b", 1, "b1"), "a busy target holds nobody else up"
    assert limits.waiting() == 1


def test_a_freed_slot_passes_to_the_first_in_line() -> None:
    limits: TargetLimits[str] = TargetLimits()
    limits.acquire("a", 1, "a1")
    limits.acquire("a", 1, "a2")
    limits.acquire("a", 1, "a3")
    assert limits.release("a") == "a2"
    assert limits.in_flight("a") == 1, "the slot moved, it was not freed"
    assert limits.release("a") == "a3"
    assert limits.release("a") is None
    assert (limits.in_flight("a"), limits.waiting()) == (0, 0)


def test_a_newcomer_does_not_overtake_the_line() -> None:
    limits: TargetLimits[str] = TargetLimits()
    limits.acquire("a", 1, "a1")
    limits.acquire("a", 1, "a2")
    assert limits.release("a") == "a2"
    assert not limits.acquire("a", 1, "a3")
    assert limits.release("a") == "a3"


def test_a_limit_below_one_still_lets_one_through() -> None:
    limits: TargetLimits[str] = TargetLimits()
    assert limits.acquire("a", 0, "a1")
    assert not limits.acquire("a", 0, "a2")
