"""LISTEN on dedicated psycopg 3 connections, and waiting on a condition with a deadline.

Django's own connection cannot be used: it may be inside a transaction (notifications are only
delivered between transactions), pooled, or behind PgBouncer in transaction mode.

Service calls that wait (init_session, send_*) share one LISTEN connection per process, held
by a background thread (the hub) that wakes the waiters of the session a notification names:
a web worker with many requests waiting costs the database one connection, not one per request.
The hub closes its connection after a minute without waiters. The wa_outbox_listen command
uses its own connection (`listening()`), which also carries its advisory lock.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from django.db import connections
from psycopg import sql

from . import conf

T = TypeVar("T")

logger = logging.getLogger(__name__)

EVENT_CHANNEL = "wa_event"
APPLICATION_NAME = "wa_outbox"
# How long subscribe() waits for the hub's LISTEN to be in place; past it, waiters still work by
# re-reading their row every WA_OUTBOX_POLL_INTERVAL.
HUB_CONNECT_WAIT = 5.0
HUB_IDLE_EXIT = 60.0
HUB_MAX_BACKOFF = 10.0


def connection_params(using: str | None = None, application_name: str = APPLICATION_NAME) -> dict:
    """psycopg.connect() arguments for the outbox database, outside Django's handling."""
    dsn = conf.get("WA_OUTBOX_LISTEN_DSN")
    if dsn:
        return {"conninfo": dsn, "autocommit": True, "application_name": application_name}
    params = connections[using or conf.get("WA_OUTBOX_DATABASE")].get_connection_params()
    # Django-specific adapters and cursor classes are of no use on a LISTEN connection.
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.setdefault("application_name", application_name)
    return {**params, "autocommit": True}


def connect(
    using: str | None = None, application_name: str = "wa_outbox_listen"
) -> psycopg.Connection:
    return psycopg.connect(**connection_params(using, application_name))


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


# ---- the per-process hub -------------------------------------------------------------------


class Waiter:
    """One waiting call's subscription; same wait() contract as Listener."""

    def __init__(self, hub: _Hub, session_id: str | None):
        self.hub = hub
        self.session_id = session_id
        self.event = threading.Event()

    def wait(self, timeout: float, session_id: str | None = None) -> bool:
        woken = self.event.wait(timeout)
        # Cleared before the caller re-reads its row, so a notification for a commit after that
        # read sets it again.
        self.event.clear()
        return woken

    def __enter__(self) -> Waiter:
        return self

    def __exit__(self, *exc) -> None:
        self.hub.unsubscribe(self)


class _Hub:
    def __init__(self, params: dict):
        self.params = params
        self.lock = threading.Lock()
        self.waiters: dict[str | None, set[Waiter]] = {}
        self.thread: threading.Thread | None = None
        self.listening = threading.Event()
        self.stopping = threading.Event()

    def subscribe(self, session_id: str | None) -> Waiter:
        waiter = Waiter(self, session_id)
        with self.lock:
            self.waiters.setdefault(session_id, set()).add(waiter)
            # A dead thread (an unexpected error) is replaced rather than left to poll forever.
            if self.thread is None or not self.thread.is_alive():
                self.listening = threading.Event()
                self.thread = threading.Thread(
                    target=self._run, args=(self.listening,), name="wa_outbox-notify", daemon=True
                )
                self.thread.start()
            listening = self.listening
        listening.wait(HUB_CONNECT_WAIT)
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        with self.lock:
            group = self.waiters.get(waiter.session_id)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self.waiters[waiter.session_id]

    def _wake(self, session_id: str | None) -> None:
        with self.lock:
            if session_id is None:
                groups = list(self.waiters.values())
            else:
                groups = [self.waiters.get(session_id, ()), self.waiters.get(None, ())]
            for group in groups:
                for waiter in group:
                    waiter.event.set()

    def _should_exit(self, idle_since: float | None) -> tuple[bool, float | None]:
        """Under the lock: with no waiters for HUB_IDLE_EXIT (or on shutdown), detach."""
        with self.lock:
            if self.stopping.is_set():
                self.thread = None
                return True, idle_since
            if self.waiters:
                return False, None
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since < HUB_IDLE_EXIT:
                return False, idle_since
            self.thread = None
            return True, idle_since

    def _run(self, listening: threading.Event) -> None:
        conn: psycopg.Connection | None = None
        backoff = 0.2
        idle_since: float | None = None
        try:
            while True:
                try:
                    if conn is None:
                        conn = psycopg.connect(**self.params)
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(EVENT_CHANNEL)))
                        listening.set()
                        backoff = 0.2
                        # Whatever committed while there was no LISTEN: every waiter re-reads.
                        self._wake(None)
                    for notify in conn.notifies(timeout=1.0):
                        self._wake(_session_of(notify.payload))
                except psycopg.Error as exc:
                    listening.clear()
                    logger.warning("wa_outbox: LISTEN connection lost (%s); reconnecting", exc)
                    if conn is not None:
                        conn.close()
                        conn = None
                    # Waiters fall back to polling their rows meanwhile.
                    self._wake(None)
                    exiting, idle_since = self._should_exit(idle_since)
                    if exiting:
                        return
                    self.stopping.wait(backoff)  # back-off before reconnecting
                    backoff = min(backoff * 2, HUB_MAX_BACKOFF)
                    continue
                exiting, idle_since = self._should_exit(idle_since)
                if exiting:
                    return
        finally:
            listening.clear()
            if conn is not None:
                conn.close()


_hubs: dict[tuple, _Hub] = {}
_hubs_lock = threading.Lock()


def subscribe(session_id: str | None, using: str | None = None) -> Waiter:
    """Wake-ups for `session_id`'s wa_event notifications (all sessions' if None), from this
    process's shared LISTEN connection. Use as a context manager; LISTEN is in place (or the
    hub has tried for HUB_CONNECT_WAIT) when it returns."""
    params = connection_params(using)
    # One hub per process and database: a forked worker must not share its parent's socket.
    key = (os.getpid(), json.dumps(params, sort_keys=True, default=str))
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None:
            hub = _hubs[key] = _Hub(params)
    return hub.subscribe(session_id)


def shutdown(timeout: float = 5.0) -> None:
    """Close this process's shared LISTEN connections (e.g. before dropping a test database).
    Waiting calls still in progress fall back to polling; the next one reconnects."""
    with _hubs_lock:
        hubs = list(_hubs.values())
        _hubs.clear()
    threads = []
    for hub in hubs:
        hub.stopping.set()
        with hub.lock:
            if hub.thread is not None:
                threads.append(hub.thread)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
