"""WhatsAppService: bad input, the seed's response shapes, and waiting on the runner's writes."""

from __future__ import annotations

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import override_settings

from wa_outbox.exceptions import (
    InTransactionError,
    InvalidInputError,
    QRTimeoutError,
    SessionConflictError,
    SessionFailedError,
    SessionLoggedOutError,
    SessionNotFoundError,
    SessionTimeoutError,
    WhatsAppServiceError,
)
from wa_outbox.models import Message, Session
from wa_outbox.services import WhatsAppService

from . import runner_side

svc = WhatsAppService()


# ---- bad input: no database needed, each error names its field ----------------------------


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: svc.init_session(1, "has space"), "session_id"),
        (lambda: svc.init_session(1, ""), "session_id"),
        (lambda: svc.init_session(1, "x" * 65), "session_id"),
        (lambda: svc.init_session(1, None), "session_id"),
        (lambda: svc.init_session("abc", "s1"), "user_id"),
        (lambda: svc.init_session(True, "s1"), "user_id"),
        (lambda: svc.init_session(1, "s1", pair_phone="12-34"), "pair_phone"),
        (lambda: svc.get_session_status("../etc"), "session_id"),
        (lambda: svc.disconnect("a b"), "session_id"),
        (lambda: svc.send_text_message("s1", "", "hi"), "recipient"),
        (lambda: svc.send_text_message("s1", "hello", "hi"), "recipient"),
        (lambda: svc.send_text_message("s1", "123", "hi"), "recipient"),
        (lambda: svc.send_text_message("s1", "1555@x.us", "hi"), "recipient"),
        (lambda: svc.send_text_message("s1", 15551234567, "hi"), "recipient"),
        (lambda: svc.send_text_message("s1", "15551234567", ""), "message"),
        (lambda: svc.send_text_message("s1", "15551234567", "   "), "message"),
        (lambda: svc.send_text_message("s1", "15551234567", None), "message"),
        (lambda: svc.send_text_message("s1", "15551234567", "x" * 65_537), "message"),
        (
            lambda: svc.send_text_message("s1", "15551234567", "hi", idempotency_key=""),
            "idempotency_key",
        ),
        (lambda: svc.send_media_message("s1", "15551234567"), "media_url"),
        (lambda: svc.send_location("s1", "15551234567", 90.5, 0), "latitude"),
        (lambda: svc.send_location("s1", "15551234567", "52.5", 13.4), "latitude"),
        (lambda: svc.send_location("s1", "15551234567", True, 13.4), "latitude"),
        (lambda: svc.send_location("s1", "15551234567", float("nan"), 13.4), "latitude"),
        (lambda: svc.send_location("s1", "15551234567", 52.5, -181), "longitude"),
        (lambda: svc.send_location("s1", "15551234567", 52.5, None), "longitude"),
        (lambda: svc.send_location("s1", "15551234567", 52.5, 13.4, name=5), "name"),
        (lambda: svc.send_location("s1", "15551234567", 52.5, 13.4, address=[]), "address"),
        (lambda: svc.send_location("s1", "hello", 52.5, 13.4), "recipient"),
        (lambda: svc.edit_message("s1", "15551234567", 1, " "), "text"),
        (lambda: svc.edit_message("s1", "15551234567", "false_x@c.us_AB", "hi"), "message"),
        (lambda: svc.edit_message("s1", "15551234567", None, "hi"), "message"),
        (lambda: svc.delete_message("s1", "15551234567", "false_x@c.us_AB"), "message"),
        (lambda: svc.delete_message("s1", "15551234567", 1.5), "message"),
        (lambda: svc.forward_message("s1", "15551234567", None), "message"),
        (lambda: svc.forward_message("s1", "15551234567", True), "message"),
        (lambda: svc.forward_message("s1", "15551234567", "3EB0AB"), "message"),
        (lambda: svc.forward_message("s1", "hello", 1), "recipient"),
        (lambda: svc.react("s1", "15551234567", "3EB0AB", "👍"), "message"),
        (lambda: svc.react("s1", "15551234567", 1, "ok"), "emoji"),
        (lambda: svc.react("s1", "15551234567", 1, None), "emoji"),
        (lambda: svc.react("s1", "15551234567", True, "👍"), "message"),
        (lambda: svc.react("s1", "15551234567", "", "👍"), "message"),
        (lambda: svc.send_contact("s1", "15551234567", []), "vcards"),
        (lambda: svc.send_contact("s1", "15551234567", "FN:Ann"), "vcards"),
        (lambda: svc.send_contact("s1", "15551234567", [VCARD, 5]), "vcards"),
        (lambda: svc.send_contact("s1", "15551234567", "BEGIN:VCARD\nEND:VCARD"), "vcards"),
        (lambda: svc.send_poll("s1", "15551234567", " ", ["a", "b"]), "question"),
        (lambda: svc.send_poll("s1", "15551234567", "Q", ["a"]), "choices"),
        (lambda: svc.send_poll("s1", "15551234567", "Q", "ab"), "choices"),
        (lambda: svc.send_poll("s1", "15551234567", "Q", ["a", " a "]), "choices"),
        (lambda: svc.send_poll("s1", "15551234567", "Q", ["a", 2]), "choices"),
        (lambda: svc.send_poll("s1", "15551234567", "Q", ["a", "b"], 3), "selectable_count"),
        (lambda: svc.send_poll("s1", "15551234567", "Q", ["a", "b"], True), "selectable_count"),
        (lambda: svc.send_text_message("s1", "15551234567", "hi", mentions="1555"), "mentions"),
        (lambda: svc.send_text_message("s1", "15551234567", "hi", mentions=["x"]), "mentions"),
        (
            lambda: svc.send_text_message(
                "s1", "15551234567", "hi", mentions=["120363000000000001@g.us"]
            ),
            "mentions",
        ),
        (
            lambda: svc.send_media_message(
                "s1", "15551234567", "https://a/x.ogg", media_type="voice", mentions=["15551234567"]
            ),
            "mentions",
        ),
        (
            lambda: svc.send_media_message("s1", "15551234567", "https://a/x.png", file=b"x"),
            "media_url",
        ),
        (lambda: svc.send_media_message("s1", "15551234567", "ftp://a/x.png"), "media_url"),
        (lambda: svc.send_media_message("s1", "15551234567", "/media/x.png"), "media_url"),
        (
            lambda: svc.send_media_message(
                "s1", "15551234567", "https://a/x.png", media_type="gif"
            ),
            "media_type",
        ),
        (
            lambda: svc.send_media_message("s1", "15551234567", "https://a/x.png", caption=5),
            "caption",
        ),
        (lambda: svc.send_media_message("s1", "15551234567", file=b""), "file"),
        (lambda: svc.send_media_message("s1", "15551234567", file="not bytes"), "file"),
        (
            lambda: svc.send_media_message("s1", "15551234567", file=b"x", mimetype="png"),
            "mimetype",
        ),
    ],
)
def test_bad_input_names_the_field(call, field):
    with pytest.raises(InvalidInputError) as info:
        call()
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, WhatsAppServiceError)


