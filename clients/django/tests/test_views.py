"""The five seed endpoints (plus logout and message status) through Django's test client."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from wa_outbox.models import Command, Message, Session

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


def only_own_session(request, session_id):
    return session_id == f"user_{request.user.pk}_session"


def test_anonymous_requests_are_forbidden_by_default(client):
    r = post(client, "send-text", {"sessionId": "s1", "recipient": "15551234567", "message": "hi"})
    assert r.status_code == 403
    assert r.json() == {"success": False, "error": "forbidden", "code": "forbidden"}
    assert not Message.objects.exists()


@override_settings(WA_OUTBOX_PERMISSION="wa_outbox.permissions.allow_any")
def test_permission_setting_is_honoured(client):
    r = client.get(reverse("wa_outbox:session-status", args=["nobody"]))
    assert r.status_code == 404
    assert r.json()["code"] == "session_not_found"


@override_settings(
    WA_OUTBOX_PERMISSION=lambda request: request.headers.get("X-Internal") == "k",
    WA_OUTBOX_SESSION_PERMISSION=None,
)
def test_permission_setting_accepts_a_callable(client):
    url = reverse("wa_outbox:session-status", args=["nobody"])
    assert client.get(url).status_code == 403
    assert client.get(url, headers={"X-Internal": "k"}).status_code == 404


@override_settings(WA_OUTBOX_PERMISSION="wa_outbox.permissions.nope")
def test_bad_permission_setting_is_reported(client):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="WA_OUTBOX_PERMISSION"):
        client.get(reverse("wa_outbox:session-status", args=["s1"]))


@override_settings(WA_OUTBOX_SESSION_PERMISSION="tests.test_views.only_own_session")
def test_session_permission_setting(user_client):
    mine = f"user_{user_client.user.pk}_session"
    Session.objects.create(id=mine)
    Session.objects.create(id="someone_else", user_id=user_client.user.pk)
    assert user_client.get(reverse("wa_outbox:session-status", args=[mine])).status_code == 200
    # Refused like an unknown session, even though user_id is the caller's: the host's
    # predicate has the last word.
    r = user_client.get(reverse("wa_outbox:session-status", args=["someone_else"]))
    assert r.status_code == 404 and r.json()["code"] == "session_not_found"
    r = post(
        user_client,
        "send-text",
        {"sessionId": "someone_else", "recipient": "15551234567", "message": "x"},
    )
    assert r.status_code == 404


def test_session_init_returns_the_qr(user_client, database_url):
    session_id = f"user_{user_client.user.pk}_session"
    runner = runner_side.show_qr(database_url, session_id)
    runner.start()
    r = post(user_client, "session-init", {"sessionId": session_id})
    runner.join_ok()
    assert r.status_code == 200
    assert r.json() == {"success": True, "qrCode": runner_side.QR_IMAGE, "status": "qr_pending"}
    # userId defaults to the logged-in user.
    assert Session.objects.get(pk=session_id).user_id == user_client.user.pk


@override_settings(WA_OUTBOX_QR_TIMEOUT=0.3)
def test_session_init_timeout_is_504(user_client):
    r = post(user_client, "session-init", {"sessionId": "s1", "userId": user_client.user.pk})
    assert r.status_code == 504
    assert r.json()["code"] == "qr_timeout"


def test_session_init_failed_is_502(user_client, database_url):
    runner = runner_side.set_session(
        database_url, "s1", status="failed", error_code="page_load_failed"
    )
    runner.start()
    r = post(user_client, "session-init", {"sessionId": "s1"})
    runner.join_ok()
    assert r.status_code == 502
    assert r.json()["code"] == "session_failed" and r.json()["errorCode"] == "page_load_failed"


@pytest.mark.parametrize(
    "name,body,field",
    [
        ("session-init", {}, "sessionId"),
        ("session-init", {"sessionId": "bad id"}, "session_id"),
        ("session-disconnect", {}, "sessionId"),
        ("send-text", {"sessionId": "s1", "recipient": "15551234567"}, "message"),
        ("send-text", {"sessionId": "s1", "recipient": "nope", "message": "x"}, "recipient"),
        ("send-media", {"sessionId": "s1", "recipient": "15551234567"}, "media_url"),
        (
            "send-media",
            {
                "sessionId": "s1",
                "recipient": "15551234567",
                "mediaUrl": "https://a/b.png",
                "mediaType": "gif",
            },
            "media_type",
        ),
    ],
)
def test_bad_input_is_400_naming_the_field(user_client, name, body, field):
    Session.objects.create(id="s1", user_id=user_client.user.pk)
    r = post(user_client, name, body)
    assert r.status_code == 400
    assert r.json()["success"] is False
    assert r.json()["field"] == field
    assert r.json()["code"] == "invalid_input"


def test_malformed_json_and_wrong_method(user_client):
    r = user_client.post(
        reverse("wa_outbox:send-text"), "{not json", content_type="application/json"
    )
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = user_client.post(reverse("wa_outbox:send-text"), "[1]", content_type="application/json")
    assert r.status_code == 400 and r.json()["field"] == "body"
    assert user_client.get(reverse("wa_outbox:send-text")).status_code == 405


def test_status_disconnect_logout(user_client, sql):
    sql.execute(
        "insert into wa_session (id, user_id, status, phone_number) "
        "values ('s1', %s, 'connected', '+15550001')",
        (user_client.user.pk,),
    )
    r = user_client.get(reverse("wa_outbox:session-status", args=["s1"]))
    body = r.json()
    assert {k: body[k] for k in ("success", "status", "phoneNumber", "isReady")} == {
        "success": True,
        "status": "connected",
        "phoneNumber": "+15550001",
        "isReady": True,
    }
    r = post(user_client, "session-disconnect", {"sessionId": "s1"})
    assert r.json() == {"success": True, "message": "Session disconnected"}
    assert Session.objects.get(pk="s1").desired_state == "stopped"
    r = post(user_client, "session-logout", {"sessionId": "s1"})
    assert r.json() == {"success": True, "message": "Session logged out"}
    assert post(user_client, "session-disconnect", {"sessionId": "nobody"}).status_code == 404


def test_send_text(user_client, database_url):
    Session.objects.create(id="s1", user_id=user_client.user.pk)
    runner = runner_side.finish_message(database_url, "s1", "sent")
    runner.start()
    r = post(
        user_client,
        "send-text",
        {"sessionId": "s1", "recipient": "1234567890@c.us", "message": "Hello World"},
    )
    runner.join_ok()
    assert r.status_code == 200
    body = r.json()
    assert body == {"success": True, "messageId": body["messageId"], "status": "sent"}
    r = user_client.get(reverse("wa_outbox:message-status", args=[body["messageId"]]))
    assert r.json()["status"] == "sent" and r.json()["ack"] == 1


@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_send_media_json_and_multipart(user_client):
    Session.objects.create(id="s1", user_id=user_client.user.pk)
    r = post(
        user_client,
        "send-media",
        {
            "sessionId": "s1",
            "recipient": "1234567890@c.us",
            "mediaUrl": "http://django-server/media/file.jpg",
            "caption": "Check this out",
            "mediaType": "image",
        },
    )
    assert r.status_code == 200, r.content
    row = Message.objects.get(pk=r.json()["messageId"])
    assert (row.kind, row.media_url, row.body) == (
        "image",
        "http://django-server/media/file.jpg",
        "Check this out",
    )

    upload = SimpleUploadedFile("report.pdf", b"%PDF-1.4 body", content_type="application/pdf")
    r = user_client.post(
        reverse("wa_outbox:send-media"),
        {"sessionId": "s1", "recipient": "15551234567", "caption": "the report", "file": upload},
    )
    assert r.status_code == 200, r.content
    row = Message.objects.get(pk=r.json()["messageId"])
    assert (row.kind, row.media_mime, row.media_filename, bytes(row.media_data), row.body) == (
        "document",
        "application/pdf",
        "report.pdf",
        b"%PDF-1.4 body",
        "the report",
    )


def test_send_to_unknown_session_is_404(user_client):
    r = post(
        user_client,
        "send-text",
        {"sessionId": "nobody", "recipient": "15551234567", "message": "x"},
    )
    assert r.status_code == 404
    assert r.json()["code"] == "session_not_found"


@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_admin_pages_render(admin_client, sql):
    sql.execute(
        "insert into wa_session (id, status, qr_code, qr_image) values "
        "('s1', 'qr_pending', 'SECRET-QR-PAYLOAD', 'data:image/png;base64,AAAA')"
    )
    m = Message.objects.create(session_id="s1", recipient="15551234567", body="hi")
    sql.execute(
        "insert into wa_event (session_id, kind, message_id, payload) values ('s1', 'ack', %s, '{}')",
        (m.id,),
    )
    for url in (
        "/admin/wa_outbox/session/",
        "/admin/wa_outbox/session/s1/change/",
        "/admin/wa_outbox/message/",
        f"/admin/wa_outbox/message/{m.id}/change/",
        "/admin/wa_outbox/event/",
        "/admin/wa_outbox/session/add/",
        "/admin/wa_outbox/message/add/",
    ):
        r = admin_client.get(url)
        assert r.status_code == 200, url
        assert b"SECRET-QR-PAYLOAD" not in r.content
    assert admin_client.get("/admin/wa_outbox/event/add/").status_code == 403


def test_admin_change_writes_only_caller_fields(admin_client, sql):
    sql.execute("insert into wa_session (id) values ('s1')")
    # The runner connects the session after the admin page was loaded.
    sql.execute(
        "update wa_session set status = 'connected', phone_number = '+15550001' where id = 's1'"
    )
    r = admin_client.post(
        "/admin/wa_outbox/session/s1/change/",
        {"user_id": "9", "desired_state": "stopped", "pair_phone": ""},
    )
    assert r.status_code == 302, r.content[:2000]
    row = Session.objects.get(pk="s1")
    assert (row.user_id, row.desired_state, row.status, row.phone_number) == (
        9,
        "stopped",
        "connected",
        "+15550001",
    )


def test_admin_add_session_and_message_use_database_defaults(admin_client):
    r = admin_client.post(
        "/admin/wa_outbox/session/add/",
        {"id": "from_admin", "user_id": "", "desired_state": "", "pair_phone": ""},
    )
    assert r.status_code == 302, r.content[:3000]
    s = Session.objects.get(pk="from_admin")
    assert (s.desired_state, s.status) == ("running", "new")
    r = admin_client.post(
        "/admin/wa_outbox/message/add/",
        {
            "session": "from_admin",
            "recipient": "15551234567",
            "kind": "",
            "body": "from the admin",
            "options": "",
            "priority": "",
            "max_attempts": "",
            "not_before_0": "",
            "not_before_1": "",
        },
    )
    assert r.status_code == 302, r.content[:3000]
    m = Message.objects.get(body="from the admin")
    assert (m.kind, m.status, m.priority, m.max_attempts, m.options) == ("text", "queued", 0, 5, {})


def test_admin_adds_commands_shows_them_read_only_and_cancels_queued_ones(admin_client):
    Session.objects.create(id="cmd_admin")
    assert admin_client.get("/admin/wa_outbox/command/add/").status_code == 200
    r = admin_client.post(
        "/admin/wa_outbox/command/add/",
        {
            "session": "cmd_admin",
            "kind": "check_numbers",
            "args": '{"numbers": ["+1 555 123 4567"]}',
            "idempotency_key": "",
            "not_before_0": "",
            "not_before_1": "",
        },
    )
    assert r.status_code == 302, r.content[:3000]
    c = Command.objects.get(session_id="cmd_admin")
    assert (c.kind, c.status, c.args, c.attempts) == (
        "check_numbers",
        "queued",
        {"numbers": ["+1 555 123 4567"]},
        0,
    )
    for url in ("/admin/wa_outbox/command/", f"/admin/wa_outbox/command/{c.id}/change/"):
        assert admin_client.get(url).status_code == 200, url
    r = admin_client.post(
        "/admin/wa_outbox/command/",
        {"action": "cancel_queued", "_selected_action": [str(c.id)]},
    )
    assert r.status_code == 302, r.content[:3000]
    c.refresh_from_db()
    assert c.status == "cancelled"


@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_message_kind_endpoints_write_the_rows_the_runner_reads(user_client):
    """Each kind's endpoint writes the row the table contract describes (kind, body, options);
    the runner's side of each is tested against a real runner in test_e2e.py."""
    Session.objects.create(id="s1", user_id=user_client.user.pk)
    base = {"sessionId": "s1", "recipient": "15551234567"}
    card = "BEGIN:VCARD\nVERSION:3.0\nFN:Ann Lee\nTEL;waid=15550001:+15550001\nEND:VCARD"
    cases = [
        (
            "send-location",
            {"latitude": 52.52, "longitude": 13.405, "name": "Fernsehturm"},
            ("location", None, {"latitude": 52.52, "longitude": 13.405, "name": "Fernsehturm"}),
        ),
        ("send-contact", {"vcards": card}, ("contact", None, {"vcards": [card]})),
        (
            "send-poll",
            {"question": "Lunch?", "choices": ["Pizza", "Sushi"], "selectableCount": 0},
            (
                "poll",
                None,
                {"question": "Lunch?", "choices": ["Pizza", "Sushi"], "selectable_count": 0},
            ),
        ),
        ("react", {"messageId": 7, "emoji": "👍"}, ("reaction", "👍", {"target_id": 7})),
        (
            "react",
            {"waMessageId": "false_15551234567@c.us_3EB0AA", "emoji": ""},
            ("reaction", "", {"target_wa_id": "false_15551234567@c.us_3EB0AA"}),
        ),
        ("edit-message", {"messageId": 7, "message": "fixed"}, ("edit", "fixed", {"target_id": 7})),
        (
            "delete-message",
            {"waMessageId": "true_15551234567@c.us_3EB0BB"},
            ("revoke", None, {"target_wa_id": "true_15551234567@c.us_3EB0BB"}),
        ),
        ("forward-message", {"messageId": 7}, ("forward", None, {"target_id": 7})),
    ]
    for name, extra, (kind, body, options) in cases:
        r = post(user_client, name, {**base, **extra})
        assert r.status_code == 200, (name, r.content)
        answer = r.json()
        assert answer["success"] is True and answer["status"] == "queued", (name, answer)
        row = Message.objects.get(pk=answer["messageId"])
        assert (row.session_id, row.recipient, row.kind) == ("s1", "15551234567", kind), name
        assert (row.body or None, row.options) == (body or None, options), name
        if body == "":
            assert row.body == "", "an empty reaction (removal) keeps its empty body"


