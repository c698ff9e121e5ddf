"""Models against the runner's real schema: defaults come from the database, CHECKs bite."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from wa_outbox.models import ErrorCode, Event, Message, Session

pytestmark = pytest.mark.django_db


def test_session_insert_with_only_an_id_gets_database_defaults():
    s = Session.objects.create(id="user_1_session")
    # Filled in from RETURNING, not guessed by Django.
    assert s.desired_state == "running"
    assert s.status == "new"
    assert s.restart_count == 0
    assert s.created_at is not None and s.updated_at is not None
    assert s.last_active_at is not None
    assert Session.objects.get(pk="user_1_session").status == "new"


def test_message_insert_with_only_required_fields():
    Session.objects.create(id="s1")
    m = Message.objects.create(session_id="s1", recipient="15551234567", body="hi")
    assert isinstance(m.id, int) and m.id > 0
    assert m.kind == "text"
    assert m.status == "queued"
    assert m.options == {}
    assert m.priority == 0 and m.attempts == 0 and m.max_attempts == 5
    assert m.not_before is not None
    m2 = Message.objects.create(session_id="s1", recipient="15551234567", body="again")
    assert m2.id > m.id


def test_message_id_is_never_sent():
    Session.objects.create(id="s1")
    with _Capture() as cap:
        Message.objects.create(session_id="s1", recipient="15551234567", body="hi")
    insert = next(q for q in cap.sql if q.lstrip().upper().startswith("INSERT"))
    columns = insert.split("(", 1)[1].split(")", 1)[0]
    assert '"id"' not in columns
    assert '"status"' in columns  # sent as DEFAULT, so the database's value applies
    assert "DEFAULT" in insert


class _Capture:
    def __init__(self):
        self.sql: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.sql.append(sql)
        return execute(sql, params, many, context)

    def __enter__(self):
        self._cm = connection.execute_wrapper(self)
        self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def test_bulk_create_messages():
    Session.objects.create(id="s1")
    rows = Message.objects.bulk_create(
        [Message(session_id="s1", recipient="1555000000%d" % i, body=str(i)) for i in range(3)]
    )
    assert [r.status for r in rows] == ["queued"] * 3
    assert all(r.id for r in rows)


@pytest.mark.parametrize(
    "model,kwargs,constraint",
    [
        (Session, {"id": "bad id!"}, "wa_session_id_check"),
        (Session, {"id": "s2", "desired_state": "paused"}, "wa_session_desired_state_check"),
        (Session, {"id": "s2", "status": "dancing"}, "wa_session_status_check"),
        (Session, {"id": "s2", "pair_phone": "12ab"}, "wa_session_pair_phone_check"),
        (
            Message,
            {"session_id": "s1", "recipient": "155", "kind": "carrier_pigeon"},
            "wa_message_kind_check",
        ),
        (
            Message,
            {"session_id": "s1", "recipient": "155", "status": "lost"},
            "wa_message_status_check",
        ),
        (Message, {"session_id": "s1", "recipient": ""}, "wa_message_recipient_check"),
        (
            Message,
            {"session_id": "s1", "recipient": "155", "max_attempts": 0},
            "wa_message_max_attempts_check",
        ),
        (
            Message,
            {"session_id": "s1", "recipient": "155", "options": []},
            "wa_message_options_check",
        ),
        (
            Message,
            {
                "session_id": "s1",
                "recipient": "155",
                "kind": "image",
                "media_url": "https://x/a.png",
                "media_data": b"x",
            },
            "wa_message_one_media_source",
        ),
    ],
)
def test_check_violations_surface_as_integrity_error(model, kwargs, constraint):
    Session.objects.create(id="s1")
    with pytest.raises(IntegrityError, match=constraint):
        with transaction.atomic():
            model.objects.create(**kwargs)


def test_error_code_domain_is_enforced():
    s = Session.objects.create(id="s1")
    with pytest.raises(IntegrityError, match="wa_error_code"):
        with transaction.atomic(), connection.cursor() as c:
            c.execute("update wa_session set error_code = 'nope' where id = %s", [s.pk])


def test_error_code_choices_match_the_sql_domain():
    with connection.cursor() as c:
        c.execute(
            "select pg_get_constraintdef(oid) from pg_constraint where contypid = 'wa_error_code'::regtype"
        )
        definition = c.fetchone()[0]
    for code in ErrorCode.values:
        assert f"'{code}'" in definition
    assert definition.count("::text") == len(ErrorCode.values)


def test_message_for_missing_session_fails():
    with pytest.raises(IntegrityError, match="wa_message_session_id_fkey"):
        with transaction.atomic():
            Message.objects.create(session_id="nobody", recipient="15551234567", body="x")


def test_new_instance_with_existing_id_does_not_overwrite_the_row(sql):
    Session.objects.create(id="s1")
    sql.execute(
        "update wa_session set status = 'connected', phone_number = '+15550001' where id = 's1'"
    )
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            Session(id="s1").save()
    row = Session.objects.get(pk="s1")
    assert (row.status, row.phone_number) == ("connected", "+15550001")


def test_saving_a_stale_session_keeps_what_the_runner_wrote(sql):
    """A caller edits desired_state on an instance loaded before the runner connected it."""
    stale = Session.objects.create(id="s1")
    sql.execute(
        "update wa_session set status = 'connected', phone_number = '+15550001', push_name = 'Ann' "
        "where id = 's1'"
    )
    stale.desired_state = "stopped"
    stale.save()
    row = Session.objects.get(pk="s1")
    assert row.desired_state == "stopped"
    assert (row.status, row.phone_number, row.push_name) == ("connected", "+15550001", "Ann")


def test_runner_owned_fields_cannot_be_saved():
    s = Session.objects.create(id="s1")
    s.status = "connected"
    with pytest.raises(ValueError, match="status is written by the wa-outbox runner"):
        s.save(update_fields=["status"])
    m = Message.objects.create(session_id="s1", recipient="15551234567", body="x", priority=3)
    assert Message.objects.get(pk=m.pk).priority == 3
    with pytest.raises(
        ValueError, match="priority, wa_message_id are written by the wa-outbox runner"
    ):
        m.save(update_fields=["wa_message_id", "priority"])
    m.body = "changed"
    with pytest.raises(ValueError, match="written by the wa-outbox runner only"):
        m.save()


def test_event_rows_are_read_only(sql):
    Session.objects.create(id="s1")
    sql.execute(
        "insert into wa_event (session_id, kind, payload) values ('s1', 'session_status', '{\"status\": \"new\"}')"
    )
    ev = Event.objects.get()
    assert ev.payload == {"status": "new"}
    with pytest.raises(ValueError, match="written by the wa-outbox runner"):
        ev.save()


def test_cancel_only_while_queued(sql):
    Session.objects.create(id="s1")
    m = Message.objects.create(session_id="s1", recipient="15551234567", body="x")
    assert m.cancel() is True
    assert m.status == "cancelled" and m.finished_at is not None
    m2 = Message.objects.create(session_id="s1", recipient="15551234567", body="y")
    sql.execute("update wa_message set status = 'sent' where id = %s", (m2.id,))
    assert m2.cancel() is False
    assert m2.status == "sent"


def test_guard_restarts_a_failed_session_when_asked_to_run(sql):
    Session.objects.create(id="s1")
    sql.execute(
        "update wa_session set status = 'failed', error_code = 'qr_timeout' where id = 's1'"
    )
    s = Session.objects.get(pk="s1")
    s.desired_state = "running"
    s.save()
    s.refresh_from_db()
    assert (s.status, s.error_code) == ("new", None)


def test_package_migrations_match_the_models():
    """A host's makemigrations must never write a migration into the installed package."""
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("makemigrations", "wa_outbox", "--check", "--dry-run", stdout=out)


def test_session_proxy_url_is_a_caller_field_the_table_checks():
    from django.core.exceptions import ValidationError

    s = Session.objects.create(id="proxied", proxy_url="http://bob:pw@10.0.0.1:3128")
    s.proxy_url = "socks5://10.0.0.2:1080"
    s.save()
    assert Session.objects.get(pk="proxied").proxy_url == "socks5://10.0.0.2:1080"
    with pytest.raises(IntegrityError, match="wa_session_proxy_url_scheme"):
        with transaction.atomic():
            Session.objects.create(id="ftp", proxy_url="ftp://h:21")
    with pytest.raises(ValidationError, match="proxy_url"):
        Session(id="bad", proxy_url="ftp://h:21").full_clean()
