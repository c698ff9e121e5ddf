"""The seed's endpoints as plain Django views returning JSON.

Bodies and answers use the seed's camelCase names (sessionId, userId, mediaUrl, …). Errors are
{"success": false, "error": "...", "code": "..."} with a fitting HTTP status (400 bad input and
`field`, 403 forbidden, 404 unknown session, 409 conflict, 502 session failed, 504 timeout).
"""

from __future__ import annotations

import functools
import json
import logging

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from . import conf
from .exceptions import InvalidInputError, WhatsAppServiceError
from .models import Message
from .services import WhatsAppService

logger = logging.getLogger(__name__)


class _Forbidden(Exception):
    pass


def _check_session(request: HttpRequest, session_id: str) -> None:
    allowed = conf.callable_setting("WA_OUTBOX_SESSION_PERMISSION")
    if allowed is not None and not allowed(request, session_id):
        raise _Forbidden(f"not allowed to use session {session_id!r}")


def _json_view(view):
    """Permission check, JSON body parsing and error mapping shared by every endpoint.

    Non-atomic even under ATOMIC_REQUESTS: the runner must see the rows these views write
    before the view waits for its answer.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        permission = conf.callable_setting("WA_OUTBOX_PERMISSION")
        if permission is not None and not permission(request):
            return JsonResponse(
                {"success": False, "error": "forbidden", "code": "forbidden"}, status=403
            )
        try:
            return JsonResponse(view(request, *args, **kwargs))
        except _Forbidden as exc:
            return JsonResponse(
                {"success": False, "error": str(exc), "code": "forbidden"}, status=403
            )
        except WhatsAppServiceError as exc:
            if exc.http_status >= 500:
                logger.warning("wa_outbox %s: %s", request.path, exc)
            return JsonResponse(exc.as_dict(), status=exc.http_status)

    return transaction.non_atomic_requests(wrapper)


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
    """POST {"sessionId", "userId"?, "pairPhone"?}; userId defaults to the logged-in user."""
    data = _body(request)
    session_id = _required(data, "sessionId")
    _check_session(request, session_id)
    user_id = data.get("userId")
    if (
        user_id is None
        and getattr(request, "user", None) is not None
        and request.user.is_authenticated
    ):
        user_id = request.user.pk
    return WhatsAppService().init_session(user_id, session_id, pair_phone=data.get("pairPhone"))


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
    service = WhatsAppService()
    if conf.get("WA_OUTBOX_SESSION_PERMISSION"):
        session_id = (
            Message.objects.using(service.using)
            .filter(pk=message_id)
            .values_list("session_id", flat=True)
            .first()
        )
        if session_id is not None:
            _check_session(request, session_id)
    return service.get_message_status(message_id)