@pytest.mark.parametrize(
    "name,extra,field",
    [
        ("send-location", {"latitude": 91, "longitude": 0}, "latitude"),
        ("send-location", {"latitude": 1}, "longitude"),
        ("send-contact", {"vcards": "FN:Ann"}, "vcards"),
        ("send-poll", {"question": "Q", "choices": ["only one"]}, "choices"),
        ("send-poll", {"question": "Q", "choices": ["a", "b"], "selectableCount": 3}, "selectable_count"),
        ("react", {"messageId": 7}, "emoji"),
        ("react", {"emoji": "👍"}, "messageId"),
        ("react", {"messageId": 7, "waMessageId": "false_1@c.us_A", "emoji": "👍"}, "messageId"),
        ("react", {"messageId": "7", "emoji": "👍"}, "messageId"),
        ("edit-message", {"messageId": 7}, "message"),
        ("edit-message", {"waMessageId": "false_1@c.us_A", "message": "x"}, "message"),
        ("delete-message", {"waMessageId": 7}, "waMessageId"),
        ("forward-message", {"messageId": True}, "messageId"),
    ],
)
def test_message_kind_endpoints_refuse_bad_input_naming_the_field(user_client, name, extra, field):
    Session.objects.create(id="s1", user_id=user_client.user.pk)
    r = post(user_client, name, {"sessionId": "s1", "recipient": "15551234567", **extra})
    assert r.status_code == 400, (name, r.content)
    assert (r.json()["code"], r.json()["field"]) == ("invalid_input", field), r.json()
    assert not Message.objects.exists()


