"""Multi-tenant by default: through the views a user reaches only their own sessions.

Another user's session (or message) is answered exactly like one that does not exist; staff may
reach every session; API keys reach what they are mapped to, and a wrong or revoked key nothing.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.urls import reverse

from wa_outbox.models import Message, Session
from wa_outbox.permissions import hash_api_key

pytestmark = pytest.mark.django_db(transaction=True)

BOB_QR = "data:image/png;base64,Qk9CLVFS"
ANN_KEY = "wao_test-key-for-ann-only-0123456789"
ALL_KEY = "wao_test-key-for-everyone-0123456789"
OLD_KEY = "wao_test-key-revoked-0123456789"


@pytest.fixture
def people(sql):
    ann = User.objects.create_user("ann", password="x")
    bob = User.objects.create_user("bob", password="x")
    boss = User.objects.create_user("boss", password="x", is_staff=True)
    sql.execute(
        "insert into wa_session (id, user_id, status, qr_code, qr_image) "
        "values ('ann_s', %s, 'connected', null, null), ('bob_s', %s, 'qr_pending', 'BOB-RAW-QR', %s)",
        (ann.pk, bob.pk, BOB_QR),
    )
    bob_msg = sql.execute(
        "insert into wa_message (session_id, recipient, body) values ('bob_s', '15551234567', 'b') "
        "returning id"
    ).fetchone()[0]
    clients = {}
    for user in (ann, bob, boss):
        c = Client()
        c.force_login(user)
        clients[user.username] = c
    return {"users": {"ann": ann, "bob": bob, "boss": boss}, "bob_msg": bob_msg, **clients}


def call(client, op, session_id, **headers):
    """One operation on one session through the JSON views: (status code, body)."""
    if op == "status":
        r = client.get(reverse("wa_outbox:session-status", args=[session_id]), headers=headers)
    else:
        name, extra = {
            "disconnect": ("session-disconnect", {}),
            "logout": ("session-logout", {}),
            "send-text": ("send-text", {"recipient": "15551234567", "message": "hi"}),
            "send-media": (
                "send-media",
                {"recipient": "15551234567", "mediaUrl": "https://example.com/a.png"},
            ),
        }[op]
        r = client.post(
            reverse(f"wa_outbox:{name}"),
            json.dumps({"sessionId": session_id, **extra}),
            content_type="application/json",
            headers=headers,
        )
    return r.status_code, r.content.decode()


OPS = ["status", "disconnect", "logout", "send-text", "send-media"]


@pytest.mark.parametrize("op", OPS)
def test_another_users_session_answers_like_an_unknown_one(people, op):
    foreign = call(people["ann"], op, "bob_s")
    unknown = call(people["ann"], op, "nobody")
    assert foreign[0] == 404
    # Byte for byte the same answer, once the id the caller sent is swapped.
    assert foreign[1] == unknown[1].replace("nobody", "bob_s")
    assert "BOB-RAW-QR" not in foreign[1] and BOB_QR not in foreign[1]
    bob_s = Session.objects.get(pk="bob_s")
    assert bob_s.desired_state == "running"
    assert Message.objects.filter(session_id="bob_s").count() == 1


def test_own_session_and_staff(people):
    r = people["ann"].get(reverse("wa_outbox:session-status", args=["ann_s"]))
    assert r.status_code == 200 and r.json()["status"] == "connected"
    r = people["bob"].get(reverse("wa_outbox:session-status", args=["bob_s"]))
    assert r.json()["qrCode"] == BOB_QR
    # Staff reach every session and message.
    r = people["boss"].get(reverse("wa_outbox:session-status", args=["bob_s"]))
    assert r.status_code == 200 and r.json()["qrCode"] == BOB_QR
    r = people["boss"].get(reverse("wa_outbox:message-status", args=[people["bob_msg"]]))
    assert r.status_code == 200 and r.json()["messageId"] == people["bob_msg"]
    assert call(people["boss"], "disconnect", "bob_s")[0] == 200
    assert Session.objects.get(pk="bob_s").desired_state == "stopped"


def test_host_predicate_replaces_staff(people):
    with override_settings(WA_OUTBOX_ACT_FOR_OTHERS=lambda request: request.user.username == "ann"):
        assert call(people["ann"], "status", "bob_s")[0] == 200
        assert call(people["boss"], "status", "bob_s")[0] == 404


def test_another_users_message_answers_like_an_unknown_one(people):
    msg = people["bob_msg"]
    foreign = people["ann"].get(reverse("wa_outbox:message-status", args=[msg]))
    unknown = people["ann"].get(reverse("wa_outbox:message-status", args=[msg + 1000]))
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == {
        **unknown.json(),
        "error": unknown.json()["error"].replace(str(msg + 1000), str(msg)),
    }
    r = people["bob"].get(reverse("wa_outbox:message-status", args=[msg]))
    assert r.status_code == 200


def test_session_init_owner_is_the_logged_in_user(people, settings):
    settings.WA_OUTBOX_QR_TIMEOUT = 0.2
    ann = people["ann"]

    def init(client, body):
        return client.post(
            reverse("wa_outbox:session-init"), json.dumps(body), content_type="application/json"
        )

    # userId of someone else: refused, nothing created.
    r = init(ann, {"sessionId": "ann_new", "userId": people["users"]["bob"].pk})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert not Session.objects.filter(pk="ann_new").exists()
    # Own id (given or not): created for ann (504: no runner answers in this test).
    assert init(ann, {"sessionId": "ann_new"}).status_code == 504
    assert Session.objects.get(pk="ann_new").user_id == people["users"]["ann"].pk
    assert (
        init(ann, {"sessionId": "ann_new2", "userId": people["users"]["ann"].pk}).status_code == 504
    )
    # Bob's session id: taken, and bob's row is left alone.
    r = init(ann, {"sessionId": "bob_s"})
    assert r.status_code == 409 and r.json()["code"] == "session_conflict"
    assert "bob" not in r.json()["error"].replace("bob_s", "")
    bob_s = Session.objects.get(pk="bob_s")
    assert (bob_s.user_id, bob_s.desired_state) == (people["users"]["bob"].pk, "running")
    # Staff may create a session for another user.
    assert (
        init(
            people["boss"], {"sessionId": "for_bob", "userId": people["users"]["bob"].pk}
        ).status_code
        == 504
    )
    assert Session.objects.get(pk="for_bob").user_id == people["users"]["bob"].pk


def test_a_session_without_owner_is_staff_only(people, sql):
    sql.execute("insert into wa_session (id) values ('shared')")
    assert call(people["ann"], "status", "shared")[0] == 404
    assert call(people["boss"], "status", "shared")[0] == 200


# ---- API keys ------------------------------------------------------------------------------


@pytest.fixture
def api_keys(people, settings):
    settings.WA_OUTBOX_API_KEYS = [
        {"name": "ann-worker", "hash": hash_api_key(ANN_KEY), "users": [people["users"]["ann"].pk]},
        {"name": "ops", "hash": hash_api_key(ALL_KEY), "users": "all"},
    ]
    settings.WA_OUTBOX_SEND_TIMEOUT = 0
    return settings


def test_api_key_reaches_only_what_it_is_mapped_to(people, api_keys):
    # A fresh client: no cookie, and CSRF checks on as for a real caller.
    worker = Client(enforce_csrf_checks=True)
    key = {"X-Api-Key": ANN_KEY}
    assert call(worker, "status", "ann_s", **key)[0] == 200
    status, body = call(worker, "send-text", "ann_s", **key)
    assert status == 200 and json.loads(body)["status"] == "queued"
    foreign = call(worker, "status", "bob_s", **key)
    assert foreign == (404, call(worker, "status", "nobody", **key)[1].replace("nobody", "bob_s"))
    assert call(worker, "send-text", "bob_s", **key)[0] == 404
    r = worker.get(reverse("wa_outbox:message-status", args=[people["bob_msg"]]), headers=key)
    assert r.status_code == 404

    def init(body, headers):
        return worker.post(
            reverse("wa_outbox:session-init"),
            json.dumps(body),
            content_type="application/json",
            headers=headers,
        )

    api_keys.WA_OUTBOX_QR_TIMEOUT = 0.2
    r = init({"sessionId": "k1", "userId": people["users"]["bob"].pk}, key)
    assert r.status_code == 403
    r = init({"sessionId": "k1"}, key)  # a scoped key must say for whom
    assert r.status_code == 400 and r.json()["field"] == "userId"
    assert init({"sessionId": "k1", "userId": people["users"]["ann"].pk}, key).status_code == 504
    assert Session.objects.get(pk="k1").user_id == people["users"]["ann"].pk

    # The "all" key reaches every session.
    everyone = {"X-Api-Key": ALL_KEY}
    assert call(worker, "status", "bob_s", **everyone)[0] == 200
    assert call(worker, "logout", "bob_s", **everyone)[0] == 200
    assert Session.objects.get(pk="bob_s").desired_state == "logged_out"


def test_wrong_or_revoked_key_is_refused(people, api_keys):
    worker = Client(enforce_csrf_checks=True)
    refused = (
        401,
        json.dumps({"success": False, "error": "invalid API key", "code": "invalid_api_key"}),
    )
    for wrong in (ANN_KEY + "x", ANN_KEY[:-1], "", hash_api_key(ANN_KEY), OLD_KEY):
        assert call(worker, "status", "ann_s", **{"X-Api-Key": wrong}) == refused, wrong
    # A wrong key is refused even next to a valid login cookie.
    assert call(people["ann"], "status", "ann_s", **{"X-Api-Key": "nope"}) == refused
    # Rotation: the old key works while listed, and not once it is removed.
    keys = api_keys.WA_OUTBOX_API_KEYS
    api_keys.WA_OUTBOX_API_KEYS = keys + [
        {"name": "old", "hash": hash_api_key(OLD_KEY), "users": "all"}
    ]
    assert call(worker, "status", "ann_s", **{"X-Api-Key": OLD_KEY})[0] == 200
    api_keys.WA_OUTBOX_API_KEYS = keys
    assert call(worker, "status", "ann_s", **{"X-Api-Key": OLD_KEY}) == refused
    # Without a key, a cookie-less caller is simply not logged in.
    assert call(worker, "status", "ann_s")[0] == 403


def test_browser_requests_still_need_csrf(people):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(people["users"]["ann"])
    status, _ = call(browser, "disconnect", "ann_s")
    assert status == 403
    assert Session.objects.get(pk="ann_s").desired_state == "running"


@pytest.mark.parametrize(
    "entries",
    [
        {"hash": "x"},
        [{"hash": ANN_KEY, "users": "all"}],
        [{"hash": hash_api_key(ANN_KEY), "users": "some"}],
        [{"hash": hash_api_key(ANN_KEY), "users": ["1"]}],
        [{"hash": "sha256:" + "zz" * 32, "users": "all"}],
    ],
)
def test_bad_api_key_settings_are_reported(people, settings, entries):
    settings.WA_OUTBOX_API_KEYS = entries
    with pytest.raises(ImproperlyConfigured, match="WA_OUTBOX_API_KEYS"):
        call(Client(), "status", "ann_s", **{"X-Api-Key": ANN_KEY})


def test_api_key_command_prints_a_key_and_its_hash(capsys):
    from django.core.management import call_command

    call_command("wa_outbox_api_key", "billing", "--users", "7,9")
    out = capsys.readouterr().out
    key = out.split("store it nowhere else): ", 1)[1].split()[0]
    assert key.startswith("wao_") and len(key) > 40
    assert f"'hash': '{hash_api_key(key)}'" in out and "'users': [7, 9]" in out
