"""The `command` adapter: runs the configured argv (never a shell), payload on stdin.

```toml
[adapters.command]
argv = ["/usr/local/bin/deliver-renewal", "--quiet"]
timeout = "30s"
env = { DELIVER_MODE = "live" }
exit_codes = { "0" = "delivered", "75" = "retry", "3" = "retry" }  # others: permanent
max_in_flight_per_target = 1
```

The command sees the job in its environment (on top of renewald's own environment, less
its secrets and `CREDENTIALS_DIRECTORY` (`renewald.credentials`), and `env`):
`RENEWALD_JOB_ID`, `RENEWALD_ATTEMPT`, `RENEWALD_ATTEMPT_ID`,
`RENEWALD_CONVERSATION`, `RENEWALD_PLATFORM`, `RENEWALD_REMOTE_ID`, `RENEWALD_PAGE_URL`,
`RENEWALD_PAYLOAD_KIND`, `RENEWALD_TARGET` (JSON) and `RENEWALD_IDEMPOTENCY_KEY` (the
job id, the same for every attempt). Exit 0 means delivered and 75 (EX_TEMPFAIL) retry
unless `exit_codes` says otherwise; a command killed by a signal is retried.

The command runs in a session (process group) of its own; on timeout the whole group is
killed, so helpers it started do not outlive the attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping
from typing import Any

from renewald.adapters.base import Delivery, Outcome
from renewald.credentials import child_environment
from renewald.durations import format_duration, parse_duration
from renewald.errors import ConfigError
from renewald.redact import redact_text

KIND = "command"
SECTION = "[adapters.command]"
DEFAULT_TIMEOUT = "30s"
DEFAULT_EXIT_CODES: Mapping[int, str] = {0: "delivered", 75: "retry"}
EXIT_OUTCOMES = frozenset({"delivered", "retry", "permanent"})
STDERR_TAIL = 500
# After the group is killed, how long to wait for the pipes to close. Only a process
# that left the group (setsid) can keep them open; we stop waiting for it.
_REAP_GRACE = 5.0


def _argv(settings: Mapping[str, Any]) -> list[str]:
    argv = settings.get("argv")
    if (
        not isinstance(argv, list | tuple)
        or not argv
        or not all(isinstance(a, str) for a in argv)
        or not argv[0]
    ):
        raise ConfigError(f'{SECTION} argv: expected a list of strings, e.g. ["/usr/bin/deliver"]')
    return list(argv)


def _timeout(settings: Mapping[str, Any]) -> float:
    raw = settings.get("timeout", DEFAULT_TIMEOUT)
    try:
        seconds = (
            float(raw)
            if isinstance(raw, int | float) and not isinstance(raw, bool)
            else parse_duration(raw)
        )
    except (ValueError, AttributeError):
        raise ConfigError(f'{SECTION} timeout: expected a duration such as "30s"') from None
    if seconds <= 0:
        raise ConfigError(f"{SECTION} timeout: must be more than zero")
    return seconds


def _table(settings: Mapping[str, Any], key: str, expected: str) -> Mapping[Any, Any]:
    table = settings.get(key, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{SECTION} {key}: expected {expected}")
    return table


def _env(settings: Mapping[str, Any]) -> dict[str, str]:
    table = _table(settings, "env", "a table of NAME = value")
    env: dict[str, str] = {}
    for name, value in table.items():
        if isinstance(value, bool):
            env[str(name)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            env[str(name)] = str(value)
        else:
            raise ConfigError(f"{SECTION} env.{name}: expected a string or a number")
    return env


def _exit_codes(settings: Mapping[str, Any]) -> dict[int, str]:
    table = _table(settings, "exit_codes", 'a table such as { "75" = "retry" }')
    codes = dict(DEFAULT_EXIT_CODES)
    for code, outcome in table.items():
        try:
            number = int(code)
        except (TypeError, ValueError):
            raise ConfigError(f"{SECTION} exit_codes: {code!r} is not an exit code") from None
        if outcome not in EXIT_OUTCOMES:
            raise ConfigError(
                f"{SECTION} exit_codes.{code}: expected one of {', '.join(sorted(EXIT_OUTCOMES))}"
            )
        codes[number] = outcome
    return codes


def _max_in_flight(settings: Mapping[str, Any]) -> int:
    raw = settings.get("max_in_flight_per_target", 1)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ConfigError(f"{SECTION} max_in_flight_per_target: expected a whole number >= 1")
    return raw


def _tail(output: bytes | None) -> str:
    """The last STDERR_TAIL characters of `output`, redacted, on one line."""
    if not output:
        return ""
    # Redact a generous tail before cutting it short, so a cut cannot hide half a secret.
    text = " ".join(output[-STDERR_TAIL * 8 :].decode("utf-8", "replace").split())
    text = redact_text(text) or ""
    return text if len(text) <= STDERR_TAIL else "…" + text[-STDERR_TAIL:]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # start_new_session=True made the child a session and group leader: pgid == pid,
    # and the group id stays reserved while any member lives, so this cannot hit a
    # stranger even after the leader has exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class CommandAdapter:
    """Runs one process per delivery; one target = one conversation."""

    kind = KIND

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.argv = _argv(settings)
        self.timeout = _timeout(settings)
        self.env = _env(settings)
        self.exit_codes = _exit_codes(settings)
        self.max_in_flight_per_target = _max_in_flight(settings)

    def target_key(self, delivery: Delivery) -> str:
        return f"command:{delivery.conversation.local_id}"

    def environment(self, delivery: Delivery) -> dict[str, str]:
        """The child's environment: ours without secrets, then `env`, then the job's variables."""
        conversation = delivery.conversation
        job = {
            "RENEWALD_JOB_ID": delivery.job_id,
            "RENEWALD_ATTEMPT": str(delivery.attempt),
            "RENEWALD_ATTEMPT_ID": delivery.attempt_id,
            "RENEWALD_CONVERSATION": conversation.local_id,
            "RENEWALD_PLATFORM": conversation.platform or "",
            "RENEWALD_REMOTE_ID": conversation.remote_id or "",
            "RENEWALD_PAGE_URL": conversation.page_url or "",
            "RENEWALD_PAYLOAD_KIND": delivery.payload_kind,
            "RENEWALD_TARGET": json.dumps(dict(delivery.target), default=str),
            "RENEWALD_IDEMPOTENCY_KEY": delivery.job_id,
        }
        return {**child_environment(), **self.env, **job}

    def deliver(self, delivery: Delivery) -> Outcome:
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.environment(delivery),
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            return Outcome.permanent(
                f"cannot run {self.argv[0]}: {exc.strerror or exc}",
                error_class=type(exc).__name__,
            )
        except OSError as exc:  # fork/exec resources (EAGAIN, ENOMEM): may pass
            return Outcome.retry(
                f"cannot run {self.argv[0]}: {exc.strerror or exc}",
                error_class=type(exc).__name__,
            )
        with proc:  # closes every pipe and reaps the child, whatever happens
            try:
                _, stderr = proc.communicate(delivery.payload.encode("utf-8"), timeout=self.timeout)
            except subprocess.TimeoutExpired:
                return self._timed_out(proc)
            except BaseException:
                _kill_group(proc)
                raise
            return self._outcome(proc.returncode, stderr)

    def _timed_out(self, proc: subprocess.Popen[bytes]) -> Outcome:
        _kill_group(proc)
        try:
            _, stderr = proc.communicate(timeout=_REAP_GRACE)
        except subprocess.TimeoutExpired:
            # A process that left the group still holds our pipes: stop reading.
            stderr = b""
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            proc.wait()
        tail = _tail(stderr)
        reason = f"timed out after {format_duration(self.timeout)}"
        return Outcome.retry(
            f"{reason}: {tail}" if tail else reason,
            summary=f"killed after {format_duration(self.timeout)}",
            error_class="CommandTimeout",
        )

    def _outcome(self, returncode: int, stderr: bytes) -> Outcome:
        tail = _tail(stderr)
        if returncode < 0:
            status = f"killed by {_signal_name(-returncode)}"
            # Killed from outside (OOM killer, an operator): nothing says the next try fails.
            return Outcome.retry(
                f"{status}: {tail}" if tail else status,
                summary=status,
                error_class="CommandKilled",
            )
        status = f"exit {returncode}"
        summary = f"{status}; stderr: {tail}" if tail else status
        reason = f"{status}: {tail}" if tail else status
        outcome = self.exit_codes.get(returncode, "permanent")
        if outcome == "delivered":
            return Outcome.delivered(summary)
        if outcome == "retry":
            return Outcome.retry(reason, summary=summary, error_class=f"Exit{returncode}")
        return Outcome.permanent(reason, summary=summary, error_class=f"Exit{returncode}")

    def close(self) -> None:
        pass


def factory(settings: Mapping[str, Any]) -> CommandAdapter:
    return CommandAdapter(settings)
