"""A worker stopped inside a transaction must not hold the other workers up.

A `mailer worker` stopped by SIGSTOP, a paused VM or a debugger inside one of its ledger
transactions (between its lease renewal's UPDATE and COMMIT, say) holds that transaction
open, and with it the locks on the rows it holds: another worker's take-over of those rows,
once the lease has expired, would wait for it as long as it stays stopped. On PostgreSQL
the ledger's session therefore carries `idle_in_transaction_session_timeout` equal to the
lease: the server ends such a session, undoes its transaction and frees the rows. When the
stopped worker goes on, its next ledger call finds the connection gone and is made once more
on a new one (`again_if_cut`); its claims have gone to the others by then, and its lanes
find the rows no longer its own.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

__all__ = ["again_if_cut", "limit_idle_transactions", "release_idle_limit"]

P = ParamSpec("P")
R = TypeVar("R")


class Reconnects(Protocol):
    def reconnect(self) -> None: ...


S = TypeVar("S", bound=Reconnects)


def again_if_cut(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Make the call once more, after `reconnect`, if the server had ended the connection.

    Only for calls that may simply be made again: the server undid what the cut one did.
    """

    def again(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except DBAPIError as failed:
            if not failed.connection_invalidated:
                raise
        self.reconnect()
        return method(self, *args, **kwargs)

    functools.update_wrapper(again, method)
    return again


def limit_idle_transactions(conn: Connection, limit: timedelta) -> None:
    """Have PostgreSQL end this session when it sits inside a transaction for `limit`."""
    if conn.dialect.name == "postgresql":
        milliseconds = max(1, round(limit.total_seconds() * 1000))
        with conn.begin():
            conn.exec_driver_sql(f"SET idle_in_transaction_session_timeout = {milliseconds}")


def release_idle_limit(conn: Connection) -> None:
    """Take the limit off again, before the connection goes back to the pool."""
    if conn.dialect.name == "postgresql" and not conn.invalidated:
        with contextlib.suppress(DBAPIError), conn.begin():
            conn.exec_driver_sql("RESET idle_in_transaction_session_timeout")
