"""Attempt ids: random version-4 UUIDs as 32 hex digits, unique across processes.

Drawn from a generator seeded once per process from the operating system
(`random.Random()` seeds itself from `os.urandom`; a forked child seeds anew), not from
`uuid.uuid4()`: that reads `os.urandom` at every call, a system call that lets go of the
GIL, and the thread sending a claim at once, which makes one id per job, then waited for
whichever thread had taken the GIL to give it back (34 us a call beside a busy thread,
against 1.6 us).
The ids must not collide; they need not be secret.
"""

from __future__ import annotations

import os
import random

_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)

# RFC 4122 version 4: the version nibble and the variant bits, as uuid.UUID(version=4) sets.
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (0x4000 << 64) | (0x8000 << 48)


def new_attempt_id() -> str:
    return f"{(_random.getrandbits(128) & _CLEAR) | _SET:032x}"
