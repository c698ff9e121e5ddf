"""Who may use the views, and which sessions a request may touch.

Three settings decide it (each a dotted path or the callable itself):

- WA_OUTBOX_PERMISSION, callable(request) -> bool: may this request use the views at all?
  Default: a logged-in user. A request carrying a valid API key passes without it.
- WA_OUTBOX_SESSION_PERMISSION, callable(request, session_id) -> bool: may it touch this
  session? Default `owns_session`: the session's `user_id` is the requesting user's id (or in
  the API key's users), unless ACT_FOR_OTHERS says the request may touch any. A refusal is
  answered exactly like an unknown session, so nobody can probe which session ids exist.
- WA_OUTBOX_ACT_FOR_OTHERS, callable(request) -> bool: may this request touch any session and
  name another `userId` in session/init? Default `is_staff`.

API keys (WA_OUTBOX_API_KEYS) are for service callers that still need HTTP (a worker, another
backend). They are stored as sha256 hashes, compared in constant time, and each one is mapped to
the user ids whose sessions it may touch, or "all". `WhatsAppService` (Python calls in the
host's own code) is not restricted by any of this.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from . import conf

API_KEY_HEADER = "X-Api-Key"
_HASH_PREFIX = "sha256:"


def is_authenticated(request) -> bool:
    if api_key_of(request) is not None:
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated)


def allow_any(request) -> bool:
    """For hosts that authenticate in front of Django (or in tests). Use with care."""
    return True


def is_staff(request) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)


def owns_session(request, session_id: str) -> bool:
    """The default WA_OUTBOX_SESSION_PERMISSION: the session exists and belongs to the caller.

    "Belongs" is `wa_session.user_id`: the logged-in user's pk, or one of the API key's users.
    Requests allowed to act for others (staff by default) and "all" keys may touch any session.
    """
    key = api_key_of(request)
    if key is not None:
        if key.all_users:
            return True
    elif may_act_for_others(request):
        return True
    from .models import Session
    from .services import WhatsAppService

    owner = (
        Session.objects.using(WhatsAppService().using)
        .filter(pk=session_id)
        .values_list("user_id", flat=True)
        .first()
    )
    return owner is not None and may_act_as(request, owner)


def may_act_for_others(request) -> bool:
    key = api_key_of(request)
    if key is not None:
        return key.all_users
    check = conf.callable_setting("WA_OUTBOX_ACT_FOR_OTHERS")
    return bool(check is not None and check(request))


def may_act_as(request, user_id) -> bool:
    """May this request create or use sessions owned by `user_id`?"""
    if user_id is None:
        return may_act_for_others(request)
    key = api_key_of(request)
    if key is not None:
        return key.all_users or user_id in key.users
    if may_act_for_others(request):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.pk == user_id)


# ---- API keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    """A configured key that matched: its name (for logs) and what it may touch."""

    name: str
    all_users: bool
    users: frozenset[int]


def hash_api_key(key: str) -> str:
    """The value to store in WA_OUTBOX_API_KEYS for `key`.

    A plain sha256 is enough here: the keys are long random strings (see `new_api_key`), so
    there is nothing to brute-force, and a slow password hash would cost every request.
    """
    return _HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return "wao_" + secrets.token_urlsafe(32)


def _configured_keys() -> list[tuple[bytes, ApiKey]]:
    entries = conf.get("WA_OUTBOX_API_KEYS") or []
    if not isinstance(entries, (list, tuple)):
        raise ImproperlyConfigured("WA_OUTBOX_API_KEYS must be a list of dicts")
    keys = []
    for i, entry in enumerate(entries):
        where = f"WA_OUTBOX_API_KEYS[{i}]"
        if not isinstance(entry, dict):
            raise ImproperlyConfigured(f"{where} must be a dict, not {type(entry).__name__}")
        digest = entry.get("hash")
        if (
            not isinstance(digest, str)
            or not digest.startswith(_HASH_PREFIX)
            or len(digest) != len(_HASH_PREFIX) + 64
        ):
            raise ImproperlyConfigured(
                f"{where}['hash'] must be 'sha256:<64 hex digits>' "
                "(wa_outbox.permissions.hash_api_key(key), or manage.py wa_outbox_api_key)"
            )
        try:
            raw = bytes.fromhex(digest[len(_HASH_PREFIX) :])
        except ValueError:
            raise ImproperlyConfigured(f"{where}['hash'] is not hexadecimal") from None
        users = entry.get("users")
        if users == "all":
            key = ApiKey(str(entry.get("name", i)), True, frozenset())
        elif isinstance(users, (list, tuple, set, frozenset)) and all(
            isinstance(u, int) and not isinstance(u, bool) for u in users
        ):
            key = ApiKey(str(entry.get("name", i)), False, frozenset(users))
        else:
            raise ImproperlyConfigured(
                f"{where}['users'] must be \"all\" or a list of user ids, not {users!r}"
            )
        keys.append((raw, key))
    return keys


def authenticate_api_key(presented: str) -> ApiKey | None:
    """The configured key whose hash matches `presented`, or None.

    Every configured hash is compared, in constant time, whatever matched: how long this takes
    says nothing about which key (or how much of one) was right.
    """
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for raw, key in _configured_keys():
        if hmac.compare_digest(raw, digest) and found is None:
            found = key
    return found


def api_key_of(request) -> ApiKey | None:
    """The API key the views authenticated for this request (set by the views' wrapper)."""
    return getattr(request, "wa_outbox_api_key", None)
