"""The small error hierarchy. Each class's docstring is its message for people."""

from __future__ import annotations

EX_USAGE = 2
EX_UNAVAILABLE = 69  # sysexits.h: a service the command needs is not available


class RenewaldError(Exception):
    """renewald failed."""

    exit_code: int = EX_USAGE

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(detail or (self.__doc__ or "").strip())

    def __str__(self) -> str:
        return self.detail or (self.__doc__ or "").strip()


class UsageError(RenewaldError):
    """Bad input on the command line."""


class ConfigError(RenewaldError):
    """The configuration is not valid."""


class DatabaseError(RenewaldError):
    """The database cannot be used."""


class DatabaseUnavailable(DatabaseError):
    """The database is unreachable or locked: wait for it, or check that it is up."""

    exit_code = EX_UNAVAILABLE


class SchemaMissing(DatabaseError):
    """The database has no renewald schema: run `renewald migrate`."""


class SchemaOutdated(DatabaseError):
    """The database schema is older than this renewald: run `renewald migrate`."""


class SchemaTooNew(DatabaseError):
    """The database schema is newer than this renewald: upgrade renewald."""


class DuplicateJob(RenewaldError):
    """A job with this job id or message id already exists."""
