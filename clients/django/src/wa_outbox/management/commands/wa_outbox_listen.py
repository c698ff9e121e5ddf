"""LISTEN on wa_event and send message_received / message_ack / session_status signals."""

from __future__ import annotations

import logging
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from wa_outbox.listener import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_GAP_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    EventListener,
    ListenerBusy,
)


class _Stopped(Exception):
    pass


class Command(BaseCommand):
    help = (
        "Send Django signals (wa_outbox.signals) for wa_event rows, in order, resuming after the "
        "last event this consumer handled. Runs until SIGTERM/SIGINT unless --once."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--name", default="default", help="consumer name; each name has its own cursor"
        )
        parser.add_argument(
            "--database", default=None, help="database alias (default: WA_OUTBOX_DATABASE)"
        )
        parser.add_argument(
            "--once", action="store_true", help="handle the events stored now, then exit"
        )
        parser.add_argument(
            "--from-id",
            default=None,
            help="move the cursor first: handle events after this id; 'latest' skips the backlog",
        )
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
        parser.add_argument(
            "--gap-timeout",
            type=float,
            default=DEFAULT_GAP_TIMEOUT,
            help="seconds to wait for a missing event id (uncommitted insert) before skipping it",
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=DEFAULT_POLL_INTERVAL,
            help="seconds between checks when no notification arrives (and stop latency)",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="stop at the first receiver exception, leaving the cursor before that event",
        )

    def handle(self, *args, **options):
        try:
            listener = EventListener(
                options["name"],
                using=options["database"],
                batch_size=options["batch_size"],
                gap_timeout=options["gap_timeout"],
                poll_interval=options["poll_interval"],
                strict=options["strict"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["from_id"] is not None:
            value = options["from_id"]
            if value != "latest" and not value.isdigit():
                raise CommandError(f"--from-id: expected an event id or 'latest', got {value!r}")
            at = listener.set_cursor(value)
            self.stderr.write(f"wa_outbox_listen[{listener.name}]: cursor set to {at}")
        if options["once"]:
            try:
                handled = listener.run_once()
            except ListenerBusy as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"handled {handled} event(s); cursor at {listener.cursor()}")
            return

        stop = threading.Event()

        def request_stop(signum, frame):
            stop.set()
            if listener.idle:
                # Blocked in LISTEN between events: leave now instead of at the next wake-up.
                raise _Stopped

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, request_stop)
        logging.getLogger("wa_outbox").info(
            "wa_outbox_listen[%s]: listening from event %s", listener.name, listener.cursor()
        )
        try:
            listener.run(stop)
        except _Stopped:
            pass
        self.stdout.write(
            f"stopped after {listener.handled} event(s); cursor at {listener.cursor()}"
        )
