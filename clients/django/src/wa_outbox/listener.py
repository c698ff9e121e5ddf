"""Turns wa_event rows into Django signals, in id order, resuming after the last one handled.

Delivery is at least once: the cursor (wa_outbox_listener_cursor) advances after an event's
receivers have run, so a crash between the two replays that one event.

Identity values are handed out before commit, so an event with a lower id can become visible
after a higher one. Skipping past a missing id at once could lose that event for good; waiting
forever would stall on ids that will never appear (a rolled-back insert, an
`on conflict do nothing`). So a missing id is waited for until the event after it is
`gap_timeout` old (by the database clock), then skipped.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import psycopg
from django.db import DatabaseError, connections
from django.db.models import BooleanField, ExpressionWrapper, Max, Q
from django.db.models.functions import Now

from . import conf, pgnotify, signals
from .models import Event, ListenerCursor, Message, Session

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 100
DEFAULT_GAP_TIMEOUT = 5.0
DEFAULT_POLL_INTERVAL = 2.0
MAX_BACKOFF = 30.0


class ListenerBusy(RuntimeError):
    """Another consumer with the same name holds the lock."""


class EventListener:
    def __init__(
        self,
        name: str = "default",
        *,
        using: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        gap_timeout: float = DEFAULT_GAP_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        strict: bool = False,
    ):
        if not name or len(name) > 100:
            raise ValueError("name: 1 to 100 characters")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if gap_timeout < 0 or poll_interval <= 0:
            raise ValueError("gap_timeout must be >= 0 and poll_interval > 0")
        self.name = name
        self.using = using or conf.get("WA_OUTBOX_DATABASE")
        self.batch_size = batch_size
        self.gap_timeout = gap_timeout
        self.poll_interval = poll_interval
        self.strict = strict
        self.handled = 0
        # True while blocked waiting for a notification, between events: a signal handler may
        # then interrupt the wait (see the command) without cutting a receiver short.
        self.idle = False

    # -- cursor --

    def cursor(self) -> int:
        row, _ = ListenerCursor.objects.using(self.using).get_or_create(name=self.name)
        return row.last_event_id

    def set_cursor(self, value: int | str) -> int:
        """Move the cursor: an event id, or "latest" to skip everything already stored."""
        if value == "latest":
            value = Event.objects.using(self.using).aggregate(m=Max("id"))["m"] or 0
        value = int(value)
        if value < 0:
            raise ValueError("the cursor is an event id >= 0")
        ListenerCursor.objects.using(self.using).update_or_create(
            name=self.name, defaults={"last_event_id": value}
        )
        return value

    # -- work --

    def run_batch(self) -> tuple[int, bool]:
        """Handle up to batch_size events. Returns (handled, more_may_be_ready)."""
        cursor = self.cursor()
        settled = ExpressionWrapper(
            Q(created_at__lt=Now() - timedelta(seconds=self.gap_timeout)),
            output_field=BooleanField(),
        )
        events = list(
            Event.objects.using(self.using)
            .filter(id__gt=cursor)
            .annotate(settled=settled)
            .order_by("id")[: self.batch_size]
        )
        handled = 0
        for event in events:
            # cursor 0: nothing handled yet, so there is no earlier event to wait for.
            if cursor and event.id != cursor + 1 and not event.settled:
                logger.debug(
                    "wa_event ids %s..%s not visible yet; waiting", cursor + 1, event.id - 1
                )
                return handled, False
            self._dispatch(event)
            ListenerCursor.objects.using(self.using).filter(name=self.name).update(
                last_event_id=event.id
            )
            cursor = event.id
            handled += 1
            self.handled += 1
        return handled, len(events) == self.batch_size

    def run_once(self) -> int:
        """Handle every event available now, then return how many were handled."""
        with self._locked():
            total = 0
            while True:
                handled, more = self.run_batch()
                total += handled
                if not more:
                    return total

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Handle events until `stop` is set; reconnects with back-off after database errors.
        `ready` is set once LISTEN is in place and the backlog is handled."""
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    self._run_connected(stop, ready)
                except ListenerBusy as exc:
                    # A standby replica: take over when the active one goes away.
                    logger.info("wa_outbox_listen: %s; standing by", exc)
                    stop.wait(self.poll_interval)
                except (DatabaseError, psycopg.OperationalError) as exc:
                    if stop.is_set():
                        break
                    logger.warning(
                        "wa_outbox_listen: database error (%s); retrying in %.1fs", exc, backoff
                    )
                    connections[self.using].close()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            connections[self.using].close()

    def _run_connected(self, stop: threading.Event, ready: threading.Event | None) -> None:
        # LISTEN before catching up, so nothing committed in between is missed.
        with pgnotify.listening(using=self.using) as listener, self._locked(listener.conn):
            while not stop.is_set():
                # Django's connection is kept across batches (close_old_connections would drop it
                # every round under CONN_MAX_AGE=0); a broken one raises and run() reconnects.
                handled, more = self.run_batch()
                if ready is not None and not ready.is_set() and not more:
                    ready.set()
                if not more:
                    self.idle = True
                    try:
                        listener.wait(self.poll_interval)
                    finally:
                        self.idle = False

    def _locked(self, conn: psycopg.Connection | None = None):
        """One consumer per name: a session-level advisory lock on a dedicated connection."""
        return _AdvisoryLock(self, conn)

    def _dispatch(self, event: Event) -> None:
        signal = signals.BY_KIND.get(event.kind)
        if signal is None:
            logger.warning("wa_event %s: unknown kind %r, skipped", event.id, event.kind)
            return
        payload = event.payload if isinstance(event.payload, dict) else {}
        kwargs = {"event": event, "session_id": event.session_id, "payload": payload}
        if event.kind == "message":
            kwargs.update(
                wa_message_id=event.wa_message_id,
                sender_jid=payload.get("from"),
                body=payload.get("body"),
                media=signals.media_of(payload),
            )
        elif event.kind == "ack":
            ack = payload.get("ack")
            if ack is None and event.message_id is not None:
                # Payload without the level: the row's current ack is the next best thing.
                ack = (
                    Message.objects.using(self.using)
                    .filter(pk=event.message_id)
                    .values_list("ack", flat=True)
                    .first()
                )
            kwargs.update(message_id=event.message_id, wa_message_id=event.wa_message_id, ack=ack)
        elif event.kind in _TYPED_KWARGS:
            kwargs.update(_TYPED_KWARGS[event.kind](event, payload))
        elif event.kind in signals.TYPED_KINDS:
            kwargs.update(signals.typed_kwargs(event, payload))
        else:
            status = payload.get("status")
            if status is None:
                status = (
                    Session.objects.using(self.using)
                    .filter(pk=event.session_id)
                    .values_list("status", flat=True)
                    .first()
                )
            kwargs.update(status=status)
        if self.strict:
            # A failing receiver stops the listener before the cursor moves past this event.
            signal.send(sender=Event, **kwargs)
        else:
            # Django logs each receiver's exception; the others still run and the stream goes on.
            signal.send_robust(sender=Event, **kwargs)


