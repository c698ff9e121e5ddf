"""The seed's endpoints as plain Django views returning JSON.

Bodies and answers use the seed's camelCase names (sessionId, userId, mediaUrl, …). Errors are
{"success": false, "error": "...", "code": "..."} with a fitting HTTP status (400 bad input and
`field`, 401 bad API key, 403 forbidden, 404 unknown or not the caller's, 409 conflict, 502
session failed, 504 timeout).
"""

from __future__ import annotations

import functools
import json
import logging

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import conf, permissions
from .exceptions import (
    CommandNotFoundError,
    InvalidInputError,
    MessageNotFoundError,
    SessionConflictError,
    SessionNotFoundError,
    WhatsAppServiceError,
)
from .models import Command, CommandStatus, Message, Session
from .services import WhatsAppService, validate_session_id, validate_user_id

logger = logging.getLogger(__name__)


class _Forbidden(Exception):
    pass


def _may_touch(request: HttpRequest, session_id: str) -> bool:
    allowed = conf.callable_setting("WA_OUTBOX_SESSION_PERMISSION")
    return allowed is None or bool(allowed(request, session_id))


def _check_session(request: HttpRequest, session_id: str) -> None:
    """Refuse a session the request may not touch exactly as if it did not exist: same status,
    same body. Otherwise a 403 would tell a caller which other users' session ids exist."""
    session_id = validate_session_id(session_id)
    if not _may_touch(request, session_id):
        raise SessionNotFoundError(session_id)


def _forbidden(error: str = "forbidden") -> JsonResponse:
    return JsonResponse({"success": False, "error": error, "code": "forbidden"}, status=403)


def _csrf_refusal(request: HttpRequest):
    """Django's CSRF check for browser (cookie) requests, as the middleware would have done.

    The views are csrf_exempt so that API-key callers, which send no cookie and so cannot be
    forged by another site, need no token; every other request is checked here instead, when
    the host uses CsrfViewMiddleware at all."""
    if "django.middleware.csrf.CsrfViewMiddleware" not in settings.MIDDLEWARE:
        return None
    return CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})


