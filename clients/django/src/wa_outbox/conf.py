"""Package settings, each read from django.conf.settings with a default.

Read at call time (not import time) so override_settings and per-environment settings work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # Database alias holding the runner's tables.
    "WA_OUTBOX_DATABASE": "default",
    # Seed timeouts (seconds): QR generation 30 s, message sending 10 s, session init 60 s.
    "WA_OUTBOX_QR_TIMEOUT": 30.0,
    "WA_OUTBOX_SEND_TIMEOUT": 10.0,
    "WA_OUTBOX_INIT_TIMEOUT": 60.0,
    # While waiting on LISTEN, re-read the row at least this often: a runner may change a row
    # without inserting an event, and a notification can be lost if the connection drops.
    "WA_OUTBOX_POLL_INTERVAL": 0.5,
    # Mirrors the runner's WA_MEDIA_MAX_BYTES so inline media too large is refused before insert.
    "WA_OUTBOX_MEDIA_MAX_BYTES": 16 * 1024 * 1024,
    # Dotted path to callable(request) -> bool, deciding who may use the views.
    "WA_OUTBOX_PERMISSION": "wa_outbox.permissions.is_authenticated",
    # Dotted path to callable(request, session_id) -> bool, deciding which sessions a request
    # may touch. Default: the session's user_id is the requesting user's (or staff: see below).
    # None: any session, for single-user hosts only.
    "WA_OUTBOX_SESSION_PERMISSION": "wa_outbox.permissions.owns_session",
    # Dotted path to callable(request) -> bool: may this request touch every user's sessions
    # and name another userId in session/init? None: nobody (API keys mapped to "all" still may).
    "WA_OUTBOX_ACT_FOR_OTHERS": "wa_outbox.permissions.is_staff",
    # Service callers' API keys, sent in the X-Api-Key header: a list of
    # {"name": str, "hash": "sha256:<hex>", "users": [user ids] | "all"}. Hashes only, never keys.
    "WA_OUTBOX_API_KEYS": [],
    # Optional libpq URL for the LISTEN connections, e.g. to bypass PgBouncer in transaction mode
    # (LISTEN needs a session). None: the WA_OUTBOX_DATABASE connection's parameters.
    "WA_OUTBOX_LISTEN_DSN": None,
}

_SECONDS = (
    "WA_OUTBOX_QR_TIMEOUT",
    "WA_OUTBOX_SEND_TIMEOUT",
    "WA_OUTBOX_INIT_TIMEOUT",
    "WA_OUTBOX_POLL_INTERVAL",
)


def get(name: str) -> Any:
    value = getattr(settings, name, DEFAULTS[name])
    if name in _SECONDS:
        return seconds(name, value)
    return value


def seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ImproperlyConfigured(f"{name} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def callable_setting(name: str) -> Callable[..., Any] | None:
    value = get(name)
    if value is None or callable(value):
        return value
    try:
        return import_string(value)
    except ImportError as exc:
        raise ImproperlyConfigured(f"{name}: cannot import {value!r}: {exc}") from exc