@override_settings(WA_OUTBOX_MEDIA_MAX_BYTES=10)
def test_media_file_over_the_cap_is_refused():
    with pytest.raises(InvalidInputError, match="WA_OUTBOX_MEDIA_MAX_BYTES") as info:
        svc.send_media_message("s1", "15551234567", file=b"x" * 11)
    assert info.value.field == "file"


def test_text_mode_file_is_refused(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("hello")
    with p.open("r") as f, pytest.raises(InvalidInputError, match="binary") as info:
        svc.send_media_message("s1", "15551234567", file=f)
    assert info.value.field == "file"


# ---- sessions -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_init_session_returns_the_qr_the_runner_writes(database_url):
    """Contract: the runner sets qr_image/status and inserts a session_status event."""
    runner = runner_side.show_qr(database_url, "user_7_session")
    runner.start()
    result = svc.init_session(7, "user_7_session")
    runner.join_ok()
    assert result == {"success": True, "qrCode": runner_side.QR_IMAGE, "status": "qr_pending"}
    row = Session.objects.get(pk="user_7_session")
    assert (row.user_id, row.desired_state) == (7, "running")


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_POLL_INTERVAL=60, WA_OUTBOX_QR_TIMEOUT=50)
def test_init_session_is_woken_by_notify_not_by_polling(database_url):
    runner = runner_side.show_qr(database_url, "s1")
    runner.start()
    started = time.monotonic()
    result = svc.init_session(None, "s1")
    runner.join_ok()
    assert result["status"] == "qr_pending"
    # The only re-check before 50 s is the one a NOTIFY on wa_event triggers.
    assert time.monotonic() - started < 20