def _call_kwargs(event: Event, payload: dict) -> dict:
    return {
        "call_id": payload.get("call_id") or event.wa_message_id,
        "caller_jid": payload.get("from"),
        "is_video": bool(payload.get("is_video")),
        "is_group": bool(payload.get("is_group")),
        "rejected": bool(payload.get("rejected")),
    }


def _group_update_kwargs(event: Event, payload: dict) -> dict:
    participants = payload.get("participants")
    return {
        "group_id": payload.get("group_id"),
        "action": payload.get("action"),
        "participants": participants if isinstance(participants, list) else [],
        "actor": payload.get("actor"),
    }


# Calls and group changes from the other side (issue 14): their signal's own arguments.
_TYPED_KWARGS = {"call": _call_kwargs, "group_update": _group_update_kwargs}


class _AdvisoryLock:
    def __init__(self, listener: EventListener, conn: psycopg.Connection | None):
        self.listener = listener
        self.conn = conn
        self.own_conn = conn is None

    def __enter__(self):
        if self.conn is None:
            self.conn = pgnotify.connect(self.listener.using)
        key = f"wa_outbox_listen:{self.listener.name}"
        got = self.conn.execute("select pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]
        if not got:
            if self.own_conn:
                self.conn.close()
            raise ListenerBusy(
                f"another wa_outbox_listen consumer named {self.listener.name!r} is running"
            )
        self.key = key
        return self

    def __exit__(self, *exc):
        try:
            if not self.conn.closed:
                self.conn.execute("select pg_advisory_unlock(hashtext(%s))", (self.key,))
        except psycopg.Error:
            pass  # the lock goes with the connection anyway
        finally:
            if self.own_conn:
                self.conn.close()
        return False
