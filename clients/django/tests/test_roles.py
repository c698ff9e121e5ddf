"""The service works under the least-privilege Django role of deploy/sql/roles.sql, and the
row-level-security option there gives a tenant role only its own users' rows.

That role may insert and read sessions and messages, update only the columns a caller owns
(wa_session.desired_state/pair_phone/user_id, wa_message.status) and read events; this checks
that nothing the package does needs more.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings

from wa_outbox.exceptions import MediaNotFoundError, SessionNotFoundError
from wa_outbox.models import Message, Session
from wa_outbox.services import WhatsAppService

from . import pgcluster, runner_side


def psycopg_conn(url):
    import psycopg

    return psycopg.connect(url, autocommit=True)

ROLES_SQL = Path(
    os.environ.get("WA_ROLES_SQL", pgcluster.REPO_ROOT / "deploy" / "sql" / "roles.sql")
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not ROLES_SQL.exists(), reason=f"{ROLES_SQL} is not in this checkout"),
]


@pytest.fixture
def as_django_role(database_url):
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-f", str(ROLES_SQL)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with connection.cursor() as c:
        c.execute("set role wa_django")
    try:
        yield
    finally:
        with connection.cursor() as c:
            c.execute("reset role")


def test_service_calls_need_no_more_than_the_django_role(as_django_role, database_url):
    svc = WhatsAppService()
    with connection.cursor() as c:
        c.execute("select current_user")
        assert c.fetchone()[0] == "wa_django"
        with pytest.raises(Exception, match="permission denied"):
            c.execute("select * from wa_session_auth")

    runner = runner_side.show_qr(database_url, "user_3_session")
    runner.start()
    assert svc.init_session(3, "user_3_session")["status"] == "qr_pending"
    runner.join_ok()
    assert svc.get_session_status("user_3_session")["success"] is True

    with override_settings(WA_OUTBOX_SEND_TIMEOUT=0):
        sent = svc.send_text_message("user_3_session", "15551234567", "hi", idempotency_key="k1")
        again = svc.send_text_message("user_3_session", "15551234567", "hi", idempotency_key="k1")
        media = svc.send_media_message(
            "user_3_session", "15551234567", file=b"\x89PNG....", filename="a.png"
        )
    assert sent["messageId"] == again["messageId"]
    assert Message.objects.get(pk=media["messageId"]).kind == "image"
    assert svc.cancel_message(sent["messageId"])["status"] == "cancelled"

    # Incoming media: readable like events, bytes included.
    with connection.cursor() as c:
        c.execute("reset role")
    with psycopg_conn(database_url) as conn:
        ev = runner_side.event(conn, "user_3_session", "message", {"type": "image"}, None, "false_1@c.us_M")
        media_id = conn.execute(
            "insert into wa_media (session_id, event_id, wa_message_id, kind, mime, size, sha256, data)"
            " values ('user_3_session', %s, 'false_1@c.us_M', 'image', 'image/png', 3,"
            " encode(sha256('abc'), 'hex'), 'abc') returning id",
            (ev,),
        ).fetchone()[0]
    with connection.cursor() as c:
        c.execute("set role wa_django")
    assert svc.get_media(media_id)["data"] == b"abc"
    with connection.cursor() as c:
        with pytest.raises(Exception, match="permission denied"):
            c.execute("delete from wa_media")

    s = Session.objects.get(pk="user_3_session")
    s.pair_phone = "+15550002222"
    s.save()  # only caller columns are written
    assert svc.disconnect("user_3_session")["success"] is True
    assert svc.logout("user_3_session")["success"] is True
    assert Session.objects.get(pk="user_3_session").desired_state == "logged_out"


@pytest.fixture
def tenant_role(database_url):
    """A tenant app's role under the row-level-security option of roles.sql: users 1 and 2."""
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-f", str(ROLES_SQL)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    name = f"tenant_test_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as c:
        c.execute(f"create role {name} nologin in role wa_tenant")
        c.execute(
            "insert into wa_tenant_user (tenant, user_id) values (%s, 1), (%s, 2), "
            "('wa_django', 3)",
            [name, name],
        )
        for sid, uid in (("t_one", 1), ("t_two", 2), ("t_three", 3), ("t_none", None)):
            c.execute("insert into wa_session (id, user_id) values (%s, %s)", [sid, uid])
            c.execute(
                "insert into wa_message (session_id, recipient, body) values (%s, '15551234567', 'x')",
                [sid],
            )
            c.execute(
                "insert into wa_event (session_id, kind, payload) values (%s, 'session_status', '{}')",
                [sid],
            )
            c.execute(
                "with e as (insert into wa_event (session_id, kind, wa_message_id) "
                "values (%s, 'message', 'false_1@c.us_' || %s) returning id, session_id, wa_message_id) "
                "insert into wa_media (session_id, event_id, wa_message_id, kind, error_code, error) "
                "select session_id, id, wa_message_id, 'image', 'media_too_large', 'big' from e",
                [sid, sid],
            )
        c.execute(f"set role {name}")
    try:
        yield name
    finally:
        with connection.cursor() as c:
            c.execute("reset role")
            c.execute("delete from wa_tenant_user")
            c.execute(f"drop owned by {name}")
            c.execute(f"drop role {name}")


