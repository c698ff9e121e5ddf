"""WhatsAppService's commands (wa_command rows) on a real PostgreSQL, the runner's side played by
plain SQL from another thread (runner_side): the insert, the bounded wait woken by NOTIFY
wa_command, and each outcome."""

from __future__ import annotations

import time

import pytest
from django.db import IntegrityError, transaction
from django.test import override_settings

from wa_outbox.exceptions import InvalidInputError, SessionNotFoundError
from wa_outbox.models import Command, Session
from wa_outbox.services import WhatsAppService

from . import runner_side

svc = WhatsAppService()


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: svc.check_numbers("s1", []), "numbers"),
        (lambda: svc.check_numbers("s1", "15551234567"), "numbers"),
        (lambda: svc.check_numbers("s1", ["15551234567"] * 101), "numbers"),
        (lambda: svc.check_numbers("s1", ["hello"]), "numbers"),
        (lambda: svc.check_numbers("s1", ["120363012345678901@g.us"]), "numbers"),
        (lambda: svc.mark_read("s1", "nobody"), "chat"),
        (lambda: svc.set_typing("s1", "15551234567", "online"), "state"),
        (lambda: svc.set_typing("a b", "15551234567"), "session_id"),
        (lambda: svc.get_contact_info("s1", "120363012345678901@g.us"), "contact"),
        (lambda: svc.get_contact_info("s1", "abc@lid"), "contact"),
        (lambda: svc.get_profile_picture("s1", "nobody"), "contact"),
        (lambda: svc.get_chats("s1", 0), "limit"),
        (lambda: svc.get_chats("s1", 201), "limit"),
        (lambda: svc.get_chat_history("s1", "15551234567", 501), "limit"),
        (lambda: svc.get_chat_history("s1", "nobody"), "chat"),
    ],
)
def test_bad_input_names_the_field(call, field):
    with pytest.raises(InvalidInputError) as e:
        call()
    assert e.value.field == field


@pytest.mark.django_db(transaction=True)
def test_check_numbers_waits_for_the_runner_and_is_woken_by_notify(database_url):
    Session.objects.create(id="s1")
    results = [
        {"number": "+1 555 123 4567", "wid": "15551234567@c.us", "exists": True},
        {"number": "15557654321", "wid": None, "exists": False},
    ]
    runner = runner_side.finish_command(database_url, "s1", "done", result={"results": results})
    runner.start()
    started = time.monotonic()
    # A poll interval longer than the whole test: only the NOTIFY can wake the wait in time.
    with override_settings(WA_OUTBOX_POLL_INTERVAL=30):
        answer = svc.check_numbers("s1", ["+1 555 123 4567", "15557654321"])
    runner.join_ok()
    assert time.monotonic() - started < 10
    assert answer["success"] is True and answer["status"] == "done"
    assert answer["results"] == results
    row = Command.objects.get(pk=answer["commandId"])
    assert (row.kind, row.args) == (
        "check_numbers",
        {"numbers": ["+1 555 123 4567", "15557654321"]},
    )


@pytest.mark.django_db(transaction=True)
def test_mark_read_and_set_typing_write_the_args_the_runner_reads(database_url):
    Session.objects.create(id="s1")
    runner = runner_side.finish_command(
        database_url, "s1", "done", result={"chat": "15551234567@c.us", "found": True, "unread": 2}
    )
    runner.start()
    answer = svc.mark_read("s1", "15551234567")
    runner.join_ok()
    assert answer["success"] is True
    assert answer["result"]["unread"] == 2
    assert Command.objects.get(pk=answer["commandId"]).args == {"chat": "15551234567"}

    runner = runner_side.finish_command(
        database_url, "s1", "done", result={"chat": "15551234567@c.us", "state": "paused"}
    )
    runner.start()
    answer = svc.set_typing("s1", "15551234567", False)
    runner.join_ok()
    assert answer["success"] is True
    cmd = Command.objects.get(pk=answer["commandId"])
    assert (cmd.kind, cmd.args) == ("presence", {"chat": "15551234567", "state": "paused"})


@pytest.mark.django_db(transaction=True)
def test_a_refused_command_reports_its_code(database_url):
    Session.objects.create(id="s1")
    runner = runner_side.finish_command(
        database_url,
        "s1",
        "failed",
        error_code="invalid_command",
        error="args.state must be one of typing, recording, paused",
    )
    runner.start()
    answer = svc.set_typing("s1", "15551234567", "recording")
    runner.join_ok()
    assert answer["success"] is False
    assert (answer["status"], answer["errorCode"]) == ("failed", "invalid_command")
    assert answer["error"].startswith("args.state")


@pytest.mark.django_db(transaction=True)
def test_without_a_runner_the_wait_is_bounded_and_the_row_stays_queued():
    Session.objects.create(id="s1")
    started = time.monotonic()
    answer = svc.mark_read("s1", "15551234567", timeout=0.3)
    assert time.monotonic() - started < 5
    assert (answer["success"], answer["status"]) == (False, "queued")
    cmd = Command.objects.get(pk=answer["commandId"])
    assert cmd.cancel() is True
    assert cmd.status == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_or_for_a_stopped_session_it_does_not_wait():
    Session.objects.create(id="s1", desired_state="stopped")
    answer = svc.set_typing("s1", "15551234567", timeout=30)
    assert answer["status"] == "queued"
    Session.objects.create(id="s2")
    with transaction.atomic():
        answer = svc.set_typing("s2", "15551234567", timeout=30)
    assert answer["status"] == "queued"


