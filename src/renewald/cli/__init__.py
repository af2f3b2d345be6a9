"""The `renewald` command line (DESIGN §7).

Every user error ends in one line on stderr and exit 2: click's usage errors, config
errors, a database URL that cannot work, a missing job. A database that is down or
locked is not a user error: one line and exit 69 (EX_UNAVAILABLE). Nothing is written
unless the whole input is valid.
Commands live in one module per family and register themselves on the `cli` group.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from renewald.cli import (  # noqa: F401  (each module registers its commands on `cli`)
    actions,
    daemons,
    jobs,
    logs,
    ops,
    run,
    schedules,
    show,
    web,
)
from renewald.cli.app import EXIT_USAGE, cli
from renewald.errors import EX_UNAVAILABLE, RenewaldError
from renewald.store.engine import describe, is_unavailable

__all__ = ["cli", "main"]


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"renewald: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line on stderr and exit 2, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="renewald", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        # "renewald: jobs: …", not "renewald: renewald jobs: …": one prefix, from _fail.
        sub = exc.ctx.command_path.partition(" ")[2] if exc.ctx else ""
        where = f"{sub}: " if sub else ""
        _fail(f"{where}{exc.format_message()}")
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except RenewaldError as exc:
        _fail(str(exc), exc.exit_code)
    except _db_errors() as exc:
        if is_unavailable(exc):
            _fail(f"database unavailable: {describe(exc)}", EX_UNAVAILABLE)
        _fail(f"database error: {describe(exc)}")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def _db_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError,)


if __name__ == "__main__":  # pragma: no cover
    main()
