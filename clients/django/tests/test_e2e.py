"""End to end: Django's views, a real wa-outbox runner, real Chromium and the simulator.

Selected with `-m e2e`; needs WA_OUTBOX_BIN (the wa-outbox binary). Without it these tests FAIL
(they do not skip): a green run must mean the whole path was exercised.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import secrets
import signal
import subprocess
import threading
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from wa_outbox import signals
from wa_outbox.listener import EventListener
from wa_outbox.models import Message, Session

from .conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = "15550001111"
RECIPIENT = "15551234567"
HTTP_TIMEOUT = 10


class Process:
    """A child process whose output goes to a file (read back only when a test fails)."""

    def __init__(self, name: str, argv: list[str], env: dict, log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=self._log_file, stdin=subprocess.DEVNULL
        )
        self.first_line: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        first = True
        for line in self.proc.stdout:
            if first:
                self.first_line.put(line)
                first = False
            self._log_file.write(line)
            self._log_file.flush()
        if first:
            self.first_line.put(b"")

    def tail(self, n: int = 60) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + "\n".join(lines[-n:])

    def stop(self, grace: float = 20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()


class Stack:
    def __init__(self, sim: Process, runner: Process, sim_url: str):
        self.sim, self.runner, self.sim_url = sim, runner, sim_url

    def logs(self) -> str:
        return f"{self.runner.tail()}\n{self.sim.tail(20)}"

    def sim_call(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.sim_url.rstrip("/") + path,
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            return json.loads(resp.read() or b"{}")


@pytest.fixture
def stack(database_url, tmp_path):
    binary = os.environ.get("WA_OUTBOX_BIN")
    if not binary:
        pytest.fail(
            "WA_OUTBOX_BIN is not set: the e2e tests need the wa-outbox binary "
            "(e.g. WA_OUTBOX_BIN=$PWD/target/debug/wa-outbox); deselect them with -m 'not e2e'",
            pytrace=False,
        )
    if not os.access(binary, os.X_OK):
        pytest.fail(f"WA_OUTBOX_BIN={binary} is not an executable", pytrace=False)

    # WA_OUTBOX_DIE_WITH_PARENT: the kernel kills the simulator and the runner when pytest ends,
    # however it ends (interrupted, killed), so a test run leaves nothing running.
    base_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    base_env["WA_OUTBOX_DIE_WITH_PARENT"] = "1"
    sim = Process("sim", [binary, "sim", "--listen", "127.0.0.1:0"], base_env, tmp_path)
    runner = None
    try:
        try:
            line = sim.first_line.get(timeout=30).decode(errors="replace").strip()
        except queue.Empty:
            pytest.fail(f"the simulator printed nothing in 30 s\n{sim.tail()}", pytrace=False)
        prefix = "sim listening on "
        if not line.startswith(prefix):
            if not line:  # stdout closed: it exited; let tail() show its exit code
                try:
                    sim.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            pytest.fail(f"unexpected first simulator line {line!r}\n{sim.tail()}", pytrace=False)
        sim_url = line[len(prefix) :]

        data_dir = tmp_path / "wa-data"
        data_dir.mkdir()
        env = {
            **base_env,
            "DATABASE_URL": database_url,
            "WA_WEB_URL": sim_url,
            "WA_DATA_DIR": str(data_dir),
            "WA_AUTH_KEY": "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "WA_SEND_MIN_INTERVAL": "0",
            "WA_LOG_FORMAT": "pretty",
        }
        runner = Process("runner", [binary, "run"], env, tmp_path)
        yield Stack(sim, runner, sim_url)
    finally:
        if runner is not None:
            runner.stop()
        sim.stop(5)


@pytest.fixture
def user_client(client, settings):
    # A cold Chromium on a busy CI machine can take longer than the seed's 30 s to show a QR.
    settings.WA_OUTBOX_QR_TIMEOUT = 90
    client.force_login(User.objects.create_user("e2e", password="x"))
    return client


def post(client, name, data):
    return client.post(
        reverse(f"wa_outbox:{name}"), json.dumps(data), content_type="application/json"
    )


def link(stack: Stack, client, session_id: str) -> dict:
    """init → QR → the simulated phone scans it → the status endpoint says connected."""
    r = post(client, "session-init", {"sessionId": session_id})
    assert r.status_code == 200, f"{r.status_code} {r.content!r}\n{stack.logs()}"
    body = r.json()
    assert body["success"] is True and body["status"] == "qr_pending", body
    assert body["qrCode"].startswith("data:image/png;base64,")
    assert base64.b64decode(body["qrCode"].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")

    # What a phone's camera would read from that picture: the raw payload in the same row.
    qr = Session.objects.get(pk=session_id).qr_code
    assert qr and qr.count(",") == 4, "qr_code is not the five-field WhatsApp QR payload"
    stack.sim_call("/_sim/scan", {"qr": qr, "phone": PHONE, "name": "E2E Phone"})

    url = reverse("wa_outbox:session-status", args=[session_id])

    def connected():
        status = client.get(url).json()
        assert status.get("status") != "failed", f"{status}\n{stack.logs()}"
        return status if status.get("status") == "connected" else None

    try:
        status = wait_until(connected, timeout=90, interval=0.25, what="status connected")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    assert status["isReady"] is True
    assert (status["phoneNumber"] or "").lstrip("+") == PHONE
    return status


def test_init_scan_status_send_delivered(stack, user_client):
    link(stack, user_client, "e2e_session")

    text = "Hello from Django " + secrets.token_hex(4)
    r = post(
        user_client,
        "send-text",
        {"sessionId": "e2e_session", "recipient": RECIPIENT, "message": text},
    )
    assert r.status_code == 200, f"{r.content!r}\n{stack.logs()}"
    body = r.json()
    assert body["success"] is True, f"{body}\n{stack.logs()}"
    assert isinstance(body["messageId"], int)
    assert body["status"] in ("queued", "sending", "sent", "delivered", "read"), body

    try:
        row = wait_until(
            lambda: Message.objects.filter(
                pk=body["messageId"], status__in=["delivered", "read", "played"]
            ).first(),
            timeout=60,
            interval=0.25,
            what="message delivered",
        )
    except AssertionError as exc:
        row = (
            Message.objects.filter(pk=body["messageId"])
            .values("status", "error_code", "error")
            .first()
        )
        raise AssertionError(f"{exc}; row {row}\n{stack.logs()}") from None
    assert row.delivered_at is not None and row.sent_at is not None
    assert row.wa_message_id and row.error_code is None

    # The simulated WhatsApp server got exactly one copy.
    sent = stack.sim_call(f"/_sim/messages?phone={PHONE}")["messages"]
    assert [m["body"] for m in sent if m.get("body") == text] == [text], sent

    status = user_client.get(reverse("wa_outbox:message-status", args=[body["messageId"]])).json()
    assert status["status"] in ("delivered", "read", "played") and status["ack"] >= 2


def test_listener_signals_for_a_live_session(stack, user_client):
    link(stack, user_client, "e2e_signals")

    got: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def recorder(name):
        def handle(sender, **kwargs):
            with lock:
                got.append((name, kwargs))

        return handle

    handlers = {
        name: recorder(name) for name in ("message_received", "message_ack", "session_status")
    }
    for name, handler in handlers.items():
        getattr(signals, name).connect(handler, weak=False)
    stop, ready = threading.Event(), threading.Event()
    listener = EventListener(name="e2e", poll_interval=0.5)
    thread = threading.Thread(target=listener.run, args=(stop, ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "listener did not start"

        def seen(name, pred):
            with lock:
                return [kw for n, kw in got if n == name and pred(kw)]

        # The backlog: the session's own status changes up to connected.
        wait_until(
            lambda: seen("session_status", lambda kw: kw["session_id"] == "e2e_signals"),
            timeout=30,
            what="session_status signal",
        )

        stack.sim_call("/_sim/incoming", {"to": PHONE, "from": "15557654321", "body": "hi django"})
        try:
            incoming = wait_until(
                lambda: seen(
                    "message_received", lambda kw: "hi django" in json.dumps(kw["payload"])
                ),
                timeout=60,
                what="message_received signal",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs()}") from None
        assert incoming[0]["session_id"] == "e2e_signals" and incoming[0]["wa_message_id"]

        r = post(
            user_client,
            "send-text",
            {"sessionId": "e2e_signals", "recipient": RECIPIENT, "message": "ack me"},
        )
        message_id = r.json()["messageId"]
        try:
            wait_until(
                lambda: seen(
                    "message_ack",
                    lambda kw: kw["message_id"] == message_id and (kw["ack"] or 0) >= 2,
                ),
                timeout=60,
                what="message_ack signal (ack >= 2)",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs()}") from None
    finally:
        stop.set()
        thread.join(20)
        for name, handler in handlers.items():
            getattr(signals, name).disconnect(handler)


def test_listener_signals_for_the_other_sides_reactions_votes_edits_and_revokes(
    stack, user_client
):
    """The simulated contact reacts to our message, votes in our poll, edits and deletes its own
    message: the real runner records each once and the listener sends one signal per kind."""
    from wa_outbox.services import WhatsAppService

    link(stack, user_client, "e2e_typed")
    svc = WhatsAppService()
    with override_settings(WA_OUTBOX_SEND_TIMEOUT=60):
        text = svc.send_text_message("e2e_typed", RECIPIENT, "react to me")
        poll = svc.send_poll("e2e_typed", RECIPIENT, "Lunch?", ["Pizza", "Sushi"], 1)
    rows = []
    for answer in (text, poll):
        assert answer["success"] is True, f"{answer}\n{stack.logs()}"
        rows.append(
            wait_until(
                lambda pk=answer["messageId"]: Message.objects.filter(
                    pk=pk, status__in=["sent", "delivered", "read", "played"]
                ).first(),
                timeout=60,
                interval=0.25,
                what="message sent",
            )
        )
    text_row, poll_row = rows
    theirs = stack.sim_call("/_sim/incoming", {"to": PHONE, "from": RECIPIENT, "body": "tpyo"})

    names = (
        "message_received",
        "reaction_received",
        "poll_vote_received",
        "message_edited",
        "message_revoked",
    )
    got: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def recorder(name):
        def handle(sender, **kwargs):
            with lock:
                got.append((name, kwargs))

        return handle

    handlers = {name: recorder(name) for name in names}
    for name, handler in handlers.items():
        getattr(signals, name).connect(handler, weak=False)
    stop, ready = threading.Event(), threading.Event()
    listener = EventListener(name="e2e_typed", poll_interval=0.5)
    thread = threading.Thread(target=listener.run, args=(stop, ready), daemon=True)
    thread.start()

    def seen(name):
        with lock:
            return [kw for n, kw in got if n == name and kw["session_id"] == "e2e_typed"]

    def wait_signal(name, n=1):
        try:
            return wait_until(
                lambda: seen(name) if len(seen(name)) >= n else None,
                timeout=60,
                what=f"{n} {name} signal(s)",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs()}") from None

    try:
        assert ready.wait(30), "listener did not start"
        their_key = wait_signal("message_received")[0]["wa_message_id"]
        assert their_key.split("_")[2] == theirs["id"]
        stack.sim_call(
            "/_sim/react",
            {"to": PHONE, "from": RECIPIENT, "id": text_row.wa_message_id, "emoji": "👍"},
        )
        stack.sim_call(
            "/_sim/vote",
            {"to": PHONE, "from": RECIPIENT, "poll": poll_row.wa_message_id, "options": ["Sushi"]},
        )
        stack.sim_call(
            "/_sim/edit", {"to": PHONE, "from": RECIPIENT, "id": their_key, "body": "typo"}
        )
        stack.sim_call("/_sim/revoke", {"to": PHONE, "from": RECIPIENT, "id": their_key})
        reaction = wait_signal("reaction_received")[0]
        vote = wait_signal("poll_vote_received")[0]
        edit = wait_signal("message_edited")[0]
        revoke = wait_signal("message_revoked")[0]
        sender = f"{RECIPIENT}@c.us"
        assert (reaction["message_id"], reaction["emoji"], reaction["sender_jid"]) == (
            text_row.pk,
            "👍",
            sender,
        )
        assert (vote["message_id"], vote["selected_options"]) == (poll_row.pk, ["Sushi"])
        assert (edit["target_wa_id"], edit["body"]) == (their_key, "typo")
        assert revoke["target_wa_id"] == their_key
        # One signal each: the runner recorded each once.
        for name in names[1:]:
            assert len(seen(name)) == 1, (name, seen(name))
    finally:
        stop.set()
        thread.join(20)
        for name, handler in handlers.items():
            getattr(signals, name).disconnect(handler)


def test_commands_check_numbers_mark_read_and_typing_against_a_real_runner(stack, user_client):
    """WhatsAppService's commands through a real runner, Chromium and the simulator: the answer
    the call returns, and what the simulated WhatsApp server saw."""
    from wa_outbox.services import WhatsAppService

    link(stack, user_client, "e2e_commands")
    svc = WhatsAppService()
    stack.sim_call("/_sim/unregistered", {"numbers": ["15559990000"]})

    answer = svc.check_numbers("e2e_commands", [RECIPIENT, "15559990000"], timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    assert [r["exists"] for r in answer["results"]] == [True, False]
    assert answer["results"][0]["wid"] and answer["results"][1]["wid"] is None

    stack.sim_call("/_sim/incoming", {"to": PHONE, "from": RECIPIENT, "body": "unread"})
    wait_until(
        lambda: Session.objects.get(pk="e2e_commands").events.filter(kind="message").first(),
        timeout=60,
        interval=0.25,
        what="the incoming message recorded",
    )
    answer = svc.mark_read("e2e_commands", RECIPIENT, timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    assert answer["result"]["unread"] == 1

    answer = svc.set_typing("e2e_commands", RECIPIENT, timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"

    seen = stack.sim_call(f"/_sim/chat_state?phone={PHONE}")
    chat = f"{RECIPIENT}@c.us"
    assert [(m["chat"], m["count"]) for m in seen["read"]] == [(chat, 1)], seen
    assert [(m["chat"], m["state"]) for m in seen["presence"]] == [(chat, "typing")], seen

    answer = svc.set_typing("e2e_commands", RECIPIENT, False, timeout=60)
    assert answer["success"] is True and answer["result"]["state"] == "paused"
    seen = stack.sim_call(f"/_sim/chat_state?phone={PHONE}")
    assert [m["state"] for m in seen["presence"]] == ["typing", "idle"], seen


def test_send_location_against_a_real_runner(stack, user_client):
    """The send-location view (WhatsAppService.send_location) through a real runner, Chromium
    and the simulator: one pin with its name and address on the simulated server."""
    link(stack, user_client, "e2e_location")
    with override_settings(WA_OUTBOX_SEND_TIMEOUT=60):
        answer = post(
            user_client,
            "send-location",
            {
                "sessionId": "e2e_location",
                "recipient": RECIPIENT,
                "latitude": 48.858370,
                "longitude": 2.294481,
                "name": "Tour Eiffel",
                "address": "Paris",
            },
        ).json()
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    row = wait_until(
        lambda: Message.objects.filter(
            pk=answer["messageId"], status__in=["sent", "delivered", "read", "played"]
        ).first(),
        timeout=60,
        interval=0.25,
        what="location sent",
    )
    bare = row.wa_message_id.split("_")[2]
    sent = stack.sim_call(f"/_sim/messages?phone={PHONE}")["messages"]
    pins = [m for m in sent if m["id"] == bare]
    assert len(pins) == 1, sent
    assert pins[0]["kind"] == "location"
    assert pins[0]["location"] == {
        "lat": 48.85837,
        "lng": 2.294481,
        "name": "Tour Eiffel",
        "address": "Paris",
    }


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGBA PNG, made here (no image library needed)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\0" + b"\xff\x00\x00\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_send_sticker_against_a_real_runner(stack, user_client):
    """A PNG uploaded to the send-sticker view (WhatsAppService.send_sticker): the page turns it
    into a 512x512 WebP sticker that the simulated server records once; bytes that are no image
    fail with media_invalid."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from wa_outbox.services import WhatsAppService

    link(stack, user_client, "e2e_sticker")
    svc = WhatsAppService()
    with override_settings(WA_OUTBOX_SEND_TIMEOUT=60):
        good = user_client.post(
            reverse("wa_outbox:send-sticker"),
            {
                "sessionId": "e2e_sticker",
                "recipient": RECIPIENT,
                "file": SimpleUploadedFile("s.png", tiny_png(), content_type="image/png"),
            },
        ).json()
        bad = svc.send_sticker(
            "e2e_sticker", RECIPIENT, file=b"not a picture", mimetype="image/png"
        )
    assert good["success"] is True, f"{good}\n{stack.logs()}"
    assert (bad["success"], bad["status"], bad.get("errorCode")) == (
        False,
        "failed",
        "media_invalid",
    ), bad
    row = wait_until(
        lambda: Message.objects.filter(
            pk=good["messageId"], status__in=["sent", "delivered", "read", "played"]
        ).first(),
        timeout=60,
        interval=0.25,
        what="sticker sent",
    )
    bare = row.wa_message_id.split("_")[2]
    sent = stack.sim_call(f"/_sim/messages?phone={PHONE}")["messages"]
    hits = [m for m in sent if m["id"] == bare]
    assert len(hits) == 1, sent
    assert hits[0]["kind"] == "sticker"
    assert hits[0]["media"]["mime"] == "image/webp"
    assert hits[0]["sticker"] == {"width": 512, "height": 512}
    assert [m for m in sent if m["kind"] == "sticker"] == hits


VCARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ann Lee\r\nTEL;type=CELL;waid=15550300001:+1 555 030 0001\r\nEND:VCARD"


def test_send_contact_poll_and_mentions_against_a_real_runner(stack, user_client):
    """The send-contact and send-poll views (send_contact, send_poll) and
    send_text_message(mentions=…) through a real runner, Chromium and the simulator: each
    recorded once by the simulated server with its cards, poll or mentioned JIDs."""
    from wa_outbox.services import WhatsAppService

    link(stack, user_client, "e2e_more_kinds")
    svc = WhatsAppService()
    with override_settings(WA_OUTBOX_SEND_TIMEOUT=60):
        answers = [
            post(
                user_client,
                "send-contact",
                {"sessionId": "e2e_more_kinds", "recipient": RECIPIENT, "vcards": [VCARD]},
            ).json(),
            post(
                user_client,
                "send-poll",
                {
                    "sessionId": "e2e_more_kinds",
                    "recipient": RECIPIENT,
                    "question": "Lunch?",
                    "choices": ["Pizza", "Sushi"],
                    "selectableCount": 0,
                },
            ).json(),
            svc.send_text_message(
                "e2e_more_kinds", RECIPIENT, "hi @15550300001", mentions=["15550300001"]
            ),
        ]
    for answer in answers:
        assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    recorded = []
    for answer in answers:
        row = wait_until(
            lambda pk=answer["messageId"]: Message.objects.filter(
                pk=pk, status__in=["sent", "delivered", "read", "played"]
            ).first(),
            timeout=60,
            interval=0.25,
            what="message sent",
        )
        bare = row.wa_message_id.split("_")[2]
        sent = stack.sim_call(f"/_sim/messages?phone={PHONE}")["messages"]
        hits = [m for m in sent if m["id"] == bare]
        assert len(hits) == 1, sent
        recorded.append(hits[0])
    contact, poll, text = recorded
    assert contact["kind"] == "contact"
    assert contact["contacts"] == [{"display_name": "Ann Lee", "vcard": VCARD}]
    assert poll["kind"] == "poll"
    assert poll["poll"] == {"name": "Lunch?", "options": ["Pizza", "Sushi"], "selectable": 0}
    assert text["body"] == "hi @15550300001"
    assert text["mentions"] == ["15550300001@c.us"]