@pytest.mark.django_db(transaction=True)
def test_unknown_session_and_bad_kind():
    with pytest.raises(SessionNotFoundError):
        svc.mark_read("nope", "15551234567")
    Session.objects.create(id="s1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Command(session_id="s1", kind="reboot").save()


@pytest.mark.django_db(transaction=True)
def test_contact_picture_chats_and_history_write_the_args_the_runner_reads():
    Session.objects.create(id="s1")
    calls = [
        (lambda: svc.get_contact_info("s1", "+1 555 123 4567", timeout=0), "contact_info",
         {"contact": "+1 555 123 4567"}),
        (lambda: svc.get_contact_info("s1", "123456789@lid", timeout=0), "contact_info",
         {"contact": "123456789@lid"}),
        (lambda: svc.get_profile_picture("s1", "120363012345678901@g.us", timeout=0),
         "profile_picture", {"contact": "120363012345678901@g.us"}),
        (lambda: svc.get_chats("s1", timeout=0), "chats", {"limit": 50}),
        (lambda: svc.get_chat_history("s1", "15551234567", 5, timeout=0), "history",
         {"chat": "15551234567", "limit": 5}),
    ]
    for call, kind, args in calls:
        answer = call()
        assert (answer["success"], answer["status"]) == (False, "queued")
        cmd = Command.objects.get(pk=answer["commandId"])
        assert (cmd.kind, cmd.args) == (kind, args)


@pytest.mark.django_db(transaction=True)
def test_group_commands_write_the_args_the_runner_reads_and_refuse_bad_input():
    Session.objects.create(id="s1")
    answer = svc.create_group("s1", " Team ", ["+1 555 123 4567", "15557654321@c.us"], timeout=0)
    assert (answer["success"], answer["status"]) == (False, "queued")
    cmd = Command.objects.get(pk=answer["commandId"])
    assert (cmd.kind, cmd.args) == (
        "group_create",
        {"subject": "Team", "participants": ["+1 555 123 4567", "15557654321@c.us"]},
    )
    answer = svc.get_group_info("s1", "120363012345678901@g.us", timeout=0)
    cmd = Command.objects.get(pk=answer["commandId"])
    assert (cmd.kind, cmd.args) == ("group_info", {"group": "120363012345678901@g.us"})
    bad = [
        (lambda: svc.create_group("s1", "", ["15551234567"]), "subject"),
        (lambda: svc.create_group("s1", "x" * 101, ["15551234567"]), "subject"),
        (lambda: svc.create_group("s1", "a\nb", ["15551234567"]), "subject"),
        (lambda: svc.create_group("s1", "ok", []), "participants"),
        (lambda: svc.create_group("s1", "ok", "15551234567"), "participants"),
        (lambda: svc.create_group("s1", "ok", ["120363012345678901@g.us"]), "participants"),
        (lambda: svc.create_group("s1", "ok", ["15551234567", "+1 555 123 4567"]), "participants"),
        (lambda: svc.get_group_info("s1", "15551234567"), "group"),
        (lambda: svc.get_group_invite_link("s1", "15551234567"), "group"),
        (lambda: svc.leave_group("s1", "not a group"), "group"),
    ]
    for call, field in bad:
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == field
    assert Command.objects.count() == 2
    for call, kind in [
        (svc.get_group_invite_link, "group_invite_link"),
        (svc.leave_group, "group_leave"),
    ]:
        cmd = Command.objects.get(pk=call("s1", "120363012345678901@g.us", timeout=0)["commandId"])
        assert (cmd.kind, cmd.args) == (kind, {"group": "120363012345678901@g.us"})


@pytest.mark.django_db(transaction=True)
def test_update_group_participants_writes_the_args_the_runner_reads_and_refuses_bad_input():
    Session.objects.create(id="s1")
    gid = "120363012345678901@g.us"
    answer = svc.update_group_participants(
        "s1", gid, "promote", ["+1 555 123 4567", "15557654321@c.us"], timeout=0
    )
    assert (answer["success"], answer["status"]) == (False, "queued")
    cmd = Command.objects.get(pk=answer["commandId"])
    assert (cmd.kind, cmd.args) == (
        "group_participants",
        {"group": gid, "action": "promote", "participants": ["+1 555 123 4567", "15557654321@c.us"]},
    )
    bad = [
        (lambda: svc.update_group_participants("s1", gid, "kick", ["15551234567"]), "action"),
        (lambda: svc.update_group_participants("s1", "15551234567", "add", ["15551234567"]), "group"),
        (lambda: svc.update_group_participants("s1", gid, "add", []), "participants"),
        (lambda: svc.update_group_participants("s1", gid, "add", "15551234567"), "participants"),
        (lambda: svc.update_group_participants("s1", gid, "add", [gid]), "participants"),
        (
            lambda: svc.update_group_participants("s1", gid, "remove", ["15551234567", "+15551234567"]),
            "participants",
        ),
    ]
    for call, field in bad:
        with pytest.raises(InvalidInputError) as e:
            call()
        assert e.value.field == field
    assert Command.objects.count() == 1
