"""The "link your WhatsApp" page through Django's test client; the runner played with SQL.
(test_link_browser.py runs it in Chromium against a real runner.)"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from wa_outbox.linking import user_session
from wa_outbox.models import Session

pytestmark = pytest.mark.django_db(transaction=True)

QR1 = "data:image/png;base64,UVIx"
QR2 = "data:image/png;base64,UVIy"


@pytest.fixture
def ann(sql):
    user = User.objects.create_user("ann", password="x")
    c = Client()
    c.force_login(user)
    c.user = user
    return c


def state(client) -> dict:
    r = client.get(reverse("wa_outbox_link:link-state"), headers={"Accept": "application/json"})
    assert r.status_code == 200
    assert r["Cache-Control"].startswith("max-age=0")
    return r.json()


def start(client, **data):
    r = client.post(reverse("wa_outbox_link:link-start"), data)
    assert r.status_code == 303 and r["Location"] == reverse("wa_outbox_link:link")


def test_anonymous_is_sent_to_login(client):
    r = client.get(reverse("wa_outbox_link:link"))
    assert r.status_code == 302 and "/accounts/login/" in r["Location"]
    assert (
        client.get(
            reverse("wa_outbox_link:link-state"), headers={"Accept": "application/json"}
        ).status_code
        == 403
    )
    assert client.post(reverse("wa_outbox_link:link-start")).status_code == 403
    assert not Session.objects.exists()


def test_qr_then_connected_then_disconnect_and_unlink(ann, sql):
    page = ann.get(reverse("wa_outbox_link:link")).content.decode()
    assert 'data-state="unlinked"' in page and "Show a QR code" in page
    assert '<label for="wa-link-pair-phone">' in page
    assert reverse("wa_outbox_link:link-script") in page

    start(ann)
    session = user_session(ann.user.pk)
    assert session.id.startswith(f"user_{ann.user.pk}_") and session.pair_phone is None
    assert state(ann)["state"] == "starting"

    sql.execute(
        "update wa_session set status = 'qr_pending', qr_code = 'RAW-QR-PAYLOAD', qr_image = %s where id = %s",
        (QR1, session.id),
    )
    first = state(ann)
    assert first["state"] == "qr" and QR1 in first["html"] and 'alt="QR code' in first["html"]
    assert "RAW-QR-PAYLOAD" not in first["html"]
    sql.execute("update wa_session set qr_image = %s where id = %s", (QR2, session.id))
    second = state(ann)
    assert second["state"] == "qr" and QR2 in second["html"] and second["key"] != first["key"]
    assert state(ann)["key"] == second["key"]  # unchanged while nothing changes

    sql.execute(
        "update wa_session set status = 'connected', qr_image = null, qr_code = null, "
        "phone_number = '+15550001111', push_name = 'Ann <Phone>' where id = %s",
        (session.id,),
    )
    now = state(ann)
    assert now["state"] == "connected" and "+15550001111" in now["html"]
    assert "Ann &lt;Phone&gt;" in now["html"] and now["pollMs"] > first["pollMs"]
    assert "Disconnect" in now["html"] and "Unlink this device" in now["html"]

    ann.post(reverse("wa_outbox_link:link-disconnect"))
    assert Session.objects.get(pk=session.id).desired_state == "stopped"
    assert state(ann)["state"] == "stopped"
    start(ann)  # reconnect: the same session, running again
    assert Session.objects.get(pk=session.id).desired_state == "running"
    ann.post(reverse("wa_outbox_link:link-logout"))
    assert Session.objects.get(pk=session.id).desired_state == "logged_out"
    assert state(ann)["state"] == "logged_out"
    assert Session.objects.count() == 1


@pytest.mark.parametrize(
    "error_code,expected,text",
    [("qr_timeout", "expired", "expired"), ("page_load_failed", "failed", "Linking failed")],
)
def test_failed_and_expired(ann, sql, error_code, expected, text):
    start(ann)
    sid = user_session(ann.user.pk).id
    sql.execute(
        "update wa_session set status = 'failed', error_code = %s, error = 'it broke' where id = %s",
        (error_code, sid),
    )
    got = state(ann)
    assert got["state"] == expected and text in got["html"] and "Try again" in got["html"]
    start(ann)  # try again: the guard restarts it from `new`
    assert Session.objects.get(pk=sid).status == "new"


def test_pairing_code(ann, sql):
    start(ann, pair_phone="+1 (555) 000-2222")
    session = user_session(ann.user.pk)
    assert session.pair_phone == "+15550002222"
    sql.execute(
        "update wa_session set status = 'pairing', pairing_code = 'ABCD1234' where id = %s",
        (session.id,),
    )
    got = state(ann)
    assert got["state"] == "pairing" and "ABCD1234" in got["html"]
    assert 'aria-label="Pairing code A B C D 1 2 3 4"' in got["html"]


def test_bad_pairing_phone_is_said_on_the_page(ann):
    r = ann.post(reverse("wa_outbox_link:link-start"), {"pair_phone": "12"}, follow=True)
    assert "country code" in r.content.decode()
    assert user_session(ann.user.pk) is None


def test_page_shows_only_the_users_own_session(ann, sql):
    bob = User.objects.create_user("bob", password="x")
    sql.execute(
        "insert into wa_session (id, user_id, status, qr_image) values ('bob_s', %s, 'qr_pending', %s)",
        (bob.pk, QR1),
    )
    # A session whose id looks like ann's but that another user made is not hers.
    sql.execute(
        "insert into wa_session (id, user_id) values (%s, %s)",
        (f"user_{ann.user.pk}_session", bob.pk),
    )
    got = state(ann)
    assert got["state"] == "unlinked" and QR1 not in got["html"]
    start(ann)
    assert Session.objects.get(pk="bob_s").user_id == bob.pk
    assert user_session(ann.user.pk).id not in ("bob_s", f"user_{ann.user.pk}_session")
    ann.post(reverse("wa_outbox_link:link-logout"))
    assert Session.objects.get(pk="bob_s").desired_state == "running"


def test_script_is_served(ann):
    r = ann.get(reverse("wa_outbox_link:link-script"))
    assert r.status_code == 200 and r["Content-Type"].startswith("text/javascript")
    assert "data-wa-link" in r.content.decode()