@pytest.mark.django_db(transaction=True)
def test_init_session_times_out_without_a_runner():
    with override_settings(WA_OUTBOX_QR_TIMEOUT=0.5):
        with pytest.raises(QRTimeoutError) as info:
            svc.init_session(1, "lonely")
    assert info.value.status == "new"
    assert "no QR code after 0.5s" in str(info.value)
    # The request stays: a runner that starts later picks the session up.
    assert Session.objects.get(pk="lonely").desired_state == "running"


@pytest.mark.django_db(transaction=True)
def test_init_session_explicit_timeout_argument():
    started = time.monotonic()
    with pytest.raises(QRTimeoutError):
        svc.init_session(1, "lonely", timeout=0.3)
    assert time.monotonic() - started < 10


@pytest.mark.django_db(transaction=True)
def test_init_session_of_a_linked_session_needs_no_qr(database_url):
    runner = runner_side.set_session(
        database_url, "s1", status="connected", phone_number="+15551230000"
    )
    runner.start()
    result = svc.init_session(1, "s1")
    runner.join_ok()
    assert result == {
        "success": True,
        "qrCode": None,
        "status": "connected",
        "phoneNumber": "+15551230000",
    }


@pytest.mark.django_db(transaction=True)
def test_init_session_raises_when_the_session_fails(database_url):
    runner = runner_side.set_session(
        database_url, "s1", status="failed", error_code="browser_start_failed", error="no chromium"
    )
    runner.start()
    with pytest.raises(SessionFailedError) as info:
        svc.init_session(1, "s1")
    runner.join_ok()
    assert info.value.error_code == "browser_start_failed"
    assert "no chromium" in str(info.value)


@pytest.mark.django_db(transaction=True)
def test_init_session_restarts_a_failed_session(sql, database_url):
    sql.execute(
        "insert into wa_session (id, user_id, status, error_code, qr_image, qr_expires_at) "
        "values ('s1', 1, 'failed', 'qr_timeout', 'data:image/png;base64,OLD', now() + interval '1 hour')"
    )
    runner = runner_side.show_qr(database_url, "s1")
    runner.start()
    result = svc.init_session(1, "s1")
    runner.join_ok()
    # Not the stale picture left from the failed run.
    assert result["qrCode"] == runner_side.QR_IMAGE


@pytest.mark.django_db(transaction=True)
def test_init_session_refuses_another_users_session(sql):
    sql.execute("insert into wa_session (id, user_id) values ('user_1_session', 1)")
    with pytest.raises(SessionConflictError):
        svc.init_session(2, "user_1_session", timeout=0.1)


@pytest.mark.django_db(transaction=True)
def test_init_session_pairing_code(database_url):
    runner = runner_side.set_session(database_url, "s1", status="pairing", pairing_code="ABCD1234")
    runner.start()
    result = svc.init_session(1, "s1", pair_phone="+15551234567")
    runner.join_ok()
    assert result == {
        "success": True,
        "qrCode": None,
        "pairingCode": "ABCD1234",
        "status": "pairing",
    }
    assert Session.objects.get(pk="s1").pair_phone == "+15551234567"


@pytest.mark.django_db
def test_init_session_inside_a_transaction_is_refused():
    with pytest.raises(InTransactionError, match="non_atomic_requests"):
        svc.init_session(1, "s1")


