"""Attempt ids: version-4 UUIDs as 32 hex digits, distinct, and not repeated by a fork."""

from __future__ import annotations

import os
import uuid

from renewald.ids import new_attempt_id


def test_an_attempt_id_is_a_version_4_uuid_in_hex():
    for _ in range(1000):
        attempt_id = new_attempt_id()
        parsed = uuid.UUID(hex=attempt_id)
        assert parsed.hex == attempt_id
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)


def test_attempt_ids_do_not_repeat():
    assert len({new_attempt_id() for _ in range(100_000)}) == 100_000


def test_a_forked_child_draws_other_ids_than_its_parent():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without pytest's teardown
        os.write(write, "".join(new_attempt_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    parents = "".join(new_attempt_id() for _ in range(4))
    with os.fdopen(read, "rb") as fh:
        childs = fh.read().decode()
    os.waitpid(pid, 0)
    assert len(childs) == 128 and childs != parents
