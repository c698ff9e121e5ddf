"""wa_outbox_listen: wa_event rows become signals, in order, resuming after the last one handled."""

from __future__ import annotations

import io
import threading

import psycopg
import pytest
from django.core.management import CommandError, call_command

from wa_outbox import signals
from wa_outbox.listener import EventListener, ListenerBusy
from wa_outbox.models import ListenerCursor

from . import runner_side
from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class Received:
    """Connects to the three signals and records what they carried."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def receiver(self, name):
        def handle(sender, **kwargs):
            with self.lock:
                self.calls.append((name, kwargs))

        return handle

    NAMES = (
        "message_received",
        "message_ack",
        "session_status",
        "reaction_received",
        "poll_vote_received",
        "message_edited",
        "message_revoked",
    )

    def __enter__(self):
        self._handlers = {name: self.receiver(name) for name in self.NAMES}
        for name, handler in self._handlers.items():
            getattr(signals, name).connect(handler, weak=False)
        return self

    def __exit__(self, *exc):
        for name, handler in self._handlers.items():
            getattr(signals, name).disconnect(handler)

    def event_ids(self):
        with self.lock:
            return [kw["event"].id for _, kw in self.calls]


@pytest.fixture
def session(sql):
    sql.execute("insert into wa_session (id) values ('s1')")
    return "s1"


def run_command(*args) -> str:
    out = io.StringIO()
    call_command("wa_outbox_listen", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_signals_carry_each_kind(sql, session):
    msg_id = sql.execute(
        "insert into wa_message (session_id, recipient, body) values ('s1', '15551234567', 'hi') returning id"
    ).fetchone()[0]
    e1 = runner_side.event(
        sql, "s1", "session_status", {"status": "connected", "phone": "15550001"}
    )
    e2 = runner_side.event(sql, "s1", "ack", {"ack": 2}, msg_id, "true_15551234567@c.us_ABC")
    e3 = runner_side.event(
        sql,
        "s1",
        "message",
        {"from": "15559999999@c.us", "body": "hello back"},
        None,
        "false_15559999999@c.us_XYZ",
    )
    with Received() as got:
        assert "handled 3 event(s)" in run_command("--once")
    names = [name for name, _ in got.calls]
    assert names == ["session_status", "message_ack", "message_received"]
    status, ack, incoming = (kw for _, kw in got.calls)
    assert (
        status["event"].id == e1
        and status["session_id"] == "s1"
        and status["status"] == "connected"
    )
    assert status["payload"] == {"status": "connected", "phone": "15550001"}
    assert (ack["event"].id, ack["message_id"], ack["wa_message_id"], ack["ack"]) == (
        e2,
        msg_id,
        "true_15551234567@c.us_ABC",
        2,
    )
    assert (
        incoming["event"].id,
        incoming["sender_jid"],
        incoming["body"],
        incoming["wa_message_id"],
    ) == (
        e3,
        "15559999999@c.us",
        "hello back",
        "false_15559999999@c.us_XYZ",
    )
    assert ListenerCursor.objects.get(name="default").last_event_id == e3


def test_typed_events_become_their_own_signals(sql, session):
    poll_id = sql.execute(
        "insert into wa_message (session_id, recipient, kind, options) values ('s1', '15551234567',"
        " 'poll', '{\"question\": \"Lunch?\", \"choices\": [\"Pizza\", \"Sushi\"]}') returning id"
    ).fetchone()[0]
    them = "15551234567@c.us"
    ids = [
        runner_side.event(
            sql,
            "s1",
            "reaction",
            {"from": them, "chat_id": them, "target_wa_id": "false_x@c.us_M1", "emoji": "👍"},
            None,
            "false_15551234567@c.us_R1",
        ),
        runner_side.event(
            sql,
            "s1",
            "poll_vote",
            {"from": them, "poll_wa_id": "true_x@c.us_P1", "selected_options": ["Sushi"]},
            poll_id,
            "false_15551234567@c.us_V1",
        ),
        runner_side.event(
            sql,
            "s1",
            "edit",
            {"from": them, "target_wa_id": "false_x@c.us_M1", "body": "fixed"},
            None,
            "false_15551234567@c.us_E1",
        ),
        runner_side.event(
            sql,
            "s1",
            "revoke",
            {"from": them, "target_wa_id": "false_x@c.us_M1"},
            None,
            "false_15551234567@c.us_D1",
        ),
    ]
    with Received() as got:
        assert "handled 4 event(s)" in run_command("--once")
    assert [name for name, _ in got.calls] == [
        "reaction_received",
        "poll_vote_received",
        "message_edited",
        "message_revoked",
    ]
    reaction, vote, edit, revoke = (kw for _, kw in got.calls)
    assert [kw["event"].id for _, kw in got.calls] == ids
    assert (reaction["message_id"], reaction["sender_jid"], reaction["target_wa_id"]) == (
        None,
        them,
        "false_x@c.us_M1",
    )
    assert reaction["emoji"] == "👍" and reaction["wa_message_id"] == "false_15551234567@c.us_R1"
    assert (vote["message_id"], vote["poll_wa_id"], vote["selected_options"]) == (
        poll_id,
        "true_x@c.us_P1",
        ["Sushi"],
    )
    assert (edit["target_wa_id"], edit["body"], edit["sender_jid"]) == (
        "false_x@c.us_M1",
        "fixed",
        them,
    )
    assert revoke["target_wa_id"] == "false_x@c.us_M1" and "body" not in revoke


def test_resumes_after_the_last_event_handled(sql, session):
    first = [
        runner_side.event(sql, "s1", "session_status", {"status": s})
        for s in ("starting", "qr_pending")
    ]
    with Received() as got:
        run_command("--once")
    assert got.event_ids() == first
    later = [
        runner_side.event(sql, "s1", "session_status", {"status": s})
        for s in ("connected", "hibernated")
    ]
    with Received() as got:
        run_command("--once")
        assert got.event_ids() == later  # nothing handled twice
        run_command("--once")
        assert got.event_ids() == later


def test_consumers_have_their_own_cursors(sql, session):
    ids = [runner_side.event(sql, "s1", "session_status", {"status": "new"}) for _ in range(3)]
    with Received() as got:
        run_command("--once", "--name", "audit")
        run_command("--once", "--name", "notifier")
    assert got.event_ids() == ids + ids


def test_from_id_latest_skips_the_backlog(sql, session):
    runner_side.event(sql, "s1", "session_status", {"status": "old"})
    with Received() as got:
        run_command("--once", "--from-id", "latest")
        assert got.calls == []
        new = runner_side.event(sql, "s1", "session_status", {"status": "new"})
        run_command("--once")
    assert got.event_ids() == [new]
    with pytest.raises(CommandError, match="from-id"):
        run_command("--once", "--from-id", "yesterday")


def test_a_late_commit_is_not_skipped(sql, database_url, session):
    """An event whose id is lower but whose transaction commits later is still delivered, first."""
    base = runner_side.event(sql, "s1", "session_status", {"status": "base"})
    listener = EventListener(gap_timeout=30)
    with Received() as got:
        listener.run_once()
        assert got.event_ids() == [base]
        with psycopg.connect(database_url) as slow:  # not autocommit: stays open
            late = runner_side.event(slow, "s1", "session_status", {"status": "late"})
            early = runner_side.event(sql, "s1", "session_status", {"status": "early"})
            assert early > late
            assert listener.run_once() == 0  # waits for `late` rather than skipping it
            slow.commit()
        listener.run_once()
        assert got.event_ids() == [base, late, early]


def test_a_permanent_gap_is_skipped_after_the_gap_timeout(sql, session):
    base = runner_side.event(sql, "s1", "session_status", {"status": "base"})
    # An id that will never appear, as after a rolled-back insert.
    sql.execute("select nextval(pg_get_serial_sequence('wa_event', 'id'))")
    after = runner_side.event(sql, "s1", "session_status", {"status": "after"})
    listener = EventListener(gap_timeout=0.5)
    with Received() as got:
        listener.run_once()
        wait_until(
            lambda: listener.run_once() or got.event_ids() == [base, after],
            timeout=10,
            what="gap skip",
        )
    assert got.event_ids() == [base, after]


def test_a_failing_receiver_does_not_stop_the_stream(sql, session):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    signals.session_status.connect(broken)
    try:
        ids = [runner_side.event(sql, "s1", "session_status", {"status": "x"}) for _ in range(2)]
        with Received() as got:
            run_command("--once")
        assert got.event_ids() == ids
    finally:
        signals.session_status.disconnect(broken)


def test_strict_mode_stops_before_the_failing_event(sql, session):
    ids = [runner_side.event(sql, "s1", "session_status", {"status": "x"}) for _ in range(3)]
    seen = []

    def fails_on_second(sender, event, **kwargs):
        seen.append(event.id)
        if event.id == ids[1]:
            raise RuntimeError("receiver bug")

    signals.session_status.connect(fails_on_second)
    try:
        with pytest.raises(RuntimeError, match="receiver bug"):
            run_command("--once", "--strict")
        assert ListenerCursor.objects.get(name="default").last_event_id == ids[0]
    finally:
        signals.session_status.disconnect(fails_on_second)
    with Received() as got:
        run_command("--once")
    assert got.event_ids() == ids[1:]


def test_continuous_mode_delivers_new_events_as_they_arrive(sql, session):
    stop, ready = threading.Event(), threading.Event()
    listener = EventListener(poll_interval=30)  # only a NOTIFY can wake it within the test
    with Received() as got:
        thread = threading.Thread(target=listener.run, args=(stop, ready), daemon=True)
        thread.start()
        try:
            assert ready.wait(20), "listener did not start"
            first = runner_side.event(sql, "s1", "session_status", {"status": "connected"})
            wait_until(lambda: got.event_ids() == [first], timeout=15, what="first signal")
            more = [runner_side.event(sql, "s1", "ack", {"ack": a}) for a in (1, 2, 3)]
            wait_until(lambda: got.event_ids() == [first, *more], timeout=15, what="ack signals")
        finally:
            stop.set()
            # Wake the blocked LISTEN so the thread sees `stop` now rather than after 30 s.
            sql.execute("notify wa_event, '{}'")
            thread.join(20)
        assert not thread.is_alive()
    assert ListenerCursor.objects.get(name="default").last_event_id == more[-1]


def test_one_consumer_per_name(database_url, session):
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("select pg_advisory_lock(hashtext('wa_outbox_listen:default'))")
        with pytest.raises(ListenerBusy):
            EventListener().run_once()
        with pytest.raises(CommandError, match="another wa_outbox_listen"):
            run_command("--once")
        assert run_command("--once", "--name", "other").startswith("handled 0")


def test_the_command_as_a_process_delivers_and_stops_on_sigterm(
    sql, session, database_url, tmp_path
):
    """`manage.py wa_outbox_listen` as deployed: its own process, woken by NOTIFY, SIGTERM ends it."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "signals.jsonl"
    log.touch()
    backlog = runner_side.event(sql, "s1", "session_status", {"status": "starting"})
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.subprocess_settings",
        "WA_TEST_DB_URL": database_url,
        "WA_TEST_SIGNAL_LOG": str(log),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "django", "wa_outbox_listen", "--poll-interval", "30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def delivered():
            return [json.loads(line) for line in log.read_text().splitlines()]

        wait_until(
            lambda: [r["event"] for r in delivered()] == [backlog], timeout=30, what="backlog"
        )
        live = runner_side.event(sql, "s1", "ack", {"ack": 1})
        # --poll-interval 30: only the NOTIFY can deliver this within the wait.
        wait_until(lambda: len(delivered()) == 2, timeout=20, what="live event")
        assert delivered()[1] == {"signal": "message_ack", "event": live, "session": "s1"}
        proc.send_signal(signal.SIGTERM)
        # Idle in LISTEN with a 30 s poll interval: SIGTERM must end the wait itself.
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"stopped after 2 event(s); cursor at {live}" in out
