"""Admin pages to inspect sessions, messages, commands, events and incoming media. Runner-owned columns are read-only;
events are entirely read-only. The QR payload is never shown (it is a credential)."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import content_disposition_header

from .models import (
    Command,
    CommandStatus,
    Event,
    ListenerCursor,
    Media,
    Message,
    MessageStatus,
    Session,
)


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "user_id",
        "desired_state",
        "status",
        "phone_number",
        "error_code",
        "updated_at",
    )
    list_filter = ("status", "desired_state")
    search_fields = ("id", "phone_number", "push_name")
    # qr_code (the raw payload) is left out on purpose; qr_image shows the scannable picture.
    exclude = ("qr_code", "qr_image")
    readonly_fields = tuple(
        f for f in Session.RUNNER_FIELDS if f not in ("qr_code", "qr_image")
    ) + ("qr",)

    def get_fields(self, request, obj=None):
        if obj is None:
            # Runner-owned columns have no value before the insert; show only what a caller sets.
            return ("id",) + Session.CALLER_FIELDS
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("id",) + self.readonly_fields

    @admin.display(description="QR code")
    def qr(self, obj):
        if (
            obj
            and obj.status == "qr_pending"
            and obj.qr_image
            and obj.qr_image.startswith("data:image/png;base64,")
        ):
            return format_html(
                '<img src="{}" width="264" height="264" alt="QR code">', obj.qr_image
            )
        return "-"


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "session", "recipient", "kind", "status", "error_code", "created_at")
    list_filter = ("status", "kind")
    search_fields = ("recipient", "wa_message_id", "idempotency_key")
    raw_id_fields = ("session",)
    exclude = ("media_data",)
    actions = ("cancel_queued",)

    ADD_FIELDS = (
        "session",
        "recipient",
        "kind",
        "body",
        "media_url",
        "media_mime",
        "media_filename",
        "options",
        "idempotency_key",
        "priority",
        "not_before",
        "max_attempts",
    )

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.ADD_FIELDS
        return super().get_fields(request, obj)

    def has_change_permission(self, request, obj=None):
        # Messages are not edited after insert (the runner may be sending one right now); the
        # change page is a read-only view, and the cancel action covers what a caller may do.
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    @admin.action(description="Cancel selected messages that are still queued")
    def cancel_queued(self, request, queryset):
        n = queryset.filter(status=MessageStatus.QUEUED).update(status=MessageStatus.CANCELLED)
        self.message_user(request, f"{n} message(s) cancelled")


@admin.register(Command)
class CommandAdmin(admin.ModelAdmin):
    """wa_command rows: added like messages (session, kind, args), then read-only while a runner
    works on them; a queued one can be cancelled."""

    list_display = ("id", "session", "kind", "status", "error_code", "created_at", "finished_at")
    list_filter = ("status", "kind")
    search_fields = ("session__id", "idempotency_key")
    raw_id_fields = ("session",)
    actions = ("cancel_queued",)

    ADD_FIELDS = ("session", "kind", "args", "idempotency_key", "not_before")

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.ADD_FIELDS
        return super().get_fields(request, obj)

    def has_change_permission(self, request, obj=None):
        # Like messages: a runner may be running the command right now.
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    @admin.action(description="Cancel selected commands that are still queued")
    def cancel_queued(self, request, queryset):
        n = queryset.filter(status=CommandStatus.QUEUED).update(status=CommandStatus.CANCELLED)
        self.message_user(request, f"{n} command(s) cancelled")


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("id", "session", "kind", "message", "wa_message_id", "created_at")
    list_filter = ("kind",)
    search_fields = ("session__id", "wa_message_id")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Media)
class MediaAdmin(admin.ModelAdmin):
    """wa_media rows: read-only. The bytes are never rendered in the page; "download" hands them
    over as an attachment to whoever may view media (the admin's own view permission)."""

    list_display = (
        "id",
        "session",
        "kind",
        "mime",
        "size",
        "short_sha256",
        "error_code",
        "created_at",
        "download",
    )
    list_filter = ("kind", "error_code")
    search_fields = ("session__id", "wa_message_id", "sha256", "filename")
    exclude = ("data",)
    readonly_fields = (
        "session",
        "event",
        "wa_message_id",
        "kind",
        "mime",
        "filename",
        "caption",
        "size",
        "sha256",
        "error_code",
        "error",
        "created_at",
        "download",
    )

    def get_queryset(self, request):
        # Lists and detail pages never load the bytes.
        return super().get_queryset(request).defer("data")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="sha256")
    def short_sha256(self, obj):
        return f"{obj.sha256[:12]}…" if obj.sha256 else "-"

    @admin.display(description="file")
    def download(self, obj):
        if obj is None or obj.pk is None or obj.error_code is not None:
            return "-"
        url = reverse(f"admin:{obj._meta.app_label}_media_download", args=[obj.pk])
        return format_html('<a href="{}">download</a>', url)

    def get_urls(self):
        return [
            path(
                "<int:media_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name=f"{self.model._meta.app_label}_media_download",
            ),
        ] + super().get_urls()

    def download_view(self, request, media_id: int):
        obj = Media.objects.using(self.get_queryset(request).db).filter(pk=media_id).first()
        if obj is None:
            raise Http404("no such media")
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        if obj.data is None:
            raise Http404(f"not stored: {obj.error_code}")
        # Always an attachment, never rendered by the browser under the admin's origin (an SVG or
        # HTML file from a stranger must not run there).
        resp = HttpResponse(bytes(obj.data), content_type="application/octet-stream")
        name = "".join(c for c in (obj.filename or "") if c.isprintable())[:200]
        resp["Content-Disposition"] = content_disposition_header(
            as_attachment=True, filename=name or f"media-{obj.pk}"
        )
        resp["X-Content-Type-Options"] = "nosniff"
        resp["Content-Length"] = str(len(obj.data))
        return resp


@admin.register(ListenerCursor)
class ListenerCursorAdmin(admin.ModelAdmin):
    list_display = ("name", "last_event_id", "updated_at")
