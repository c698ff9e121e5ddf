"""Admin pages to inspect sessions, messages, commands and events. Runner-owned columns are read-only;
events are entirely read-only. The QR payload is never shown (it is a credential)."""

from django.contrib import admin
from django.utils.html import format_html

from .models import (
    Command,
    CommandStatus,
    Event,
    ListenerCursor,
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


@admin.register(ListenerCursor)
class ListenerCursorAdmin(admin.ModelAdmin):
    list_display = ("name", "last_event_id", "updated_at")