@override_settings(WA_OUTBOX_SESSION_PERMISSION="tests.test_views.only_own_session")
def test_message_kind_endpoints_answer_another_users_session_like_an_unknown_one(user_client):
    Session.objects.create(id="user_999_session", user_id=999)
    for name, extra in [
        ("send-location", {"latitude": 1, "longitude": 2}),
        ("react", {"messageId": 7, "emoji": "👍"}),
        ("forward-message", {"messageId": 7}),
    ]:
        r = post(
            user_client, name, {"sessionId": "user_999_session", "recipient": "15551234567", **extra}
        )
        assert (r.status_code, r.json()["code"]) == (404, "session_not_found"), (name, r.json())
    assert not Message.objects.exists()


@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_send_sticker_by_url_and_by_upload(user_client):
    Session.objects.create(id="s1", user_id=user_client.user.pk)
    r = post(
        user_client,
        "send-sticker",
        {"sessionId": "s1", "recipient": "15551234567", "mediaUrl": "https://cdn.example.com/s.webp"},
    )
    assert r.status_code == 200, r.content
    row = Message.objects.get(pk=r.json()["messageId"])
    assert (row.kind, row.media_url, row.body) == ("sticker", "https://cdn.example.com/s.webp", None)
    upload = SimpleUploadedFile("s.gif", b"GIF89a....", content_type="image/gif")
    r = user_client.post(
        reverse("wa_outbox:send-sticker"),
        {"sessionId": "s1", "recipient": "15551234567", "file": upload},
    )
    assert r.status_code == 200, r.content
    row = Message.objects.get(pk=r.json()["messageId"])
    assert (row.kind, row.media_mime, bytes(row.media_data)) == ("sticker", "image/gif", b"GIF89a....")
    r = post(user_client, "send-sticker", {"sessionId": "s1", "recipient": "15551234567"})
    assert (r.status_code, r.json()["field"]) == (400, "media_url")
