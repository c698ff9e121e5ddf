"""The "link your WhatsApp" page: the logged-in user's own session, and nobody else's.

Include it with `path("whatsapp/", include("wa_outbox.link_urls"))`. The page shows the user's
QR code (replaced as it rotates, by a small JSON poll), or a pairing-code form; then the linked
number and name, with disconnect and unlink buttons. Every action is a plain form POST that
redirects back, so the page works without JavaScript too; the script only refreshes the state.

Templates (override any of them in your own templates directory):
- wa_outbox/link_page.html: the page; extends wa_outbox/base.html (a bare HTML document:
  override it to put the page in your site's layout).
- wa_outbox/link_state.html: the part that changes (QR, code, number, buttons), rendered both
  into the page and into the poll's JSON.
- wa_outbox/link.js: the poll script, served by the `link-script` URL (same origin, so a
  Content-Security-Policy of script-src 'self' allows it).
"""

from __future__ import annotations

import hashlib
import secrets

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from .exceptions import InvalidInputError
from .models import DesiredState, ErrorCode, Session, SessionStatus
from .services import READY_STATUSES, WhatsAppService

# How often the page asks for the state (ms): often while something is about to change (a QR
# rotates about every 20 s, a scan is answered within seconds), rarely otherwise (to notice an
# unlink made from the phone).
POLL_FAST_MS = 1500
POLL_SLOW_MS = 15000


def user_session(user_id: int, using: str | None = None) -> Session | None:
    """The session the page shows for `user_id`: their oldest one. Host code that sends for the
    user finds its id the same way."""
    return (
        Session.objects.using(using or WhatsAppService().using)
        .filter(user_id=user_id)
        .order_by("created_at", "id")
        .first()
    )


def new_session_id(user_id: int) -> str:
    # A random part, so another user cannot take the id first (ids are one namespace, and
    # init with a taken id is refused).
    return f"user_{user_id}_{secrets.token_hex(4)}"


def link_state(session: Session | None) -> str:
    """One of: unlinked, starting, qr, pairing, connected, stopped, logged_out, expired, failed."""
    if session is None:
        return "unlinked"
    status = session.status
    if status in READY_STATUSES and session.desired_state == DesiredState.RUNNING:
        return "connected"
    if DesiredState.LOGGED_OUT in (session.desired_state, status):
        return "logged_out"
    if status == SessionStatus.FAILED:
        return "expired" if session.error_code == ErrorCode.QR_TIMEOUT else "failed"
    if DesiredState.STOPPED in (session.desired_state, status):
        return "stopped"
    if status == SessionStatus.QR_PENDING and session.qr_image:
        return "qr"
    if status == SessionStatus.PAIRING and session.pairing_code:
        return "pairing"
    return "starting"


def _state_context(request: HttpRequest, session: Session | None) -> dict:
    state = link_state(session)
    return {
        "state": state,
        "session": session,
        "poll_ms": POLL_FAST_MS if state in ("starting", "qr", "pairing") else POLL_SLOW_MS,
        "urls": {
            name: reverse(f"wa_outbox_link:link-{name}")
            for name in ("state", "start", "disconnect", "logout")
        },
    }


def _state_key(context: dict) -> str:
    """Changes whenever what the state template shows changes (so the script re-renders only
    then, and never wipes a half-typed phone number)."""
    s = context["session"]
    parts = [context["state"]]
    if s is not None:
        parts += [s.qr_image or "", s.pairing_code or "", s.phone_number or "", s.push_name or ""]
        parts += [s.error_code or "", s.error or ""]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


class _LoginRequired(View):
    @method_decorator(never_cache)
    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            if request.method == "GET" and not request.headers.get("Accept", "").startswith(
                "application/json"
            ):
                return redirect_to_login(request.get_full_path())
            return JsonResponse(
                {"success": False, "error": "forbidden", "code": "forbidden"}, status=403
            )
        return super().dispatch(request, *args, **kwargs)

    def session(self) -> Session | None:
        return user_session(self.request.user.pk)


class LinkPageView(_LoginRequired):
    """GET: the page."""

    template_name = "wa_outbox/link_page.html"

    def get(self, request):
        context = _state_context(request, self.session())
        context["state_key"] = _state_key(context)
        return HttpResponse(render_to_string(self.template_name, context, request=request))


class LinkStateView(_LoginRequired):
    """GET: {"state", "key", "html", "pollMs"} for the poll script."""

    template_name = "wa_outbox/link_state.html"

    def get(self, request):
        context = _state_context(request, self.session())
        key = _state_key(context)
        context["state_key"] = key
        return JsonResponse(
            {
                "state": context["state"],
                "key": key,
                "pollMs": context["poll_ms"],
                "html": render_to_string(self.template_name, context, request=request),
            }
        )


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class LinkStartView(_LoginRequired):
    """POST: start linking, by QR code, or by pairing code when `pair_phone` is given."""

    def post(self, request):
        session = self.session()
        session_id = session.id if session else new_session_id(request.user.pk)
        phone = (request.POST.get("pair_phone") or "").strip()
        phone = "".join(ch for ch in phone if ch.isdigit() or ch == "+") or None
        try:
            WhatsAppService().start_session(request.user.pk, session_id, pair_phone=phone)
        except InvalidInputError:
            messages.error(
                request,
                "Enter your phone number with its country code, digits only.",
                fail_silently=True,
            )
        return HttpResponseRedirect(reverse("wa_outbox_link:link"), status=303)


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class _SetDesiredView(_LoginRequired):
    action = ""

    def post(self, request):
        session = self.session()
        if session is not None:
            getattr(WhatsAppService(), self.action)(session.id)
        return HttpResponseRedirect(reverse("wa_outbox_link:link"), status=303)


class LinkDisconnectView(_SetDesiredView):
    """POST: close the browser, keep the login (reconnect without a new scan)."""

    action = "disconnect"


class LinkLogoutView(_SetDesiredView):
    """POST: unlink the device; a new scan is needed to link again."""

    action = "logout"


@method_decorator(never_cache, name="dispatch")
class LinkScriptView(View):
    def get(self, request):
        return HttpResponse(
            render_to_string("wa_outbox/link.js"),
            content_type="text/javascript; charset=utf-8",
        )