@pytest.mark.django_db(transaction=True)
def test_get_session_status_shape(sql):
    with pytest.raises(SessionNotFoundError):
        svc.get_session_status("nobody")
    sql.execute(
        "insert into wa_session (id, status, qr_image, qr_expires_at) "
        "values ('s1', 'qr_pending', 'data:image/png;base64,AAA', now() + interval '1 minute')"
    )
    status = svc.get_session_status("s1")
    assert {k: status[k] for k in ("success", "status", "phoneNumber", "isReady")} == {
        "success": True,
        "status": "qr_pending",
        "phoneNumber": None,
        "isReady": False,
    }
    assert status["qrCode"] == "data:image/png;base64,AAA"
    # Past its estimated expiry the QR is still the one on the page until the runner rotates it.
    sql.execute("update wa_session set qr_expires_at = now() - interval '1 second' where id = 's1'")
    assert svc.get_session_status("s1")["qrCode"] == "data:image/png;base64,AAA"
    sql.execute(
        "update wa_session set status = 'connected', phone_number = '+15550001' where id = 's1'"
    )
    status = svc.get_session_status("s1")
    assert (status["status"], status["phoneNumber"], status["isReady"]) == (
        "connected",
        "+15550001",
        True,
    )


@pytest.mark.django_db(transaction=True)
def test_wait_until_ready(database_url):
    Session.objects.create(id="s1")
    runner = runner_side.set_session(
        database_url, "s1", status="connected", phone_number="+15550001"
    )
    runner.start()
    status = svc.wait_until_ready("s1", timeout=20)
    runner.join_ok()
    assert status["isReady"] is True
    Session.objects.create(id="s2")
    with pytest.raises(SessionTimeoutError):
        svc.wait_until_ready("s2", timeout=0.3)


@pytest.mark.django_db
def test_disconnect_and_logout_set_desired_state():
    Session.objects.create(id="s1")
    assert svc.disconnect("s1") == {"success": True, "message": "Session disconnected"}
    assert Session.objects.get(pk="s1").desired_state == "stopped"
    assert svc.logout("s1") == {"success": True, "message": "Session logged out"}
    assert Session.objects.get(pk="s1").desired_state == "logged_out"
    with pytest.raises(SessionNotFoundError):
        svc.disconnect("nobody")
    with pytest.raises(SessionNotFoundError):
        svc.logout("nobody")


# ---- messages -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_send_to_a_missing_session():
    with pytest.raises(SessionNotFoundError, match="init_session"):
        svc.send_text_message("nobody", "15551234567", "hi")


@pytest.mark.django_db
def test_send_to_a_logged_out_session():
    Session.objects.create(id="s1", desired_state="logged_out")
    with pytest.raises(SessionLoggedOutError):
        svc.send_text_message("s1", "15551234567", "hi")
    # Unlinked from the phone: still wanted running, but the runner reports logged_out.
    Session.objects.create(id="s2", status="logged_out")
    with pytest.raises(SessionLoggedOutError):
        svc.send_media_message("s2", "15551234567", "https://example.com/a.png")
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_send_text_waits_for_the_runner_to_send(database_url):
    Session.objects.create(id="s1")
    runner = runner_side.finish_message(database_url, "s1", "sent")
    runner.start()
    result = svc.send_text_message("s1", "+1 (555) 123-4567", "Hello World")
    runner.join_ok()
    assert result == {"success": True, "messageId": result["messageId"], "status": "sent"}
    row = Message.objects.get(pk=result["messageId"])
    assert (row.kind, row.body, row.recipient, row.status) == (
        "text",
        "Hello World",
        "+1 (555) 123-4567",
        "sent",
    )


@pytest.mark.django_db(transaction=True)
def test_send_text_reports_a_refused_message(database_url):
    Session.objects.create(id="s1")
    runner = runner_side.finish_message(
        database_url, "s1", "failed", error_code="not_on_whatsapp", error="no account"
    )
    runner.start()
    result = svc.send_text_message("s1", "15551234567@c.us", "hi")
    runner.join_ok()
    assert result["success"] is False
    assert (result["status"], result["errorCode"], result["error"]) == (
        "failed",
        "not_on_whatsapp",
        "no account",
    )


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_SEND_TIMEOUT=0.3)
def test_send_text_returns_queued_when_no_runner_answers():
    Session.objects.create(id="s1")
    result = svc.send_text_message("s1", "15551234567", "hi")
    assert result["success"] is True and result["status"] == "queued"
    assert Message.objects.get(pk=result["messageId"]).status == "queued"