def _json_view(view):
    """Authentication, permission check, JSON body parsing and error mapping shared by every
    endpoint.

    A request with an X-Api-Key header is authenticated by that key alone (a wrong or revoked
    key is refused, whatever cookie comes with it); any other request must pass
    WA_OUTBOX_PERMISSION and Django's CSRF check.

    Non-atomic even under ATOMIC_REQUESTS: the runner must see the rows these views write
    before the view waits for its answer.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        presented = request.headers.get(permissions.API_KEY_HEADER)
        if presented is not None:
            key = permissions.authenticate_api_key(presented)
            if key is None:
                return JsonResponse(
                    {"success": False, "error": "invalid API key", "code": "invalid_api_key"},
                    status=401,
                )
            request.wa_outbox_api_key = key
        else:
            permission = conf.callable_setting("WA_OUTBOX_PERMISSION")
            if permission is not None and not permission(request):
                return _forbidden()
            refusal = _csrf_refusal(request)
            if refusal is not None:
                return refusal
        try:
            answer = view(request, *args, **kwargs)
            if isinstance(answer, JsonResponse):
                return answer
            return JsonResponse(answer)
        except _Forbidden as exc:
            return _forbidden(str(exc))
        except WhatsAppServiceError as exc:
            if exc.http_status >= 500:
                logger.warning("wa_outbox %s: %s", request.path, exc)
            return JsonResponse(exc.as_dict(), status=exc.http_status)

    return csrf_exempt(transaction.non_atomic_requests(wrapper))


def _body(request: HttpRequest) -> dict:
    """JSON object body, or form/multipart fields (send-media uploads a file)."""
    content_type = request.content_type or ""
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return request.POST.dict()
    if not request.body:
        return {}
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError("body", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidInputError("body", "expected a JSON object")
    return data


def _required(data: dict, key: str):
    if data.get(key) in (None, ""):
        raise InvalidInputError(key, "is required")
    return data[key]


@require_POST
@_json_view
def session_init(request: HttpRequest):
    """POST {"sessionId", "userId"?, "pairPhone"?}.

    The owner of a new session is the logged-in user. `userId` names another owner, and only
    callers allowed to act for that user may give it (staff, or an API key mapped to it). An
    existing session may be (re)started only by those who may touch it.
    """
    data = _body(request)
    service = WhatsAppService()
    session_id = validate_session_id(_required(data, "sessionId"))
    user_id = data.get("userId")
    if user_id is not None:
        user_id = validate_user_id(user_id)
        if not permissions.may_act_as(request, user_id):
            raise _Forbidden("not allowed to act for another user")
    existing = Session.objects.using(service.using).filter(pk=session_id).exists()
    if existing:
        if not _may_touch(request, session_id):
            # Session ids are one namespace, so a taken id cannot pass for a free one; say only
            # that it is taken, never whose it is.
            raise SessionConflictError(
                f"session id {session_id!r} is not available; choose another session_id"
            )
    elif user_id is None:
        key = permissions.api_key_of(request)
        if key is not None:
            if not key.all_users:
                raise InvalidInputError("userId", "is required with an API key limited to users")
        elif getattr(request, "user", None) is not None and request.user.is_authenticated:
            user_id = request.user.pk
    return service.init_session(user_id, session_id, pair_phone=data.get("pairPhone"))


@require_GET
@_json_view
def session_status(request: HttpRequest, session_id: str):
    _check_session(request, session_id)
    return WhatsAppService().get_session_status(session_id)


@require_POST
@_json_view
def session_disconnect(request: HttpRequest):
    """POST {"sessionId"}: stop the browser, keep the login."""
    session_id = _required(_body(request), "sessionId")
    _check_session(request, session_id)
    return WhatsAppService().disconnect(session_id)


@require_POST
@_json_view
def session_logout(request: HttpRequest):
    """POST {"sessionId"}: unlink the device (a new QR scan is needed afterwards)."""
    session_id = _required(_body(request), "sessionId")
    _check_session(request, session_id)
    return WhatsAppService().logout(session_id)


@require_POST
@_json_view
def send_text(request: HttpRequest):
    """POST {"sessionId", "recipient", "message", "idempotencyKey"?}."""
    data = _body(request)
    session_id = _required(data, "sessionId")
    _check_session(request, session_id)
    return WhatsAppService().send_text_message(
        session_id,
        _required(data, "recipient"),
        _required(data, "message"),
        idempotency_key=data.get("idempotencyKey"),
    )


@require_POST
@_json_view
def send_media(request: HttpRequest):
    """POST JSON {"sessionId", "recipient", "mediaUrl", "caption"?, "mediaType"?}, or multipart
    with the same fields and the media as the `file` part instead of mediaUrl."""
    data = _body(request)
    session_id = _required(data, "sessionId")
    _check_session(request, session_id)
    upload = request.FILES.get("file")
    return WhatsAppService().send_media_message(
        session_id,
        _required(data, "recipient"),
        media_url=data.get("mediaUrl") or None,
        caption=data.get("caption") or None,
        media_type=data.get("mediaType") or None,
        file=upload,
        mimetype=getattr(upload, "content_type", None) if upload else None,
        idempotency_key=data.get("idempotencyKey"),
    )


@require_GET
@_json_view
def message_status(request: HttpRequest, message_id: int):
    """A message of a session the request may not touch answers like an unknown message."""
    service = WhatsAppService()
    session_id = (
        Message.objects.using(service.using)
        .filter(pk=message_id)
        .values_list("session_id", flat=True)
        .first()
    )
    if session_id is None or not _may_touch(request, session_id):
        raise MessageNotFoundError(message_id)
    return service.get_message_status(message_id)


# ---- commands (wa_command) as views (issue 14) ---------------------------------------------------
#
# Each inserts one wa_command row for a session the request may touch and waits, bounded by
# WA_OUTBOX_SEND_TIMEOUT, for the runner to finish it: 200 with the service's answer once the
# command is done or failed ({"success", "commandId", "status", "result", and "errorCode" /
# "error" when failed}); 202 with the same shape (status "queued" or "running") when the wait ran
# out, to be followed with GET command/status/<commandId>. Bad arguments are refused before any
# row is written (400, "field"), as the send views refuse theirs.


def _command_answer(answer: dict) -> JsonResponse:
    finished = answer.get("status") in (CommandStatus.DONE, CommandStatus.FAILED)
    return JsonResponse(answer, status=200 if finished else 202)


def _session_of(request: HttpRequest, data: dict) -> str:
    session_id = _required(data, "sessionId")
    _check_session(request, session_id)
    return session_id


def _int_arg(data: dict, key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(key, f"expected an integer, got {value!r}")
    return value


def _list_arg(data: dict, key: str) -> list:
    value = _required(data, key)
    if not isinstance(value, list):
        raise InvalidInputError(key, "expected a JSON list")
    return value


@require_POST
@_json_view
def command_mark_read(request: HttpRequest):
    """POST {"sessionId", "chat"}: read receipts for the chat's unread messages."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(WhatsAppService().mark_read(session_id, _required(data, "chat")))


