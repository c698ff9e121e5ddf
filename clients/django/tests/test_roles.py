"""The service works under the least-privilege Django role of deploy/sql/roles.sql.

That role may insert and read sessions and messages, update only the columns a caller owns
(wa_session.desired_state/pair_phone/user_id, wa_message.status) and read events; this checks
that nothing the package does needs more.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings

from wa_outbox.models import Message, Session
from wa_outbox.services import WhatsAppService

from . import pgcluster, runner_side

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

    s = Session.objects.get(pk="user_3_session")
    s.pair_phone = "+15550002222"
    s.save()  # only caller columns are written
    assert svc.disconnect("user_3_session")["success"] is True
    assert svc.logout("user_3_session")["success"] is True
    assert Session.objects.get(pk="user_3_session").desired_state == "logged_out"