@pytest.mark.django_db
@override_settings(WA_OUTBOX_SEND_TIMEOUT=30)
def test_send_inside_a_transaction_does_not_wait():
    Session.objects.create(id="s1")
    started = time.monotonic()
    with transaction.atomic():
        result = svc.send_text_message("s1", "15551234567", "hi")
    assert result["status"] == "queued"
    assert time.monotonic() - started < 10


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_SEND_TIMEOUT=30)
def test_send_to_a_stopped_session_queues_without_waiting():
    Session.objects.create(id="s1", desired_state="stopped")
    started = time.monotonic()
    result = svc.send_text_message("s1", "15551234567", "later")
    assert result["status"] == "queued"
    assert time.monotonic() - started < 10


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_idempotency_key_returns_the_same_message():
    Session.objects.create(id="s1")
    a = svc.send_text_message("s1", "15551234567", "once", idempotency_key="order-42")
    b = svc.send_text_message("s1", "15551234567", "once", idempotency_key="order-42")
    assert a["messageId"] == b["messageId"]
    assert Message.objects.count() == 1
    Session.objects.create(id="s2")
    with pytest.raises(InvalidInputError) as info:
        svc.send_text_message("s2", "15551234567", "once", idempotency_key="order-42")
    assert info.value.field == "idempotency_key"


@pytest.mark.django_db(transaction=True)
def test_send_location_stores_the_pin_in_options_and_waits_for_the_runner(database_url):
    Session.objects.create(id="s1")
    runner = runner_side.finish_message(database_url, "s1", "sent")
    runner.start()
    result = svc.send_location(
        "s1", "+1 (555) 123-4567", 52.520008, 13.404954, name="Fernsehturm", address=" "
    )
    runner.join_ok()
    assert result == {"success": True, "messageId": result["messageId"], "status": "sent"}
    row = Message.objects.get(pk=result["messageId"])
    assert (row.kind, row.body, row.options) == (
        "location",
        None,
        {"latitude": 52.520008, "longitude": 13.404954, "name": "Fernsehturm"},
    )


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_send_location_accepts_the_edges_and_integers():
    Session.objects.create(id="s1")
    result = svc.send_location("s1", "15551234567", -90, 180, address="Somewhere")
    row = Message.objects.get(pk=result["messageId"])
    assert row.options == {"latitude": -90.0, "longitude": 180.0, "address": "Somewhere"}
    assert result["status"] == "queued"


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_send_sticker_stores_an_image_row_and_refuses_what_is_not_an_image():
    Session.objects.create(id="s1")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    by_bytes = svc.send_sticker("s1", "15551234567", file=png, reply_to="false_1@c.us_X")
    row = Message.objects.get(pk=by_bytes["messageId"])
    assert (row.kind, bytes(row.media_data), row.media_mime, row.body, row.options) == (
        "sticker",
        png,
        "image/png",
        None,
        {"reply_to": "false_1@c.us_X"},
    )
    by_url = svc.send_sticker("s1", "15551234567", "https://cdn.example.com/s.webp")
    row = Message.objects.get(pk=by_url["messageId"])
    assert (row.kind, row.media_url, row.media_data, row.options) == (
        "sticker",
        "https://cdn.example.com/s.webp",
        None,
        {},
    )
    for kwargs, field in [
        ({}, "media_url"),
        ({"media_url": "https://cdn.example.com/s.webp", "file": png}, "media_url"),
        ({"file": b"just text"}, "file"),
        ({"file": png, "mimetype": "text/plain"}, "mimetype"),
        ({"media_url": "ftp://cdn.example.com/s.webp"}, "media_url"),
    ]:
        with pytest.raises(InvalidInputError) as info:
            svc.send_sticker("s1", "15551234567", **kwargs)
        assert info.value.field == field, kwargs
    assert Message.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_send_media_by_url_guesses_kind_and_mime():
    Session.objects.create(id="s1")
    result = svc.send_media_message(
        "s1",
        "15551234567@c.us",
        media_url="https://cdn.example.com/files/photo.jpg?x=1",
        caption="Check this out",
    )
    row = Message.objects.get(pk=result["messageId"])
    assert (row.kind, row.media_url, row.body, row.media_mime, row.media_filename) == (
        "image",
        "https://cdn.example.com/files/photo.jpg?x=1",
        "Check this out",
        "image/jpeg",
        "photo.jpg",
    )
    assert row.media_data is None


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_send_media_from_bytes_and_uploads(tmp_path):
    Session.objects.create(id="s1")
    pdf = b"%PDF-1.4 test"
    r1 = svc.send_media_message("s1", "15551234567", file=pdf, filename="invoice.pdf")
    row = Message.objects.get(pk=r1["messageId"])
    assert (row.kind, bytes(row.media_data), row.media_mime, row.media_filename) == (
        "document",
        pdf,
        "application/pdf",
        "invoice.pdf",
    )
    upload = SimpleUploadedFile("note.ogg", b"OggS....", content_type="audio/ogg")
    r2 = svc.send_media_message("s1", "15551234567", file=upload, media_type="voice")
    row = Message.objects.get(pk=r2["messageId"])
    assert (row.kind, row.media_mime, row.media_filename, bytes(row.media_data)) == (
        "voice",
        "audio/ogg",
        "note.ogg",
        b"OggS....",
    )
    p = tmp_path / "clip.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with p.open("rb") as f:
        r3 = svc.send_media_message("s1", "15551234567", file=f, caption="clip")
    row = Message.objects.get(pk=r3["messageId"])
    assert (row.kind, row.media_mime, row.body) == ("video", "video/mp4", "clip")


