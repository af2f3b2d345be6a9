"""The `renewald` command group and what every command shares: config, store, clock."""

from __future__ import annotations

import getpass
import importlib
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click
from sqlalchemy.exc import DBAPIError

from renewald import __version__
from renewald.cli.startup import wait_for_database
from renewald.clock import SystemClock, datetime_to_ms
from renewald.config import Config, Timings, load_config
from renewald.daemon.sdnotify import Notifier
from renewald.durations import parse_duration, parse_positive_ms
from renewald.errors import EX_USAGE, DatabaseUnavailable, UsageError
from renewald.redact import redact_value
from renewald.store import DueGate, Store
from renewald.store.engine import describe, is_unavailable
from renewald.store.models import Job

STATUSES = ("pending", "running", "done", "failed")
EXIT_USAGE = EX_USAGE
# An operator's command gives up on a database that does not answer within this long
# (per call), with one line and exit 69, rather than hang in the retry loop.
CLI_BUDGET = 3.0


@dataclass
class Context:
    config_path: str | None
    db_url: str | None
    clock: SystemClock = field(default_factory=SystemClock)
    _config: Config | None = None
    _store: Store | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path, db_url=self.db_url)
        return self._config

    def store(
        self,
        *,
        migrating: bool = False,
        pool_size: int = 5,
        budget: float = CLI_BUDGET,
        busy_timeout: float | None = None,
    ) -> Store:
        """The store, opened once. Each database call retries an unreachable or locked
        database for `budget` seconds, then raises `DatabaseUnavailable` (exit 69); so
        does opening it. SQLite's busy_timeout is capped at `budget` unless given.
        `migrating` (for `migrate`): a missing SQLite file is created and the schema, which
        may be missing or old, is not checked."""
        if self._store is None:
            db = self.config.database
            store = Store.open(
                db.url,
                busy_timeout=min(db.busy_timeout, budget) if busy_timeout is None else busy_timeout,
                synchronous=db.sqlite_synchronous,
                create=migrating,
                pool_size=pool_size,
                retry_for=budget,
                due=DueGate(tuple(self.config.daemon.dispatch_statuses)),
            )
            try:
                if not migrating:
                    store.check_schema()
            except DBAPIError as exc:
                store.close()
                if is_unavailable(exc):
                    raise DatabaseUnavailable(f"database unavailable: {describe(exc)}") from None
                raise
            except BaseException:
                store.close()
                raise
            self._store = store
        return self._store

    def store_when_available(
        self, *, what: str, migrating: bool = False, pool_size: int = 5
    ) -> Store:
        """`store()`, waiting up to `[database] startup_wait` for a database that is down
        (cli/startup.py): for `migrate` and `run`, which systemd starts."""
        db = self.config.database
        return wait_for_database(
            lambda budget: self.store(
                migrating=migrating,
                pool_size=pool_size,
                budget=budget,
                busy_timeout=db.busy_timeout,
            ),
            wait=db.startup_wait,
            notifier=Notifier.from_env(),
            what=what,
        )

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_ctx = click.make_pass_decorator(Context)


def _late_global_option(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """`--db`/`--config` given after the command name: they win over the ones before it."""
    obj = ctx.find_object(Context)
    if value is not None and obj is not None and param.name is not None:
        setattr(obj, param.name, value)


# The options every command takes: flag, destination, metavar, what it names, its env.
GLOBAL_OPTIONS = (
    ("--config", "config_path", "PATH", "config.toml", "RENEWALD_CONFIG"),
    ("--db", "db_url", "URL", "SQLAlchemy database URL", "RENEWALD_DB"),
)


def _global_options(*, late: bool) -> list[click.Parameter]:
    """The global options before the command name, or (`late`) after it."""
    return [
        click.Option(
            [flag, dest],
            metavar=metavar,
            expose_value=not late,
            callback=_late_global_option if late else None,
            help=f"{what} (also accepted before the command)" if late else f"{what} (env {env})",
        )
        for flag, dest, metavar, what, env in GLOBAL_OPTIONS
    ]


# The module of each top-level command, imported when that command runs (or when
# `--help` lists them all): `run --once` does not pay for Jinja2, prometheus_client or the
# operator commands' imports.
COMMANDS: dict[str, str] = {
    **dict.fromkeys(("enqueue", "jobs"), "jobs"),
    "show": "show",
    **dict.fromkeys(("retry", "cancel"), "actions"),
    **dict.fromkeys(("health", "conversations", "stats", "prune"), "ops"),
    **dict.fromkeys(("migrate", "run"), "run"),
    "logs": "logs",
    "schedules": "schedules",
    "web": "web",
    "daemons": "daemons",
}


class Group(click.Group):
    """A command group whose commands, and its subgroups' commands, also take the global
    options after their name: `renewald jobs --db URL` as well as `renewald --db URL jobs`.
    Commands named in `lazy` are registered by importing their module on first use."""

    group_class = type  # subgroups (`conversations`, `schedules`) are this class too
    lazy: Mapping[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            importlib.import_module(f"renewald.cli.{self.lazy[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        taken = {opt for p in cmd.params for opt in getattr(p, "opts", ())}
        cmd.params.extend(p for p in _global_options(late=True) if not taken & set(p.opts))
        super().add_command(cmd, name)


@click.group(
    cls=Group,
    params=_global_options(late=False),
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="renewald")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, db_url: str | None) -> None:
    """renewald delivers renewal jobs from the tracker's artifact.db."""
    obj = Context(config_path=config_path, db_url=db_url)
    ctx.obj = obj
    ctx.call_on_close(obj.close)


cli.lazy = COMMANDS


def parse_when(value: str, *, now: int, option: str) -> int:
    """ISO-8601 (naive = local time), "now", or "+30s"/"+5m"/"+2h" from now, as epoch ms."""
    text = value.strip()
    if text == "now":
        return now
    if text.startswith("+"):
        try:
            return now + round(parse_duration(text[1:]) * 1000)
        except ValueError as exc:
            raise UsageError(f"{option}: {exc}") from None
    try:
        return datetime_to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise UsageError(
            f"{option}: {value!r} is neither an ISO-8601 time nor a relative time like +30s"
        ) from None


def check_payload(payload: str, payload_kind: str) -> None:
    """The payload as `--payload` and `--payload-kind` give it: not empty, JSON when json."""
    if not payload:
        raise UsageError("--payload: must not be empty")
    if payload_kind == "json":
        try:
            json.loads(payload)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--payload: --payload-kind json needs JSON ({exc.msg} at column {exc.colno})"
            ) from None


def parse_target(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--target: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"--target: must be a JSON object, got {type(parsed).__name__}")
    return json.dumps(parsed, separators=(",", ":"))


def job_json(job: Job) -> dict[str, Any]:
    data = job.as_dict()
    data["target_snapshot"] = _json_or_text(job.target_snapshot)
    data["last_error"] = job.last_error
    return data


def _json_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return redact_value(json.loads(value))
    except json.JSONDecodeError:
        return redact_value(value)


def parse_age(value: str, *, option: str) -> int:
    """A positive duration ("2h", "30d") as milliseconds, or one clear usage error."""
    try:
        return parse_positive_ms(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def operator_id() -> str:
    """Who an operator's attempt rows and log lines name: `operator:<user>@<host>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = "unknown"
    return f"operator:{user}@{socket.gethostname()}"


def stale_after_ms(config: Config) -> int:
    """A daemon whose heartbeat is older than this is dead: the rescuer's own threshold."""
    return Timings.of(config).stale_after_ms
