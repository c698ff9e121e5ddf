"""Issue 14 against a real runner, Chromium and the simulator: the command views over HTTP, and
calls and group changes from the other side reaching Django as signals."""

from __future__ import annotations

import threading

import pytest
from django.urls import reverse

from wa_outbox import signals
from wa_outbox.listener import EventListener
from wa_outbox.models import Session

from . import test_e2e as base
from .conftest import wait_until
from .test_e2e import PHONE, RECIPIENT, link, post

# The real runner and simulator, and a logged-in client, as test_e2e starts them.
stack = base.stack
user_client = base.user_client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def done(stack, r) -> dict:
    assert r.status_code == 200, f"{r.status_code} {r.content!r}\n{stack.logs()}"
    answer = r.json()
    assert answer["success"] is True and answer["status"] == "done", f"{answer}\n{stack.logs()}"
    return answer


def test_command_views_against_a_real_runner(stack, user_client, settings):
    """Every command view over HTTP: the answer, and what the simulated server saw."""
    settings.WA_OUTBOX_SEND_TIMEOUT = 60
    s = "e2e_views"
    link(stack, user_client, s)
    stack.sim_call("/_sim/unregistered", {"numbers": ["15559990000"]})

    answer = done(
        stack,
        post(
            user_client,
            "command-check-numbers",
            {"sessionId": s, "numbers": [RECIPIENT, "15559990000"]},
        ),
    )
    assert [r["exists"] for r in answer["result"]["results"]] == [True, False]

    stack.sim_call("/_sim/incoming", {"to": PHONE, "from": RECIPIENT, "body": "view history"})
    wait_until(
        lambda: Session.objects.get(pk=s).events.filter(kind="message").first(),
        timeout=60,
        interval=0.25,
        what="the incoming message recorded",
    )
    answer = done(
        stack, post(user_client, "command-mark-read", {"sessionId": s, "chat": RECIPIENT})
    )
    assert answer["result"]["unread"] == 1
    done(stack, post(user_client, "command-typing", {"sessionId": s, "chat": RECIPIENT}))
    seen = stack.sim_call(f"/_sim/chat_state?phone={PHONE}")
    chat = f"{RECIPIENT}@c.us"
    assert [(m["chat"], m["count"]) for m in seen["read"]] == [(chat, 1)], seen
    assert [(m["chat"], m["state"]) for m in seen["presence"]] == [(chat, "typing")], seen

    stack.sim_call("/_sim/profile", {"phone": RECIPIENT, "pushname": "Viewer", "picture": True})
    answer = done(
        stack, post(user_client, "command-contact-info", {"sessionId": s, "contact": RECIPIENT})
    )
    assert (answer["result"]["exists"], answer["result"]["pushname"]) == (True, "Viewer")
    answer = done(
        stack, post(user_client, "command-profile-picture", {"sessionId": s, "contact": RECIPIENT})
    )
    assert f"/_sim/pps/{RECIPIENT}/" in answer["result"]["url"]
    answer = done(stack, post(user_client, "command-chats", {"sessionId": s, "limit": 10}))
    assert [c["number"] for c in answer["result"]["chats"]] == [RECIPIENT]
    answer = done(
        stack, post(user_client, "command-history", {"sessionId": s, "chat": RECIPIENT, "limit": 5})
    )
    assert [m["body"] for m in answer["result"]["messages"]] == ["view history"]

    answer = done(
        stack,
        post(
            user_client,
            "group-create",
            {"sessionId": s, "subject": "Views", "participants": [RECIPIENT]},
        ),
    )
    gid = answer["result"]["id"]
    groups = stack.sim_call(f"/_sim/groups?phone={PHONE}")["groups"]
    assert [(g["id"], g["subject"]) for g in groups] == [(gid, "Views")]
    answer = done(
        stack,
        post(
            user_client,
            "group-participants",
            {"sessionId": s, "group": gid, "action": "promote", "participants": [RECIPIENT]},
        ),
    )
    assert answer["result"]["results"] == [{"wid": chat, "ok": True, "code": "200"}]
    answer = done(stack, post(user_client, "group-info", {"sessionId": s, "group": gid}))
    flags = {p["id"]: p["is_admin"] for p in answer["result"]["participants"]}
    assert flags == {f"{PHONE}@c.us": True, chat: True}, flags
    answer = done(stack, post(user_client, "group-invite-link", {"sessionId": s, "group": gid}))
    code = stack.sim_call(f"/_sim/groups?phone={PHONE}")["groups"][0]["invite_code"]
    assert answer["result"]["link"] == f"https://chat.whatsapp.com/{code}"
    answer = done(stack, post(user_client, "group-leave", {"sessionId": s, "group": gid}))
    assert answer["result"]["left"] is True
    assert stack.sim_call(f"/_sim/groups?phone={PHONE}")["groups"] == []

    status = user_client.get(reverse("wa_outbox:command-status", args=[answer["commandId"]]))
    assert (status.status_code, status.json()["status"]) == (200, "done")