@pytest.mark.django_db(transaction=True)
def test_get_message_status_and_cancel(sql):
    Session.objects.create(id="s1", desired_state="stopped")
    r = svc.send_text_message("s1", "15551234567", "hi")
    status = svc.get_message_status(r["messageId"])
    assert (status["status"], status["ack"], status["waMessageId"]) == ("queued", None, None)
    assert svc.cancel_message(r["messageId"]) == {
        "success": True,
        "messageId": r["messageId"],
        "status": "cancelled",
    }
    r2 = svc.send_text_message("s1", "15551234567", "hi")
    sql.execute("update wa_message set status = 'sent' where id = %s", (r2["messageId"],))
    assert svc.cancel_message(r2["messageId"])["success"] is False


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_POLL_INTERVAL=60, WA_OUTBOX_SEND_TIMEOUT=50)
def test_concurrent_waits_share_one_listen_connection(sql, database_url):
    """Five requests waiting on sends cost the database one LISTEN connection, and each is
    woken by the NOTIFY of its own session (the 60 s poll interval rules polling out)."""
    import threading

    from django.db import connections

    sessions = [f"s{i}" for i in range(5)]
    for sid in sessions:
        Session.objects.create(id=sid)
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def send(sid):
        try:
            results[sid] = svc.send_text_message(sid, "15551234567", f"to {sid}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(sid,)) for sid in sessions]
    for t in threads:
        t.start()

    def queued():
        return sql.execute("select count(*) from wa_message where status = 'queued'").fetchone()[0]

    from .conftest import wait_until

    wait_until(lambda: queued() == 5, timeout=20, what="five queued messages")
    listeners = sql.execute(
        "select count(*) from pg_stat_activity where application_name = 'wa_outbox' "
        "and datname = current_database()"
    ).fetchone()[0]
    assert listeners == 1
    started = time.monotonic()
    for sid in sessions:
        runner = runner_side.finish_message(database_url, sid, "sent")
        runner.start()
        runner.join_ok()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert {sid: r["status"] for sid, r in results.items()} == {sid: "sent" for sid in sessions}
    assert time.monotonic() - started < 25


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_POLL_INTERVAL=60, WA_OUTBOX_SEND_TIMEOUT=50)
def test_a_waiting_send_survives_a_lost_listen_connection(sql, database_url):
    import threading

    from django.db import connections

    from .conftest import wait_until

    Session.objects.create(id="s1")
    result: dict = {}

    def send():
        try:
            result.update(svc.send_text_message("s1", "15551234567", "hi"))
        finally:
            connections.close_all()

    thread = threading.Thread(target=send)
    thread.start()

    def hub_pids():
        rows = sql.execute(
            "select pid from pg_stat_activity where application_name = 'wa_outbox' "
            "and datname = current_database()"
        ).fetchall()
        return {r[0] for r in rows}

    wait_until(
        lambda: sql.execute("select count(*) from wa_message where status = 'queued'").fetchone()[
            0
        ],
        timeout=20,
        what="queued message",
    )
    (old,) = wait_until(hub_pids, timeout=10, what="hub connection")
    sql.execute("select pg_terminate_backend(%s)", (old,))
    wait_until(lambda: hub_pids() - {old}, timeout=20, what="hub reconnect")
    started = time.monotonic()
    runner = runner_side.finish_message(database_url, "s1", "sent")
    runner.start()
    runner.join_ok()
    thread.join(40)
    assert result.get("status") == "sent"
    # Woken by the NOTIFY on the new connection, not by the 60 s poll.
    assert time.monotonic() - started < 25


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_QR_TIMEOUT=20)
def test_a_hibernated_session_is_ready_without_waking_it(sql):
    """The runner wakes a hibernated session only for a due message: init_session and
    wait_until_ready must not wait for `connected`."""
    sql.execute(
        "insert into wa_session (id, user_id, status, phone_number) "
        "values ('s1', 1, 'hibernated', '+15550001')"
    )
    started = time.monotonic()
    assert svc.init_session(1, "s1") == {
        "success": True,
        "qrCode": None,
        "status": "hibernated",
        "phoneNumber": "+15550001",
    }
    assert svc.wait_until_ready("s1", timeout=20)["isReady"] is True
    assert time.monotonic() - started < 10
    assert svc.get_session_status("s1")["isReady"] is True


VCARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ann Lee\r\nTEL;type=CELL;waid=15551234567:+1 555 123 4567\r\nEND:VCARD"


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_send_contact_poll_and_mentions_store_their_options():
    Session.objects.create(id="s1")
    one = svc.send_contact("s1", "15551234567", VCARD)
    two = svc.send_contact("s1", "15551234567", [VCARD, VCARD.replace("Ann Lee", "Bo")])
    poll = svc.send_poll("s1", "15551234567", " Lunch? ", [" Pizza", "Sushi"], 0)
    text = svc.send_text_message(
        "s1", "15551234567", "hi @15557654321", mentions=["+1 555 765 4321"]
    )
    rows = {r.pk: r for r in Message.objects.all()}
    assert (rows[one["messageId"]].kind, rows[one["messageId"]].options) == (
        "contact",
        {"vcards": [VCARD]},
    )
    assert len(rows[two["messageId"]].options["vcards"]) == 2
    assert (rows[poll["messageId"]].kind, rows[poll["messageId"]].body) == ("poll", None)
    assert rows[poll["messageId"]].options == {
        "question": "Lunch?",
        "choices": ["Pizza", "Sushi"],
        "selectable_count": 0,
    }
    assert rows[text["messageId"]].options == {"mentions": ["+1 555 765 4321"]}
    assert {one["status"], two["status"], poll["status"], text["status"]} == {"queued"}


@pytest.mark.django_db(transaction=True)
@override_settings(WA_OUTBOX_SEND_TIMEOUT=0)
def test_forward_message_stores_its_target_and_the_chat_it_goes_to():
    Session.objects.create(id="s1")
    by_row = svc.forward_message("s1", "+1 555 765 4321", 42)
    by_id = svc.forward_message("s1", "15557654321", "false_15551234567@c.us_3EB0AB")
    rows = {r.pk: r for r in Message.objects.all()}
    a, b = rows[by_row["messageId"]], rows[by_id["messageId"]]
    assert (a.kind, a.body, a.options) == ("forward", None, {"target_id": 42})
    assert (b.kind, b.body, b.options) == (
        "forward",
        None,
        {"target_wa_id": "false_15551234567@c.us_3EB0AB"},
    )
    assert a.recipient == "+1 555 765 4321" and b.recipient == "15557654321"
    assert {by_row["status"], by_id["status"]} == {"queued"}
