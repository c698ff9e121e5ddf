"""A real PostgreSQL for the tests, with the runner's schema applied (not Django's).

Either WA_TEST_DATABASE_URL (an admin URL to a running cluster: a fresh database is created in
it and dropped afterwards) or a throwaway cluster under /tmp started with the PostgreSQL 15
server binaries. The schema comes from `$WA_OUTBOX_BIN migrate` when WA_OUTBOX_BIN is set,
otherwise from psql -f on the repository's migrations/*.sql in order.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

PG_BIN = Path(os.environ.get("WA_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
REPO_ROOT = Path(__file__).resolve().parents[3]
MIGRATIONS = Path(os.environ.get("WA_OUTBOX_MIGRATIONS", REPO_ROOT / "migrations"))


class SetupError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], *, env=None, timeout: float = 120, user: str | None = None) -> str:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"{cmd[0]} timed out after {timeout}s") from exc
    if proc.returncode != 0:
        raise SetupError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname)))


@dataclass
class TestDatabase:
    url: str  # libpq URL of the test database
    _cleanup: list = field(default_factory=list)

    def params(self) -> dict:
        """Django DATABASES entry for this database."""
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": info.get("dbname"),
            "USER": info.get("user", ""),
            "PASSWORD": info.get("password", ""),
            "HOST": info.get("host", ""),
            "PORT": str(info.get("port", "")),
            # The database already exists and holds the runner's schema: tests use it as is.
            "TEST": {"NAME": info.get("dbname")},
        }

    def close(self) -> None:
        while self._cleanup:
            try:
                self._cleanup.pop()()
            except Exception as exc:  # teardown must go on
                print(f"test database cleanup: {exc}")


def start() -> TestDatabase:
    admin_url = os.environ.get("WA_TEST_DATABASE_URL")
    db = TestDatabase(url="")
    try:
        if not admin_url:
            admin_url = _start_cluster(db)
        dbname = f"wa_django_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))

        def drop():
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(
                    sql.SQL("drop database if exists {} with (force)").format(
                        sql.Identifier(dbname)
                    )
                )

        db._cleanup.append(drop)
        db.url = _with_db(admin_url, dbname)
        apply_schema(db.url)
        return db
    except BaseException:
        db.close()
        raise


def _start_cluster(db: TestDatabase) -> str:
    if not (PG_BIN / "initdb").exists():
        raise SetupError(f"no PostgreSQL server binaries in {PG_BIN}; set WA_TEST_DATABASE_URL")
    root = Path(tempfile.mkdtemp(prefix="wa-django-pg-", dir="/tmp"))
    db._cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    # initdb refuses to run as root.
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(root, user=user)
    data = root / "data"
    port = _free_port()
    _run(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        user=user,
    )
    log = root / "postgres.log"
    _run(
        [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off",
            "start",
        ],
        user=user,
    )
    db._cleanup.append(
        lambda: _run(
            [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], user=user
        )
    )
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def apply_schema(url: str) -> None:
    binary = os.environ.get("WA_OUTBOX_BIN")
    if binary:
        env = {**os.environ, "DATABASE_URL": url}
        _run([binary, "migrate"], env=env, timeout=120)
        return
    files = sorted(MIGRATIONS.glob("*.sql"))
    if not files:
        raise SetupError(f"no migrations in {MIGRATIONS}; set WA_OUTBOX_MIGRATIONS")
    psql = shutil.which("psql") or str(PG_BIN / "psql")
    for f in files:
        _run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(f)])