@require_POST
@_json_view
def command_typing(request: HttpRequest):
    """POST {"sessionId", "chat", "state"?}: state "typing" (default), "recording" or
    "paused"."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(
        WhatsAppService().set_typing(
            session_id, _required(data, "chat"), data.get("state", "typing")
        )
    )


@require_POST
@_json_view
def command_check_numbers(request: HttpRequest):
    """POST {"sessionId", "numbers": [...]}: which of 1 to 100 numbers are on WhatsApp."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(WhatsAppService().check_numbers(session_id, _list_arg(data, "numbers")))


@require_POST
@_json_view
def command_contact_info(request: HttpRequest):
    """POST {"sessionId", "contact"}: what the page knows about a contact."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(
        WhatsAppService().get_contact_info(session_id, _required(data, "contact"))
    )


@require_POST
@_json_view
def command_profile_picture(request: HttpRequest):
    """POST {"sessionId", "contact"}: a contact's or group's picture URL and its expiry."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(
        WhatsAppService().get_profile_picture(session_id, _required(data, "contact"))
    )


@require_POST
@_json_view
def command_chats(request: HttpRequest):
    """POST {"sessionId", "limit"?}: the page's most recent chats (limit 1 to 200, default 50)."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(WhatsAppService().get_chats(session_id, _int_arg(data, "limit", 50)))


@require_POST
@_json_view
def command_history(request: HttpRequest):
    """POST {"sessionId", "chat", "limit"?}: a chat's last messages (limit 1 to 500)."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(
        WhatsAppService().get_chat_history(
            session_id, _required(data, "chat"), _int_arg(data, "limit", 50)
        )
    )


@require_POST
@_json_view
def group_create(request: HttpRequest):
    """POST {"sessionId", "subject", "participants": [...]}: create a group, exactly once."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(
        WhatsAppService().create_group(
            session_id, _required(data, "subject"), _list_arg(data, "participants")
        )
    )


@require_POST
@_json_view
def group_info(request: HttpRequest):
    """POST {"sessionId", "group"}: the group's subject, owner and participants."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(WhatsAppService().get_group_info(session_id, _required(data, "group")))


@require_POST
@_json_view
def group_invite_link(request: HttpRequest):
    """POST {"sessionId", "group"}: the group's invite link (the account must be an admin)."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(
        WhatsAppService().get_group_invite_link(session_id, _required(data, "group"))
    )


@require_POST
@_json_view
def group_leave(request: HttpRequest):
    """POST {"sessionId", "group"}: leave the group, exactly once."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(WhatsAppService().leave_group(session_id, _required(data, "group")))


@require_POST
@_json_view
def group_participants(request: HttpRequest):
    """POST {"sessionId", "group", "action", "participants": [...]}: add, remove, promote or
    demote, exactly once."""
    data = _body(request)
    session_id = _session_of(request, data)
    return _command_answer(
        WhatsAppService().update_group_participants(
            session_id,
            _required(data, "group"),
            _required(data, "action"),
            _list_arg(data, "participants"),
        )
    )


@require_GET
@_json_view
def command_status(request: HttpRequest, command_id: int):
    """A command of a session the request may not touch answers like an unknown command."""
    service = WhatsAppService()
    session_id = (
        Command.objects.using(service.using)
        .filter(pk=command_id)
        .values_list("session_id", flat=True)
        .first()
    )
    if session_id is None or not _may_touch(request, session_id):
        raise CommandNotFoundError(command_id)
    return service.get_command_status(command_id)


def _target(data: dict):
    """The message a reaction, edit, delete or forward acts on: exactly one of `messageId` (one
    of the session's Message ids, a number) or `waMessageId` (a WhatsApp message id string,
    e.g. an incoming message's from its Event)."""
    ours, theirs = data.get("messageId"), data.get("waMessageId")
    if (ours is None) == (theirs is None):
        raise InvalidInputError("messageId", "give exactly one of messageId or waMessageId")
    if ours is not None:
        if isinstance(ours, bool) or not isinstance(ours, int):
            raise InvalidInputError("messageId", f"expected a Message id (a number), got {ours!r}")
        return ours
    if not isinstance(theirs, str):
        raise InvalidInputError("waMessageId", f"expected a WhatsApp message id, got {theirs!r}")
    return theirs


