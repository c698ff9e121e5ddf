"""Incoming media (wa_media): the Media model, WhatsAppService.get_media, the admin's download
(gated by the view permission), the message_received signal's `media`, and, against a real
runner, an image sent by the simulated phone end to end."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from wa_outbox import signals
from wa_outbox.exceptions import InvalidInputError, MediaNotFoundError
from wa_outbox.listener import EventListener
from wa_outbox.models import Media
from wa_outbox.services import WhatsAppService

from . import runner_side, test_e2e
from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def incoming_with_media(sql, session_id, wa_id, data=PNG, error_code=None):
    """What a runner writes for an incoming image: the event naming its wa_media row."""
    media_id = sql.execute("select nextval(pg_get_serial_sequence('wa_media', 'id'))").fetchone()[
        0
    ]
    payload = {
        "from": "15557654321@c.us",
        "body": "a caption",
        "type": "image",
        "mimetype": "image/png",
        "filename": "dot.png",
        "caption": "a caption",
        "media_id": media_id,
    }
    event_id = runner_side.event(sql, session_id, "message", payload, None, wa_id)
    stored = error_code is None
    sql.execute(
        "insert into wa_media (id, session_id, event_id, wa_message_id, kind, mime, filename, caption,"
        " size, sha256, data, error_code, error)"
        " values (%s, %s, %s, %s, 'image', 'image/png', 'dot.png', 'a caption', %s, %s, %s, %s, %s)",
        (
            media_id,
            session_id,
            event_id,
            wa_id,
            len(data),
            hashlib.sha256(data).hexdigest() if stored else None,
            data if stored else None,
            error_code,
            None if stored else "over the cap",
        ),
    )
    return media_id, event_id


@pytest.fixture
def session(sql):
    sql.execute("insert into wa_session (id, user_id) values ('s1', 1)")
    return "s1"


def test_media_model_and_get_media(sql, session):
    media_id, event_id = incoming_with_media(sql, session, "false_15557654321@c.us_A1")
    m = Media.objects.get(pk=media_id)
    assert (m.kind, m.mime, m.size, m.stored) == ("image", "image/png", len(PNG), True)
    assert bytes(m.data) == PNG and m.event_id == event_id
    assert m.event.media == m and m.session.media.get() == m

    svc = WhatsAppService()
    got = svc.get_media(media_id)
    assert got["success"] is True and got["stored"] is True
    assert got["data"] == PNG and got["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert (got["kind"], got["mimetype"], got["filename"], got["caption"]) == (
        "image",
        "image/png",
        "dot.png",
        "a caption",
    )
    assert svc.get_media(str(media_id), with_data=False)["data"] is None
    by_key = svc.get_media(session_id="s1", wa_message_id="false_15557654321@c.us_A1")
    assert by_key["mediaId"] == media_id

    too_big, _ = incoming_with_media(
        sql, session, "false_15557654321@c.us_A2", data=b"x" * 10, error_code="media_too_large"
    )
    got = svc.get_media(too_big)
    assert (got["success"], got["stored"], got["data"], got["errorCode"]) == (
        False,
        False,
        None,
        "media_too_large",
    )
    with pytest.raises(MediaNotFoundError):
        svc.get_media(10**9)
    with pytest.raises(InvalidInputError):
        svc.get_media("nope")
    with pytest.raises(InvalidInputError):
        svc.get_media()


def test_the_table_refuses_bytes_without_their_hash(sql, session):
    import psycopg

    event_id = runner_side.event(sql, session, "message", {}, None, "false_1@c.us_X")
    with pytest.raises(psycopg.errors.CheckViolation, match="wa_media_stored_or_not"):
        sql.execute(
            "insert into wa_media (session_id, event_id, wa_message_id, kind, size, data)"
            " values ('s1', %s, 'false_1@c.us_X', 'image', 3, 'abc')",
            (event_id,),
        )


def test_admin_lists_media_and_downloads_only_with_the_view_permission(sql, session, client):
    media_id, _ = incoming_with_media(sql, session, "false_15557654321@c.us_B1")
    not_stored, _ = incoming_with_media(
        sql, session, "false_15557654321@c.us_B2", error_code="media_fetch_failed"
    )
    url = reverse("admin:wa_outbox_media_download", args=[media_id])

    staff = User.objects.create_user("staff", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 403, "staff without the view permission"
    assert client.get(reverse("admin:wa_outbox_media_changelist")).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="view_media"))
    staff = User.objects.get(pk=staff.pk)
    client.force_login(staff)
    page = client.get(reverse("admin:wa_outbox_media_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert hashlib.sha256(PNG).hexdigest()[:12] in text and "image/png" in text
    assert url in text, "a download link for the stored one"
    detail = client.get(reverse("admin:wa_outbox_media_change", args=[media_id]))
    assert detail.status_code == 200 and url in detail.content.decode()

    r = client.get(url)
    assert r.status_code == 200
    assert b"".join(r) == PNG
    assert r["Content-Type"] == "application/octet-stream"
    assert r["Content-Disposition"].startswith("attachment;") and "dot.png" in r["Content-Disposition"]
    assert r["X-Content-Type-Options"] == "nosniff"
    assert client.get(reverse("admin:wa_outbox_media_download", args=[not_stored])).status_code == 404
    # Read-only: no add, change or delete.
    assert client.get(reverse("admin:wa_outbox_media_add")).status_code == 403
    client.logout()
    assert client.get(url).status_code == 302, "anonymous: to the login page"


def test_message_received_signal_carries_the_media(sql, session):
    media_id, _ = incoming_with_media(sql, session, "false_15557654321@c.us_C1")
    runner_side.event(sql, session, "message", {"from": "15557654321@c.us", "body": "plain", "type": "text"}, None, "false_15557654321@c.us_C2")
    got = []

    def handle(sender, **kwargs):
        got.append(kwargs)

    signals.message_received.connect(handle, weak=False)
    try:
        EventListener(name="media-test").run_once()
    finally:
        signals.message_received.disconnect(handle)
    assert len(got) == 2
    assert got[0]["media"] == {
        "media_id": media_id,
        "type": "image",
        "mimetype": "image/png",
        "filename": "dot.png",
        "caption": "a caption",
    }
    assert got[1]["media"] is None and got[1]["body"] == "plain"


# ---- against a real runner ------------------------------------------------------------------

# The real runner and simulator of test_e2e.py, as fixtures of this module too.
stack = test_e2e.stack
user_client = test_e2e.user_client


@pytest.mark.e2e
def test_incoming_image_is_stored_and_reaches_django(stack, user_client):
    test_e2e.link(stack, user_client, "e2e_media")
    got, lock = [], threading.Lock()

    def handle(sender, **kwargs):
        with lock:
            got.append(kwargs)

    signals.message_received.connect(handle, weak=False)
    stop, ready = threading.Event(), threading.Event()
    listener = EventListener(name="e2e-media", poll_interval=0.5)
    thread = threading.Thread(target=listener.run, args=(stop, ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "listener did not start"
        data = secrets.token_bytes(200_000)
        r = stack.sim_call(
            "/_sim/incoming",
            {
                "to": test_e2e.PHONE,
                "from": "15557654321",
                "media": {
                    "kind": "document",
                    "data": base64.b64encode(data).decode(),
                    "mime": "application/pdf",
                    "filename": "invoice.pdf",
                    "caption": "your invoice",
                },
            },
        )
        try:
            signal = wait_until(
                lambda: [kw for kw in got if kw["wa_message_id"] == r["serialized"]],
                timeout=60,
                interval=0.25,
                what="message_received with media",
            )[0]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs()}") from None
        media = signal["media"]
        assert media["type"] == "document" and media["filename"] == "invoice.pdf", media
        assert media["caption"] == "your invoice" and media["mimetype"] == "application/pdf"

        m = WhatsAppService().get_media(media["media_id"])
        assert m["stored"] is True and m["data"] == data, {k: v for k, v in m.items() if k != "data"}
        assert m["sha256"] == hashlib.sha256(data).hexdigest() == r["media"]["sha256"]
        assert m["size"] == len(data) and m["sessionId"] == "e2e_media"
        assert Media.objects.filter(session_id="e2e_media").count() == 1

        admin = User.objects.create_superuser("boss", password="x")
        user_client.force_login(admin)
        dl = user_client.get(reverse("admin:wa_outbox_media_download", args=[m["mediaId"]]))
        assert dl.status_code == 200 and b"".join(dl) == data
    finally:
        stop.set()
        thread.join(20)
        signals.message_received.disconnect(handle)
