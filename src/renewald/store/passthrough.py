"""Store methods that are one SQL function in one transaction, declared as such.

`claim_target_probe = writes(targets.claim_target_probe)` in a `Transactions` subclass is
the method `store.claim_target_probe(...)`: the SQL function's own parameters but the
connection, run in one write transaction (retried like every other, transactions.py);
`reads` runs it in a read-only one. Its signature and docstring are the function's, so
the arguments are written once, where the SQL uses them. A method that adds anything (the
store's backend or due gate, a default, a second statement) is written out instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from sqlalchemy import Connection

from renewald.store.transactions import Transactions

P = ParamSpec("P")
T = TypeVar("T")


class _Passthrough(Generic[P, T]):
    def __init__(self, fn: Callable[Concatenate[Connection, P], T], *, write: bool) -> None:
        self._fn = fn
        self._write = write
        self.__doc__ = fn.__doc__
        self._name = fn.__name__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, store: None, owner: type[Any]) -> _Passthrough[P, T]: ...

    @overload
    def __get__(self, store: Transactions, owner: type[Any]) -> Callable[P, T]: ...

    def __get__(
        self, store: Transactions | None, owner: type[Any]
    ) -> _Passthrough[P, T] | Callable[P, T]:
        if store is None:
            return self
        fn, run = self._fn, (store.write if self._write else store.read)

        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return run(lambda conn: fn(conn, *args, **kwargs))

        method.__name__, method.__doc__ = self._name, self.__doc__
        return method


def writes(fn: Callable[Concatenate[Connection, P], T]) -> _Passthrough[P, T]:
    """A store method that runs `fn` in one write transaction."""
    return _Passthrough(fn, write=True)


def reads(fn: Callable[Concatenate[Connection, P], T]) -> _Passthrough[P, T]:
    """A store method that runs `fn` in one read-only transaction."""
    return _Passthrough(fn, write=False)