@require_POST
@_json_view
def send_location(request: HttpRequest):
    """POST {"sessionId", "recipient", "latitude", "longitude", "name"?, "address"?,
    "idempotencyKey"?}."""
    data = _body(request)
    session_id = _session_of(request, data)
    return WhatsAppService().send_location(
        session_id,
        _required(data, "recipient"),
        _required(data, "latitude"),
        _required(data, "longitude"),
        name=data.get("name"),
        address=data.get("address"),
        idempotency_key=data.get("idempotencyKey"),
    )


@require_POST
@_json_view
def send_contact(request: HttpRequest):
    """POST {"sessionId", "recipient", "vcards" (one vCard string or a list of them),
    "idempotencyKey"?}."""
    data = _body(request)
    session_id = _session_of(request, data)
    return WhatsAppService().send_contact(
        session_id,
        _required(data, "recipient"),
        _required(data, "vcards"),
        idempotency_key=data.get("idempotencyKey"),
    )


@require_POST
@_json_view
def send_poll(request: HttpRequest):
    """POST {"sessionId", "recipient", "question", "choices" (2 to 12), "selectableCount"?
    (1 by default, 0 = any number), "idempotencyKey"?}."""
    data = _body(request)
    session_id = _session_of(request, data)
    return WhatsAppService().send_poll(
        session_id,
        _required(data, "recipient"),
        _required(data, "question"),
        _required(data, "choices"),
        data.get("selectableCount", 1),
        idempotency_key=data.get("idempotencyKey"),
    )


@require_POST
@_json_view
def send_sticker(request: HttpRequest):
    """POST JSON {"sessionId", "recipient", "mediaUrl", "replyTo"?, "idempotencyKey"?}, or
    multipart with the same fields and the image as the `file` part instead of mediaUrl: a PNG,
    JPEG, GIF or WebP the page turns into a 512x512 WebP sticker."""
    data = _body(request)
    session_id = _session_of(request, data)
    upload = request.FILES.get("file")
    return WhatsAppService().send_sticker(
        session_id,
        _required(data, "recipient"),
        data.get("mediaUrl") or None,
        file=upload,
        mimetype=getattr(upload, "content_type", None) if upload else None,
        reply_to=data.get("replyTo") or None,
        idempotency_key=data.get("idempotencyKey"),
    )


@require_POST
@_json_view
def react(request: HttpRequest):
    """POST {"sessionId", "recipient", "messageId" | "waMessageId", "emoji" ("" removes ours),
    "idempotencyKey"?}."""
    data = _body(request)
    session_id = _session_of(request, data)
    emoji = data.get("emoji")
    if emoji is None:
        raise InvalidInputError("emoji", "is required ('' removes the reaction)")
    return WhatsAppService().react(
        session_id,
        _required(data, "recipient"),
        _target(data),
        emoji,
        idempotency_key=data.get("idempotencyKey"),
    )


@require_POST
@_json_view
def edit_message(request: HttpRequest):
    """POST {"sessionId", "recipient", "messageId" | "waMessageId" (a message we sent within
    WhatsApp's 15 minutes), "message" (the new text), "idempotencyKey"?}."""
    data = _body(request)
    session_id = _session_of(request, data)
    return WhatsAppService().edit_message(
        session_id,
        _required(data, "recipient"),
        _target(data),
        _required(data, "message"),
        idempotency_key=data.get("idempotencyKey"),
    )


@require_POST
@_json_view
def delete_message(request: HttpRequest):
    """POST {"sessionId", "recipient", "messageId" | "waMessageId" (a message we sent),
    "idempotencyKey"?}: delete for everyone."""
    data = _body(request)
    session_id = _session_of(request, data)
    return WhatsAppService().delete_message(
        session_id,
        _required(data, "recipient"),
        _target(data),
        idempotency_key=data.get("idempotencyKey"),
    )


@require_POST
@_json_view
def forward_message(request: HttpRequest):
    """POST {"sessionId", "recipient" (the chat to forward to), "messageId" | "waMessageId",
    "idempotencyKey"?}."""
    data = _body(request)
    session_id = _session_of(request, data)
    return WhatsAppService().forward_message(
        session_id,
        _required(data, "recipient"),
        _target(data),
        idempotency_key=data.get("idempotencyKey"),
    )