def test_tenant_role_sees_only_its_users_rows(tenant_role):
    def rows(query, params=()):
        with connection.cursor() as c:
            c.execute(query, params)
            return sorted(r[0] for r in c.fetchall())

    assert rows("select current_user") == [tenant_role]
    assert rows("select id from wa_session") == ["t_one", "t_two"]
    assert rows("select session_id from wa_message") == ["t_one", "t_two"]
    assert rows("select distinct session_id from wa_event") == ["t_one", "t_two"]
    assert rows("select session_id from wa_media") == ["t_one", "t_two"]
    # Only its own mapping rows: not which users other tenants have.
    assert rows("select user_id from wa_tenant_user") == [1, 2]

    # Writes are held to its users too.
    from django.db.utils import ProgrammingError

    with pytest.raises(ProgrammingError, match="row-level security"):
        with connection.cursor() as c:
            c.execute("insert into wa_session (id, user_id) values ('t_mine', 3)")
    with pytest.raises(ProgrammingError, match="row-level security"):
        with connection.cursor() as c:
            c.execute(
                "insert into wa_message (session_id, recipient, body) values ('t_three', '15551234567', 'x')"
            )
    with pytest.raises(ProgrammingError, match="row-level security"):
        with connection.cursor() as c:
            c.execute("update wa_session set user_id = 3 where id = 't_one'")
    with connection.cursor() as c:
        c.execute("update wa_session set desired_state = 'stopped' where id = 't_three'")
        assert c.rowcount == 0
        c.execute("update wa_message set status = 'cancelled' where session_id = 't_none'")
        assert c.rowcount == 0
        with pytest.raises(ProgrammingError, match="permission denied"):
            c.execute(
                "insert into wa_tenant_user (tenant, user_id) values (current_user::regrole, 3)"
            )
    with pytest.raises(ProgrammingError, match="permission denied"):
        with connection.cursor() as c:
            c.execute("select * from wa_session_overview")

    # The package works unchanged on top: other tenants' sessions simply do not exist.
    svc = WhatsAppService()
    with override_settings(WA_OUTBOX_SEND_TIMEOUT=0):
        assert svc.send_text_message("t_one", "15551234567", "hi")["status"] == "queued"
        with pytest.raises(SessionNotFoundError):
            svc.send_text_message("t_three", "15551234567", "hi")
    with pytest.raises(SessionNotFoundError):
        svc.get_session_status("t_none")
    assert svc.disconnect("t_two")["success"] is True
    assert svc.get_media(session_id="t_one", wa_message_id="false_1@c.us_t_one")["kind"] == "image"
    with pytest.raises(MediaNotFoundError):
        svc.get_media(session_id="t_three", wa_message_id="false_1@c.us_t_three")


def test_other_roles_still_see_every_row(tenant_role):
    with connection.cursor() as c:
        c.execute("reset role")
        c.execute("set role wa_django")
        c.execute("select count(*) from wa_session")
        assert c.fetchone()[0] == 4
        c.execute("set role wa_runner")
        c.execute("select count(*) from wa_message")
        assert c.fetchone()[0] == 4