def test_a_rejected_call_and_a_group_change_reach_django_as_signals(stack, user_client, settings):
    settings.WA_OUTBOX_SEND_TIMEOUT = 60
    s = "e2e_calls"
    link(stack, user_client, s)
    session = Session.objects.get(pk=s)
    session.reject_calls = True
    session.save()

    got: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def recorder(name):
        def handle(sender, **kwargs):
            with lock:
                got.append((name, kwargs))

        return handle

    handlers = {n: recorder(n) for n in ("call_received", "group_updated")}
    for n, h in handlers.items():
        getattr(signals, n).connect(h, weak=False)
    stop, ready = threading.Event(), threading.Event()
    listener = EventListener(name="e2e_calls", poll_interval=0.5)
    thread = threading.Thread(target=listener.run, args=(stop, ready), daemon=True)
    thread.start()

    def seen(name):
        with lock:
            return [kw for n, kw in got if n == name]

    try:
        assert ready.wait(30), "listener did not start"
        call = stack.sim_call("/_sim/call", {"to": PHONE, "from": RECIPIENT, "video": False})
        try:
            calls = wait_until(lambda: seen("call_received"), timeout=60, what="call_received")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs()}") from None
        assert len(calls) == 1
        c = calls[0]
        assert (c["session_id"], c["call_id"], c["caller_jid"], c["rejected"]) == (
            s,
            call["id"],
            f"{RECIPIENT}@c.us",
            True,
        ), c
        on_server = stack.sim_call(f"/_sim/calls?phone={PHONE}")["calls"]
        assert [(x["id"], x["state"], x["rejects"]) for x in on_server] == [
            (call["id"], "rejected", 1)
        ]

        answer = done(
            stack,
            post(
                user_client,
                "group-create",
                {"sessionId": s, "subject": "Signals", "participants": [RECIPIENT]},
            ),
        )
        gid = answer["result"]["id"]
        done(
            stack,
            post(
                user_client,
                "group-participants",
                {"sessionId": s, "group": gid, "action": "promote", "participants": [RECIPIENT]},
            ),
        )
        newcomer = "15557770001"
        stack.sim_call(
            "/_sim/group_update",
            {"group": gid, "actor": RECIPIENT, "action": "add", "participants": [newcomer]},
        )
        try:
            updates = wait_until(lambda: seen("group_updated"), timeout=60, what="group_updated")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs()}") from None
        u = updates[0]
        assert (u["group_id"], u["action"], u["participants"], u["actor"]) == (
            gid,
            "add",
            [f"{newcomer}@c.us"],
            f"{RECIPIENT}@c.us",
        ), u
        answer = done(stack, post(user_client, "group-info", {"sessionId": s, "group": gid}))
        assert f"{newcomer}@c.us" in [p["id"] for p in answer["result"]["participants"]]
        assert len(seen("group_updated")) == 1 and len(seen("call_received")) == 1
    finally:
        stop.set()
        thread.join(20)
        for n, h in handlers.items():
            getattr(signals, n).disconnect(h)
