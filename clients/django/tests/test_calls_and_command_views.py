"""Issue 14 in Django: Session.reject_calls, the call_received and group_updated signals, Event's
payload helpers, and the command views (the runner's side played by plain SQL, runner_side)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from django.urls import reverse

from wa_outbox import signals
from wa_outbox.listener import EventListener
from wa_outbox.models import Command, Event, Session

from . import runner_side

pytestmark = pytest.mark.django_db(transaction=True)


def post(client, name, data):
    return client.post(
        reverse(f"wa_outbox:{name}"), json.dumps(data), content_type="application/json"
    )


@pytest.fixture
def user_client(client):
    user = User.objects.create_user("ann", password="x")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def own_session(user_client):
    return Session.objects.create(id="s1", user_id=user_client.user.pk).pk


def test_reject_calls_is_a_caller_field_defaulting_to_false(sql):
    s = Session.objects.create(id="calls")
    assert Session.objects.get(pk="calls").reject_calls is False
    s.reject_calls = True
    s.save()
    assert sql.execute("select reject_calls from wa_session where id = 'calls'").fetchone() == (
        True,
    )


def test_call_and_group_update_events_become_their_signals_with_helpers(sql):
    sql.execute("insert into wa_session (id) values ('s1')")
    call = {
        "call_id": "00C28E4F6B2FFA7159760CC8BEAFDDA3",
        "from": "15559999999@c.us",
        "from_lid": None,
        "is_video": True,
        "is_group": False,
        "group_id": None,
        "timestamp": 1786380794,
        "reject_calls": True,
        "rejected": True,
        "reject_error": None,
    }
    e1 = runner_side.event(sql, "s1", "call", call, None, call["call_id"])
    update = {
        "group_id": "120363000000000001@g.us",
        "action": "add",
        "participants": ["15550000003@c.us"],
        "actor": "15550000002@c.us",
        "actor_lid": None,
        "subject": None,
        "timestamp": 1786380800,
    }
    e2 = runner_side.event(sql, "s1", "group_update", update, None, "false_120363…_ABC")
    got: list[tuple[str, dict]] = []

    def recorder(name):
        def handle(sender, **kwargs):
            got.append((name, kwargs))

        return handle

    handlers = {n: recorder(n) for n in ("call_received", "group_updated")}
    for n, h in handlers.items():
        getattr(signals, n).connect(h, weak=False)
    try:
        assert EventListener(name="calls").run_once() == 2
    finally:
        for n, h in handlers.items():
            getattr(signals, n).disconnect(h)
    (n1, c), (n2, g) = got
    assert (n1, c["event"].id, c["session_id"]) == ("call_received", e1, "s1")
    assert (c["call_id"], c["caller_jid"], c["is_video"], c["is_group"], c["rejected"]) == (
        call["call_id"],
        "15559999999@c.us",
        True,
        False,
        True,
    )
    assert (n2, g["event"].id, g["group_id"], g["action"]) == (
        "group_updated",
        e2,
        update["group_id"],
        "add",
    )
    assert (g["participants"], g["actor"]) == (["15550000003@c.us"], "15550000002@c.us")
    ev = Event.objects.get(pk=e1)
    assert (ev.call_id, ev.rejected, ev.group_id) == (call["call_id"], True, None)
    ev = Event.objects.get(pk=e2)
    assert (ev.group_id, ev.group_action, ev.rejected) == (update["group_id"], "add", None)


# ---- the command views --------------------------------------------------------------------------

VIEWS = [
    # (url name, body, kind, args the runner reads)
    ("command-mark-read", {"chat": "+1 555 123 4567"}, "mark_read", {"chat": "15551234567"}),
    (
        "command-typing",
        {"chat": "15551234567", "state": "recording"},
        "presence",
        {"chat": "15551234567", "state": "recording"},
    ),
    (
        "command-check-numbers",
        {"numbers": ["15551234567", "+1 555 765 4321"]},
        "check_numbers",
        {"numbers": ["15551234567", "15557654321"]},
    ),
    (
        "command-contact-info",
        {"contact": "15551234567@c.us"},
        "contact_info",
        {"contact": "15551234567@c.us"},
    ),
    (
        "command-profile-picture",
        {"contact": "120363000000000001@g.us"},
        "profile_picture",
        {"contact": "120363000000000001@g.us"},
    ),
    ("command-chats", {"limit": 5}, "chats", {"limit": 5}),
    (
        "command-history",
        {"chat": "15551234567", "limit": 3},
        "history",
        {"chat": "15551234567", "limit": 3},
    ),
    (
        "group-create",
        {"subject": " Team ", "participants": ["15551234567"]},
        "group_create",
        {"subject": "Team", "participants": ["15551234567"]},
    ),
    (
        "group-info",
        {"group": "120363000000000001@g.us"},
        "group_info",
        {"group": "120363000000000001@g.us"},
    ),
    (
        "group-invite-link",
        {"group": "120363000000000001@g.us"},
        "group_invite_link",
        {"group": "120363000000000001@g.us"},
    ),
    (
        "group-leave",
        {"group": "120363000000000001@g.us"},
        "group_leave",
        {"group": "120363000000000001@g.us"},
    ),
    (
        "group-participants",
        {"group": "120363000000000001@g.us", "action": "promote", "participants": ["15551234567"]},
        "group_participants",
        {
            "group": "120363000000000001@g.us",
            "action": "promote",
            "participants": ["15551234567"],
        },
    ),
]


@pytest.mark.parametrize("name,body,kind,args", VIEWS, ids=[v[0] for v in VIEWS])
def test_each_command_view_writes_its_row_and_answers_once_the_runner_finished(
    database_url, user_client, own_session, name, body, kind, args
):
    result = {"answer": name}
    runner = runner_side.finish_command(database_url, own_session, "done", result=result)
    runner.start()
    r = post(user_client, name, {"sessionId": own_session, **body})
    runner.join_ok()
    assert r.status_code == 200, r.content
    answer = r.json()
    assert (answer["success"], answer["status"], answer["result"]) == (True, "done", result)
    row = Command.objects.get(pk=answer["commandId"])
    assert row.kind == kind
    # The runner normalises numbers itself; the view passes what the service validated.
    for key, want in args.items():
        got = row.args[key]
        if key in ("chat", "numbers", "participants"):
            norm = lambda v: "".join(ch for ch in v if ch.isdigit()) if "@" not in v else v  # noqa: E731
            got = [norm(v) for v in got] if isinstance(got, list) else norm(got)
        assert got == want, (key, row.args)


def test_a_failed_command_answers_200_with_its_error_code(database_url, user_client, own_session):
    runner = runner_side.finish_command(
        database_url,
        own_session,
        "failed",
        error_code="command_failed",
        error="the page refused: not-authorized",
    )
    runner.start()
    r = post(
        user_client,
        "group-invite-link",
        {"sessionId": own_session, "group": "120363000000000001@g.us"},
    )
    runner.join_ok()
    assert r.status_code == 200
    assert r.json() == {
        "success": False,
        "commandId": r.json()["commandId"],
        "status": "failed",
        "result": None,
        "errorCode": "command_failed",
        "error": "the page refused: not-authorized",
    }


@override_settings(WA_OUTBOX_SEND_TIMEOUT=0.3)
def test_a_wait_that_runs_out_answers_202_and_the_status_view_follows_it(
    database_url, user_client, own_session
):
    r = post(user_client, "command-chats", {"sessionId": own_session})
    assert r.status_code == 202, r.content
    answer = r.json()
    assert (answer["success"], answer["status"]) == (False, "queued")
    url = reverse("wa_outbox:command-status", args=[answer["commandId"]])
    assert user_client.get(url).json()["status"] == "queued"
    runner = runner_side.finish_command(database_url, own_session, "done", result={"chats": []})
    runner.start()
    runner.join_ok()
    r = user_client.get(url)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["result"]) == ("done", {"chats": []})


@pytest.mark.parametrize(
    "name,body,field",
    [
        ("command-check-numbers", {"numbers": "15551234567"}, "numbers"),
        ("command-check-numbers", {}, "numbers"),
        ("command-mark-read", {"chat": "nobody"}, "chat"),
        ("command-typing", {"chat": "15551234567", "state": "online"}, "state"),
        ("command-chats", {"limit": 0}, "limit"),
        ("command-chats", {"limit": "many"}, "limit"),
        ("command-history", {"chat": "15551234567", "limit": 501}, "limit"),
        ("group-create", {"subject": "x", "participants": []}, "participants"),
        ("group-info", {"group": "15551234567"}, "group"),
        (
            "group-participants",
            {"group": "120363000000000001@g.us", "action": "ban", "participants": ["1555123"]},
            "action",
        ),
    ],
)
def test_bad_arguments_are_refused_before_any_row(user_client, own_session, name, body, field):
    r = post(user_client, name, {"sessionId": own_session, **body})
    assert r.status_code == 400, r.content
    assert (r.json()["code"], r.json()["field"]) == ("invalid_input", field)
    assert not Command.objects.exists()


def test_another_users_session_and_command_answer_like_unknown_ones(user_client):
    Session.objects.create(id="theirs", user_id=999)
    r = post(user_client, "command-chats", {"sessionId": "theirs"})
    assert (r.status_code, r.json()["code"]) == (404, "session_not_found")
    assert post(user_client, "command-chats", {"sessionId": "nobody"}).json()["code"] == (
        "session_not_found"
    )
    assert not Command.objects.exists()
    theirs = Command.objects.create(session_id="theirs", kind="chats", args={})
    for cid in (theirs.pk, theirs.pk + 1000):
        r = user_client.get(reverse("wa_outbox:command-status", args=[cid]))
        assert (r.status_code, r.json()["code"]) == (404, "command_not_found")


def test_anonymous_and_bad_api_key_requests_are_refused(client):
    Session.objects.create(id="s1")
    assert post(client, "group-info", {"sessionId": "s1", "group": "1@g.us"}).status_code == 403
    r = client.post(
        reverse("wa_outbox:group-info"),
        json.dumps({"sessionId": "s1", "group": "1@g.us"}),
        content_type="application/json",
        headers={"X-Api-Key": "wrong"},
    )
    assert r.status_code == 401
    assert not Command.objects.exists()
