"""LISTEN on a dedicated psycopg 3 connection, and waiting on a condition with a deadline.

Django's own connection cannot be used: it may be inside a transaction (notifications are only
delivered between transactions), pooled, or behind PgBouncer in transaction mode. A short-lived
autocommit connection per wait keeps the caller's connection untouched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from django.db import connections
from psycopg import sql

from . import conf

T = TypeVar("T")

EVENT_CHANNEL = "wa_event"


def connect(using: str | None = None) -> psycopg.Connection:
    """An autocommit connection to the outbox database, outside Django's connection handling."""
    dsn = conf.get("WA_OUTBOX_LISTEN_DSN")
    if dsn:
        return psycopg.connect(dsn, autocommit=True)
    params = connections[using or conf.get("WA_OUTBOX_DATABASE")].get_connection_params()
    # Django-specific adapters and cursor classes are of no use on a LISTEN connection.
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(autocommit=True, **params)


class Listener:
    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def wait(self, timeout: float, session_id: str | None = None) -> bool:
        """Block until a notification arrives (for `session_id`, if given) or `timeout` passes.

        Returns whether a matching notification arrived. Other sessions' notifications are
        drained and ignored.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            received = list(self.conn.notifies(timeout=remaining, stop_after=1))
            if not received:
                return False
            # One packet may carry several notifications.
            if any(
                session_id is None or _session_of(n.payload) in (None, session_id) for n in received
            ):
                return True


def _session_of(payload: str) -> str | None:
    try:
        return json.loads(payload).get("session_id")
    except (ValueError, AttributeError):
        return None


@contextmanager
def listening(channel: str = EVENT_CHANNEL, using: str | None = None) -> Iterator[Listener]:
    conn = connect(using)
    try:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield Listener(conn)
    finally:
        conn.close()


def wait_for(
    check: Callable[[], T | None],
    *,
    listener: Listener,
    timeout: float,
    session_id: str | None = None,
    poll_interval: float | None = None,
) -> T | None:
    """Return check()'s first non-None result, re-checking on each notification for the session
    and at least every `poll_interval`; None once `timeout` has passed without one."""
    if poll_interval is None:
        poll_interval = conf.get("WA_OUTBOX_POLL_INTERVAL")
    poll_interval = max(poll_interval, 0.01)
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        listener.wait(min(remaining, poll_interval), session_id=session_id)