def test_contacts_pictures_chats_and_history_against_a_real_runner(stack, user_client):
    """get_contact_info, get_profile_picture, get_chats and get_chat_history through a real
    runner, Chromium and the simulator, answering what the simulated server was told."""
    from wa_outbox.services import WhatsAppService

    link(stack, user_client, "e2e_contacts")
    svc = WhatsAppService()
    stack.sim_call(
        "/_sim/profile",
        {"phone": RECIPIENT, "pushname": "Recipient", "about": "Hi there", "picture": True},
    )
    stack.sim_call("/_sim/profile", {"phone": PHONE, "address_book": {RECIPIENT: "Saved Name"}})

    answer = svc.get_contact_info("e2e_contacts", RECIPIENT, timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    c = answer["result"]
    assert (c["exists"], c["number"], c["name"], c["pushname"], c["about"]) == (
        True, RECIPIENT, "Saved Name", "Recipient", "Hi there"
    ), c
    assert c["is_my_contact"] is True and c["is_business"] is False

    answer = svc.get_profile_picture("e2e_contacts", RECIPIENT, timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    assert answer["result"]["found"] is True
    assert f"/_sim/pps/{RECIPIENT}/" in answer["result"]["url"]
    assert answer["result"]["expires_at"]

    stack.sim_call("/_sim/incoming", {"to": PHONE, "from": RECIPIENT, "body": "hello history"})
    wait_until(
        lambda: Session.objects.get(pk="e2e_contacts").events.filter(kind="message").first(),
        timeout=60,
        interval=0.25,
        what="the incoming message recorded",
    )
    answer = svc.get_chats("e2e_contacts", 10, timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    chats = [c for c in answer["chats"] if c["number"] == RECIPIENT]
    assert len(chats) == 1 and chats[0]["unread"] == 1, answer["chats"]

    answer = svc.get_chat_history("e2e_contacts", RECIPIENT, 5, timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    assert [(m["body"], m["from_me"]) for m in answer["messages"]] == [("hello history", False)]


def test_react_against_a_real_runner(stack, user_client):
    """WhatsAppService.react on a message we sent (by its Message id) and again by its WhatsApp
    id, then removed: the simulated server records the three reactions on that message."""
    from wa_outbox.services import WhatsAppService

    link(stack, user_client, "e2e_react")
    svc = WhatsAppService()
    with override_settings(WA_OUTBOX_SEND_TIMEOUT=60):
        sent = svc.send_text_message("e2e_react", RECIPIENT, "react to me")
        assert sent["success"] is True, f"{sent}\n{stack.logs()}"
        row = wait_until(
            lambda: Message.objects.filter(
                pk=sent["messageId"], status__in=["sent", "delivered", "read", "played"]
            ).first(),
            timeout=60,
            interval=0.25,
            what="message sent",
        )
        answers = [
            svc.react("e2e_react", RECIPIENT, row.pk, "👍"),
            post(
                user_client,
                "react",
                {
                    "sessionId": "e2e_react",
                    "recipient": RECIPIENT,
                    "waMessageId": row.wa_message_id,
                    "emoji": "❤️",
                },
            ).json(),
            svc.react("e2e_react", RECIPIENT, row.pk, ""),
        ]
    for answer in answers:
        assert answer["success"] is True and answer["status"] == "sent", f"{answer}"
    bare = row.wa_message_id.split("_")[2]
    reactions = stack.sim_call(f"/_sim/messages?phone={PHONE}")["reactions"]
    mine = [r["text"] for r in reactions if r["parent_id"] == bare]
    assert sorted(mine) == sorted(["👍", "❤️", ""]), reactions


def test_edit_message_against_a_real_runner(stack, user_client):
    """WhatsAppService.edit_message on a message we just sent: the simulated server records the
    new text on that message; an edit of one sent 16 minutes ago (by its row) is refused."""
    from wa_outbox.services import WhatsAppService

    link(stack, user_client, "e2e_edit")
    svc = WhatsAppService()
    with override_settings(WA_OUTBOX_SEND_TIMEOUT=60):
        sent = svc.send_text_message("e2e_edit", RECIPIENT, "teh text")
        assert sent["success"] is True, f"{sent}\n{stack.logs()}"
        row = wait_until(
            lambda: Message.objects.filter(
                pk=sent["messageId"], status__in=["sent", "delivered", "read", "played"]
            ).first(),
            timeout=60,
            interval=0.25,
            what="message sent",
        )
        edited = post(
            user_client,
            "edit-message",
            {
                "sessionId": "e2e_edit",
                "recipient": RECIPIENT,
                "messageId": row.pk,
                "message": "the text",
            },
        ).json()
        assert edited["success"] is True and edited["status"] == "sent", edited
        Message.objects.filter(pk=row.pk).update(sent_at=timezone.now() - timedelta(minutes=16))
        late = svc.edit_message("e2e_edit", RECIPIENT, row.pk, "too late")
    assert late["success"] is False and late["errorCode"] == "invalid_options", late
    bare = row.wa_message_id.split("_")[2]
    edits = stack.sim_call(f"/_sim/messages?phone={PHONE}")["edits"]
    assert [(e["parent_id"], e["text"]) for e in edits] == [(bare, "the text")], edits


def test_delete_message_against_a_real_runner(stack, user_client):
    """WhatsAppService.delete_message on a message we sent: the simulated server records it
    deleted for everyone, once."""
    from wa_outbox.services import WhatsAppService

    link(stack, user_client, "e2e_revoke")
    svc = WhatsAppService()
    with override_settings(WA_OUTBOX_SEND_TIMEOUT=60):
        sent = svc.send_text_message("e2e_revoke", RECIPIENT, "oops")
        assert sent["success"] is True, f"{sent}\n{stack.logs()}"
        row = wait_until(
            lambda: Message.objects.filter(
                pk=sent["messageId"], status__in=["sent", "delivered", "read", "played"]
            ).first(),
            timeout=60,
            interval=0.25,
            what="message sent",
        )
        deleted = post(
            user_client,
            "delete-message",
            {"sessionId": "e2e_revoke", "recipient": RECIPIENT, "waMessageId": row.wa_message_id},
        ).json()
    assert deleted["success"] is True and deleted["status"] == "sent", deleted
    bare = row.wa_message_id.split("_")[2]
    revokes = stack.sim_call(f"/_sim/messages?phone={PHONE}")["revokes"]
    assert [r["parent_id"] for r in revokes] == [bare], revokes


def test_forward_message_against_a_real_runner(stack, user_client):
    """WhatsAppService.forward_message of a message we sent, to another chat, by its Message id
    and by its WhatsApp id: the simulated server records two forwarded copies with the
    original's text, once each; a message the page does not hold is refused with
    invalid_options and nothing is sent."""
    from wa_outbox.services import WhatsAppService

    other = "15557654321"
    link(stack, user_client, "e2e_forward")
    svc = WhatsAppService()
    with override_settings(WA_OUTBOX_SEND_TIMEOUT=60):
        sent = svc.send_text_message("e2e_forward", RECIPIENT, "pass this on")
        assert sent["success"] is True, f"{sent}\n{stack.logs()}"
        row = wait_until(
            lambda: Message.objects.filter(
                pk=sent["messageId"], status__in=["sent", "delivered", "read", "played"]
            ).first(),
            timeout=60,
            interval=0.25,
            what="message sent",
        )
        answers = [
            post(
                user_client,
                "forward-message",
                {"sessionId": "e2e_forward", "recipient": other, "messageId": row.pk},
            ).json(),
            svc.forward_message("e2e_forward", other, row.wa_message_id),
        ]
        missing = svc.forward_message(
            "e2e_forward", other, f"true_{RECIPIENT}@c.us_3EB0DEADBEEF0000"
        )
    for answer in answers:
        assert answer["success"] is True, f"{answer}\n{stack.logs()}"
        assert answer["status"] in ("sent", "delivered", "read"), answer
    assert missing["success"] is False and missing["errorCode"] == "invalid_options", missing
    bare = row.wa_message_id.split("_")[2]
    msgs = stack.sim_call(f"/_sim/messages?phone={PHONE}")["messages"]
    copies = [m for m in msgs if m.get("forwarded")]
    assert len(copies) == 2, msgs
    for copy in copies:
        assert (copy["to"], copy["body"]) == (f"{other}@c.us", "pass this on"), copy
        assert copy["forwarded"]["from"].split("_")[2] == bare, copy
    keys = {Message.objects.get(pk=a["messageId"]).wa_message_id.split("_")[2] for a in answers}
    assert keys == {c["id"] for c in copies}, (keys, copies)


def test_create_group_and_group_info_against_a_real_runner(stack, user_client):
    """create_group makes exactly one group on the simulated server; get_group_info reads it
    back with the creator as superadmin."""
    from wa_outbox.services import WhatsAppService

    link(stack, user_client, "e2e_groups")
    svc = WhatsAppService()
    answer = svc.create_group("e2e_groups", "Django group", [f"+{RECIPIENT}"], timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    r = answer["result"]
    assert r["id"].endswith("@g.us") and r["subject"] == "Django group", r
    assert (r["added"], r["failed"], r["recovered"]) == ([f"{RECIPIENT}@c.us"], [], False), r
    groups = stack.sim_call(f"/_sim/groups?phone={PHONE}")["groups"]
    assert [g["id"] for g in groups if g["subject"] == "Django group"] == [r["id"]]

    answer = svc.get_group_info("e2e_groups", r["id"], timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    info = answer["result"]
    assert (info["found"], info["subject"], info["owner"]) == (True, "Django group", f"{PHONE}@c.us")
    flags = {p["id"]: (p["is_admin"], p["is_super_admin"]) for p in info["participants"]}
    assert flags == {f"{PHONE}@c.us": (True, True), f"{RECIPIENT}@c.us": (False, False)}, flags

    answer = svc.get_group_invite_link("e2e_groups", r["id"], timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    code = stack.sim_call(f"/_sim/groups?phone={PHONE}")["groups"][0]["invite_code"]
    assert answer["result"]["link"] == f"https://chat.whatsapp.com/{code}"

    answer = svc.leave_group("e2e_groups", r["id"], timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    assert answer["result"] == {"group": r["id"], "left": True, "recovered": False}
    assert stack.sim_call(f"/_sim/groups?phone={PHONE}")["groups"] == []


def test_update_group_participants_against_a_real_runner(stack, user_client):
    """update_group_participants promotes, demotes and removes on the simulated server, with the
    page's code per participant."""
    from wa_outbox.services import WhatsAppService

    link(stack, user_client, "e2e_gparts")
    svc = WhatsAppService()
    answer = svc.create_group("e2e_gparts", "Django participants", [RECIPIENT], timeout=60)
    assert answer["success"] is True, f"{answer}\n{stack.logs()}"
    gid = answer["result"]["id"]
    them = f"{RECIPIENT}@c.us"

    def role():
        g = [g for g in stack.sim_call(f"/_sim/groups?phone={PHONE}")["groups"] if g["id"] == gid][0]
        return {p["id"]: p["admin"] for p in g["participants"]}.get(them, "absent")

    for action, want in [("promote", "admin"), ("demote", None), ("remove", "absent")]:
        answer = svc.update_group_participants("e2e_gparts", gid, action, [RECIPIENT], timeout=60)
        assert answer["success"] is True, f"{answer}\n{stack.logs()}"
        assert answer["result"] == {
            "group": gid,
            "action": action,
            "results": [{"wid": them, "ok": True, "code": "200"}],
            "recovered": False,
        }, answer
        assert role() == want, action
    # Removed already: the page has no participant to remove.
    answer = svc.update_group_participants("e2e_gparts", gid, "remove", [RECIPIENT], timeout=60)
    assert answer["success"] is True, answer
    assert answer["result"]["results"] == [{"wid": them, "ok": False, "code": "not_a_participant"}]
