"""Settings for running manage.py commands in a child process against the test database."""

import os

import psycopg

_info = psycopg.conninfo.conninfo_to_dict(os.environ["WA_TEST_DB_URL"])

SECRET_KEY = "wa-outbox-tests"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "wa_outbox",
    "tests.recorder",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _info.get("dbname"),
        "USER": _info.get("user", ""),
        "PASSWORD": _info.get("password", ""),
        "HOST": _info.get("host", ""),
        "PORT": str(_info.get("port", "")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
