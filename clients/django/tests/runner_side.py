"""The runner's side of the table contract, written with plain SQL from another thread.

These are contract tests, not mocks: the rows, triggers and NOTIFYs are PostgreSQL's own. What
the helpers write is what DESIGN.md §1 says a runner writes (status, qr_image, an event row).
"""

from __future__ import annotations

import json
import threading
import time

import psycopg

QR_IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
QR_CODE = "2@ref,noise-key,identity-key,adv-secret,platform"


class RunnerThread(threading.Thread):
    """Waits (bounded) until `ready_sql` returns a row, then runs `writes` in one transaction."""

    def __init__(
        self, url: str, ready_sql: str, ready_params: tuple, writes, timeout: float = 20.0
    ):
        super().__init__(daemon=True)
        self.url, self.ready_sql, self.ready_params = url, ready_sql, ready_params
        self.writes, self.timeout = writes, timeout
        self.error: BaseException | None = None
        self.found: tuple | None = None

    def run(self):
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                deadline = time.monotonic() + self.timeout
                while True:
                    self.found = conn.execute(self.ready_sql, self.ready_params).fetchone()
                    if self.found:
                        break
                    if time.monotonic() > deadline:
                        raise AssertionError(f"runner stand-in: nothing matched {self.ready_sql!r}")
                    time.sleep(0.02)
                with conn.transaction():
                    self.writes(conn, self.found)
        except BaseException as exc:  # reported by join_ok()
            self.error = exc

    def join_ok(self, timeout: float = 30.0):
        self.join(timeout)
        assert not self.is_alive(), "runner stand-in did not finish"
        if self.error:
            raise self.error


def event(
    conn, session_id: str, kind: str, payload: dict, message_id=None, wa_message_id=None
) -> int:
    return conn.execute(
        "insert into wa_event (session_id, kind, message_id, wa_message_id, payload) "
        "values (%s, %s, %s, %s, %s) returning id",
        (session_id, kind, message_id, wa_message_id, json.dumps(payload)),
    ).fetchone()[0]


def show_qr(url: str, session_id: str) -> RunnerThread:
    """Once the session asks to run (status new), show a QR as a runner would."""

    def writes(conn, _):
        conn.execute(
            "update wa_session set status = 'qr_pending', qr_code = %s, qr_image = %s, "
            "qr_expires_at = now() + interval '60 seconds' where id = %s",
            (QR_CODE, QR_IMAGE, session_id),
        )
        event(conn, session_id, "session_status", {"status": "qr_pending"})

    return RunnerThread(
        url,
        "select 1 from wa_session where id = %s and desired_state = 'running' and status = 'new'",
        (session_id,),
        writes,
    )


def set_session(url: str, session_id: str, **columns) -> RunnerThread:
    """Once the session asks to run, set these columns (e.g. status='connected')."""

    def writes(conn, _):
        assignments = ", ".join(f"{name} = %s" for name in columns)
        conn.execute(
            f"update wa_session set {assignments} where id = %s", (*columns.values(), session_id)
        )
        event(conn, session_id, "session_status", {"status": columns.get("status")})

    return RunnerThread(
        url,
        "select 1 from wa_session where id = %s and desired_state = 'running'",
        (session_id,),
        writes,
    )


def finish_message(url: str, session_id: str, status: str = "sent", **columns) -> RunnerThread:
    """Once a message of the session is queued, move it to `status` as the dispatcher would."""

    def writes(conn, found):
        (message_id,) = found
        sets = {"status": status, **columns}
        if status == "sent":
            sets.setdefault("wa_message_id", f"true_15551234567@c.us_{message_id:020d}")
            sets.setdefault("ack", 1)
        assignments = ", ".join(f"{name} = %s" for name in sets)
        extra = ", sent_at = now()" if status == "sent" else ", finished_at = now()"
        conn.execute(
            f"update wa_message set {assignments}{extra} where id = %s",
            (*sets.values(), message_id),
        )
        if status == "sent":
            event(conn, session_id, "ack", {"ack": 1}, message_id, sets["wa_message_id"])

    return RunnerThread(
        url,
        "select id from wa_message where session_id = %s and status = 'queued' order by id limit 1",
        (session_id,),
        writes,
    )


def finish_command(url: str, session_id: str, status: str = "done", **columns) -> RunnerThread:
    """Once a command of the session is queued, finish it as the command loop would (its NOTIFY
    wa_command comes from the table's trigger)."""

    def writes(conn, found):
        (command_id,) = found
        sets = {"status": status, **columns}
        if "result" in sets:
            sets["result"] = json.dumps(sets["result"])
        assignments = ", ".join(f"{name} = %s" for name in sets)
        conn.execute(
            f"update wa_command set {assignments}, finished_at = now() where id = %s",
            (*sets.values(), command_id),
        )

    return RunnerThread(
        url,
        "select id from wa_command where session_id = %s and status = 'queued'",
        (session_id,),
        writes,
    )
