"""Store methods that are one SQL function in one transaction, declared as such.

`claim_target_probe = writes(targets.claim_target_probe)` in a `Transactions` subclass is
the method `store.claim_target_probe(...)`: the SQL function's own parameters but the
connection, run in one write transaction (retried like every other, transactions.py);
`reads` runs it in a read-only one. Its signature and docstring are the function's, so
the arguments are written once, where the SQL uses them. `gated_writes` is the same for a
function that also takes the store's backend and its due gate's statuses. A method that adds
anything else (a default, a second statement) is written out instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from sqlalchemy import Connection

from renewald.store.backend import Backend
from renewald.store.transactions import Transactions

P = ParamSpec("P")
T = TypeVar("T")


class _Passthrough(Generic[P, T]):
    def __init__(self, fn: Callable[..., T], *, write: bool, gated: bool = False) -> None:
        self._fn = fn
        self._write = write
        self._gated = gated
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
        context = (store.backend, store.due.statuses) if self._gated else ()

        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return run(lambda conn: fn(conn, *context, *args, **kwargs))

        method.__name__, method.__doc__ = self._name, self.__doc__
        return method


def writes(fn: Callable[Concatenate[Connection, P], T]) -> _Passthrough[P, T]:
    """A store method that runs `fn` in one write transaction."""
    return _Passthrough(fn, write=True)


def reads(fn: Callable[Concatenate[Connection, P], T]) -> _Passthrough[P, T]:
    """A store method that runs `fn` in one read-only transaction."""
    return _Passthrough(fn, write=False)


def gated_writes(
    fn: Callable[Concatenate[Connection, Backend, Sequence[str], P], T],
) -> _Passthrough[P, T]:
    """A store method that runs `fn` in one write transaction, on the store's backend and
    with the statuses its due gate lets through."""
    return _Passthrough(fn, write=True, gated=True)
