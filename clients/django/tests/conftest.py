from __future__ import annotations

import time

import psycopg
import pytest

from . import pgcluster

_db: pgcluster.TestDatabase | None = None


def pytest_configure(config):
    """Start the database before Django is configured, so settings can point at it."""
    global _db
    from django.conf import settings

    if settings.configured:
        return
    _db = pgcluster.start()
    settings.configure(
        DEBUG=False,
        SECRET_KEY="wa-outbox-tests",
        USE_TZ=True,
        ALLOWED_HOSTS=["*"],
        DATABASES={"default": _db.params()},
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "wa_outbox",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        ROOT_URLCONF="tests.urls",
        # The live server (test_link_browser.py) serves static files under this prefix.
        STATIC_URL="/static/",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        # Fast waits in tests; individual tests override where they test the timeouts.
        WA_OUTBOX_POLL_INTERVAL=0.2,
        LOGGING_CONFIG=None,
    )


def pytest_unconfigure(config):
    if _db is not None:
        from wa_outbox import pgnotify

        pgnotify.shutdown()
        _db.close()


@pytest.fixture(scope="session")
def database_url() -> str:
    assert _db is not None
    return _db.url


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker):
    """The database already exists with the runner's schema; add only Django's own tables
    (auth, sessions, admin, and this package's listener cursor)."""
    from django.core.management import call_command

    with django_db_blocker.unblock():
        call_command("migrate", verbosity=0, interactive=False)


@pytest.fixture
def sql(database_url, transactional_db):
    """A plain autocommit connection, outside Django: the runner's side of the contract.
    Tests using it are transactional, so both sides see each other's committed rows."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(autouse=True)
def _empty_outbox(database_url):
    """Runner tables are unmanaged, so Django's test flush leaves them alone: empty them here."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("truncate wa_event, wa_message, wa_session cascade")
    yield


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
