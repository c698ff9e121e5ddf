"""Unmanaged models over the runner's tables (migrations/20261124000001_outbox.sql).

The runner's migrations own these tables; Django never creates or alters them (managed = False).
Columns the database fills carry `db_default`, so Django sends DEFAULT on insert and reads the
value back with RETURNING. Saving an existing row writes only the columns a caller owns: a
full-row UPDATE from a stale instance would overwrite what the runner wrote in between (status,
QR, acks).
"""

from __future__ import annotations

from django.core.validators import MaxLengthValidator, MinLengthValidator, RegexValidator
from django.db import models
from django.db.models.functions import Now

SESSION_ID_RE = r"^[A-Za-z0-9_-]{1,64}$"
PAIR_PHONE_RE = r"^\+?[0-9]{6,15}$"


class DesiredState(models.TextChoices):
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped (browser closed, login kept)"
    LOGGED_OUT = "logged_out", "Logged out (device unlinked)"


class SessionStatus(models.TextChoices):
    NEW = "new", "New"
    STARTING = "starting", "Starting"
    QR_PENDING = "qr_pending", "Waiting for QR scan"
    PAIRING = "pairing", "Waiting for pairing code"
    CONNECTED = "connected", "Connected"
    HIBERNATED = "hibernated", "Hibernated"
    STOPPED = "stopped", "Stopped"
    LOGGED_OUT = "logged_out", "Logged out"
    FAILED = "failed", "Failed"


class MessageKind(models.TextChoices):
    TEXT = "text", "Text"
    IMAGE = "image", "Image"
    VIDEO = "video", "Video"
    AUDIO = "audio", "Audio"
    VOICE = "voice", "Voice note"
    DOCUMENT = "document", "Document"
    LOCATION = "location", "Location"
    CONTACT = "contact", "Contact card"
    POLL = "poll", "Poll"
    REACTION = "reaction", "Reaction"
    EDIT = "edit", "Edit"
    REVOKE = "revoke", "Delete for everyone"
    FORWARD = "forward", "Forward"
    STICKER = "sticker", "Sticker"


class MessageStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    READ = "read", "Read"
    PLAYED = "played", "Played"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class EventKind(models.TextChoices):
    MESSAGE = "message", "Incoming message"
    ACK = "ack", "Ack"
    SESSION_STATUS = "session_status", "Session status"
    REACTION = "reaction", "Reaction"
    POLL_VOTE = "poll_vote", "Poll vote"
    EDIT = "edit", "Edit"
    REVOKE = "revoke", "Revoke"
    CALL = "call", "Call"
    GROUP_UPDATE = "group_update", "Group update"


class ErrorCode(models.TextChoices):
    """The wa_error_code domain, a closed set."""

    INVALID_RECIPIENT = "invalid_recipient"
    NOT_ON_WHATSAPP = "not_on_whatsapp"
    BODY_TOO_LONG = "body_too_long"
    EMPTY_MESSAGE = "empty_message"
    MEDIA_MISSING = "media_missing"
    MEDIA_INVALID_URL = "media_invalid_url"
    MEDIA_FETCH_FAILED = "media_fetch_failed"
    MEDIA_TOO_LARGE = "media_too_large"
    MEDIA_HOST_FORBIDDEN = "media_host_forbidden"
    INVALID_OPTIONS = "invalid_options"
    SESSION_LOGGED_OUT = "session_logged_out"
    SEND_TIMEOUT = "send_timeout"
    SEND_FAILED = "send_failed"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    QR_TIMEOUT = "qr_timeout"
    BROWSER_CRASHED = "browser_crashed"
    BROWSER_START_FAILED = "browser_start_failed"
    PAGE_LOAD_FAILED = "page_load_failed"
    AUTH_RESTORE_FAILED = "auth_restore_failed"
    DEVICE_UNLINKED = "device_unlinked"
    INVALID_PAIR_PHONE = "invalid_pair_phone"
    SESSION_CONFLICT = "session_conflict"
    ACCOUNT_BANNED = "account_banned"
    PROXY_BLOCKED = "proxy_blocked"
    WEB_VERSION_UNSUPPORTED = "web_version_unsupported"
    INVALID_COMMAND = "invalid_command"
    COMMAND_FAILED = "command_failed"
    COMMAND_TIMEOUT = "command_timeout"
    # A group command interrupted that the page could not settle (migrations/20261203000012).
    COMMAND_INTERRUPTED = "command_interrupted"
    # A session's proxy_url the browser cannot use, or a proxy that refused (migrations/20261203000050).
    PROXY_INVALID = "proxy_invalid"
    PROXY_FAILED = "proxy_failed"
    # A sticker from bytes that are no image the page can draw (migrations/20261204000301).
    MEDIA_INVALID = "media_invalid"


class CommandKind(models.TextChoices):
    CHECK_NUMBERS = "check_numbers", "Check numbers"
    MARK_READ = "mark_read", "Mark read"
    PRESENCE = "presence", "Presence"
    # Contacts, pictures, chats and history (migrations/20261203000010/11).
    CONTACT_INFO = "contact_info", "Contact info"
    PROFILE_PICTURE = "profile_picture", "Profile picture"
    CHATS = "chats", "Chats"
    HISTORY = "history", "History"
    # Groups (migrations/20261203000012): group_create and group_leave run exactly once.
    GROUP_CREATE = "group_create", "Group create"
    GROUP_INFO = "group_info", "Group info"
    GROUP_INVITE_LINK = "group_invite_link", "Group invite link"
    GROUP_LEAVE = "group_leave", "Group leave"
    GROUP_PARTICIPANTS = "group_participants", "Group participants"


class CommandStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


#: Command statuses the runner no longer changes.
FINISHED_COMMAND_STATUSES = frozenset({"done", "failed", "cancelled"})


#: Message statuses after which the runner no longer touches the row's sending.
FINISHED_MESSAGE_STATUSES = frozenset(
    {"sent", "delivered", "read", "played", "failed", "cancelled"}
)


class RunnerTableModel(models.Model):
    """Common save() rules for the runner's tables.

    * A new instance is always INSERTed (force_insert): Django's default "UPDATE, then INSERT if
      nothing matched" would, for a caller-chosen primary key such as a session id, overwrite an
      existing row's runner-owned columns with DEFAULT.
    * On insert, None or "" in a NOT NULL column that has a database default means "use the
      default" (what a blank admin form field gives).
    * On update, only CALLER_FIELDS are written unless update_fields says otherwise, and
      update_fields may not name a runner-owned column.
    """

    CALLER_FIELDS: tuple[str, ...] = ()

    class Meta:
        abstract = True

    def save(self, *args, force_insert=False, force_update=False, update_fields=None, **kwargs):
        if self._state.adding and not force_update:
            for field in self._meta.concrete_fields:
                if (
                    field.has_db_default()
                    and not field.null
                    and getattr(self, field.attname) in (None, "")
                ):
                    setattr(self, field.attname, field.get_default())
            force_insert = True
        else:
            if update_fields is None:
                update_fields = self.CALLER_FIELDS
            else:
                owned = set(self.CALLER_FIELDS)
                names = {self._meta.get_field(name).name for name in update_fields}
                foreign = sorted(names - owned)
                if foreign:
                    raise ValueError(
                        f"{type(self).__name__}: {', '.join(foreign)} "
                        f"{'is' if len(foreign) == 1 else 'are'} written by the wa-outbox runner, "
                        f"not by Django (caller fields: {', '.join(owned) or 'none'})"
                    )
            if not update_fields:
                raise ValueError(
                    f"{type(self).__name__} rows are written by the wa-outbox runner only"
                )
        return super().save(
            *args,
            force_insert=force_insert,
            force_update=force_update,
            update_fields=update_fields,
            **kwargs,
        )


class Session(RunnerTableModel):
    """wa_session: one WhatsApp account linked as a device."""

    CALLER_FIELDS = ("user_id", "desired_state", "pair_phone", "proxy_url", "reject_calls")
    RUNNER_FIELDS = (
        "status",
        "qr_code",
        "qr_image",
        "qr_expires_at",
        "pairing_code",
        "phone_number",
        "push_name",
        "error_code",
        "error",
        "runner_id",
        "lease_until",
        "last_active_at",
        "restart_count",
        "last_inbound_at",
        "created_at",
        "updated_at",
    )

    id = models.CharField(
        primary_key=True,
        max_length=64,
        validators=[RegexValidator(SESSION_ID_RE, "1 to 64 letters, digits, _ or -")],
        help_text="Chosen by the caller, e.g. user_123_session.",
    )
    user_id = models.BigIntegerField(null=True, blank=True, db_index=False)
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, db_default="running", blank=True
    )
    status = models.CharField(
        max_length=16, choices=SessionStatus.choices, db_default="new", blank=True
    )
    pair_phone = models.CharField(
        max_length=16,
        null=True,
        blank=True,
        validators=[RegexValidator(PAIR_PHONE_RE, "a phone number, digits with an optional +")],
        help_text="Link by pairing code for this number instead of a QR.",
    )
    proxy_url = models.TextField(
        null=True,
        blank=True,
        validators=[
            RegexValidator(
                r"(?i)^(http|https|socks5)://[^/?#]", "an http://, https:// or socks5:// proxy URL"
            )
        ],
        help_text=(
            "The session's browser connects through this proxy: http(s)://user:password@host:port "
            "or socks5://host:port (no SOCKS credentials). Read when a runner claims the session, "
            "which then seals the password away and leaves user:***@ here; to change the "
            "password or the host, write the whole URL again with its password."
        ),
    )
    reject_calls = models.BooleanField(
        db_default=False,
        blank=True,
        help_text=(
            "The runner declines every incoming call (each call is still recorded as a `call` "
            "event, saying whether it was rejected). Read when a call comes in."
        ),
    )
    qr_code = models.TextField(null=True, blank=True)
    qr_image = models.TextField(null=True, blank=True)
    qr_expires_at = models.DateTimeField(null=True, blank=True)
    pairing_code = models.TextField(null=True, blank=True)
    phone_number = models.TextField(null=True, blank=True)
    push_name = models.TextField(null=True, blank=True)
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices, null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    runner_id = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(db_default=Now(), blank=True)
    restart_count = models.IntegerField(db_default=0, blank=True)
    last_inbound_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The newest incoming message recorded; backfill after a reconnect starts here.",
    )
    created_at = models.DateTimeField(db_default=Now(), blank=True)
    updated_at = models.DateTimeField(db_default=Now(), blank=True)

    class Meta:
        managed = False
        db_table = "wa_session"
        ordering = ["id"]
        verbose_name = "WhatsApp session"

    def save(self, *args, **kwargs):
        # A blank proxy (what the admin's empty text box gives) is no proxy: NULL, which the
        # table's scheme check allows, rather than "", which it refuses.
        if self.proxy_url is not None and not self.proxy_url.strip():
            self.proxy_url = None
        return super().save(*args, **kwargs)

    def __str__(self) -> str:
        return self.id

    @property
    def is_ready(self) -> bool:
        return self.status == SessionStatus.CONNECTED


class Message(RunnerTableModel):
    """wa_message: the outbox. Insert a row to send; the runner fills in the rest."""

    # Nothing: changing a row after insert would race the runner, which may be sending it right
    # now (and deploy/sql/roles.sql lets Django's role update only `status`, to cancel). Use
    # cancel(); set priority, not_before and max_attempts when creating the row.
    CALLER_FIELDS = ()
    RUNNER_FIELDS = (
        "status",
        "attempts",
        "chat_id",
        "wa_message_id",
        "ack",
        "error_code",
        "error",
        "runner_id",
        "sending_at",
        "sent_at",
        "delivered_at",
        "read_at",
        "played_at",
        "finished_at",
        "created_at",
        "updated_at",
    )

    # `generated always as identity`: Django omits an AutoField whose value is None from the
    # INSERT and reads the id back with RETURNING, which is exactly what the column allows.
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(
        Session,
        on_delete=models.DO_NOTHING,  # the database cascades
        db_column="session_id",
        db_constraint=False,
        related_name="messages",
    )
    recipient = models.CharField(
        max_length=128,
        validators=[MinLengthValidator(1), MaxLengthValidator(128)],
        help_text="15551234567, +1 (555) 123-4567, 15551234567@c.us or a …@g.us group.",
    )
    kind = models.CharField(
        max_length=16, choices=MessageKind.choices, db_default="text", blank=True
    )
    body = models.TextField(null=True, blank=True, help_text="Text, or the caption of media.")
    media_url = models.TextField(null=True, blank=True)
    media_data = models.BinaryField(null=True, blank=True)
    media_mime = models.TextField(null=True, blank=True)
    media_filename = models.TextField(null=True, blank=True)
    options = models.JSONField(db_default={}, blank=True)
    idempotency_key = models.TextField(null=True, blank=True, unique=True)
    priority = models.SmallIntegerField(db_default=0, blank=True)
    not_before = models.DateTimeField(db_default=Now(), blank=True)
    status = models.CharField(
        max_length=16, choices=MessageStatus.choices, db_default="queued", blank=True
    )
    attempts = models.IntegerField(db_default=0, blank=True)
    max_attempts = models.IntegerField(db_default=5, blank=True)
    chat_id = models.TextField(null=True, blank=True)
    wa_message_id = models.TextField(null=True, blank=True)
    ack = models.SmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices, null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    runner_id = models.UUIDField(null=True, blank=True)
    sending_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    played_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), blank=True)
    updated_at = models.DateTimeField(db_default=Now(), blank=True)

    class Meta:
        managed = False
        db_table = "wa_message"
        ordering = ["-id"]
        verbose_name = "WhatsApp message"

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} to {self.recipient} ({self.status})"

    def cancel(self) -> bool:
        """Cancel if still queued. Returns whether it was; refreshes `status` either way."""
        done = (
            type(self)
            .objects.using(self._state.db)
            .filter(pk=self.pk, status=MessageStatus.QUEUED)
            .update(status=MessageStatus.CANCELLED)
        )
        self.refresh_from_db(fields=["status", "finished_at", "updated_at"])
        return bool(done)


class Event(RunnerTableModel):
    """wa_event: what flows back from the runner. Read-only for Django."""

    CALLER_FIELDS = ()

    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(
        Session,
        on_delete=models.DO_NOTHING,
        db_column="session_id",
        db_constraint=False,
        related_name="events",
    )
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    message = models.ForeignKey(
        Message,
        on_delete=models.DO_NOTHING,  # the database sets null
        db_column="message_id",
        db_constraint=False,
        null=True,
        blank=True,
        related_name="events",
    )
    wa_message_id = models.TextField(null=True, blank=True)
    payload = models.JSONField(db_default={}, blank=True)
    created_at = models.DateTimeField(db_default=Now(), blank=True)
    updated_at = models.DateTimeField(db_default=Now(), blank=True)

    class Meta:
        managed = False
        db_table = "wa_event"
        ordering = ["-id"]
        verbose_name = "WhatsApp event"

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} ({self.session_id})"

    # -- payload helpers for the typed kinds (README, wa_event) --

    @property
    def call_id(self) -> str | None:
        """A `call` event's call id (also its wa_message_id)."""
        return self._payload_get("call_id", EventKind.CALL)

    @property
    def rejected(self) -> bool | None:
        """A `call` event: whether the runner declined the call (None for other kinds)."""
        return self._payload_get("rejected", EventKind.CALL)

    @property
    def group_id(self) -> str | None:
        """A `group_update` event's group (…@g.us)."""
        return self._payload_get("group_id", EventKind.GROUP_UPDATE)

    @property
    def group_action(self) -> str | None:
        """A `group_update` event's action: add, remove, promote, demote, subject, …"""
        return self._payload_get("action", EventKind.GROUP_UPDATE)

    def _payload_get(self, key: str, kind: str):
        if self.kind != kind or not isinstance(self.payload, dict):
            return None
        return self.payload.get(key)


class MediaKind(models.TextChoices):
    IMAGE = "image", "Image"
    VIDEO = "video", "Video"
    AUDIO = "audio", "Audio"
    VOICE = "voice", "Voice note"
    DOCUMENT = "document", "Document"
    STICKER = "sticker", "Sticker"


class Media(RunnerTableModel):
    """wa_media (migrations/20261204000200_media.sql): a file someone sent to a session,
    downloaded by a runner through the session's page. Read-only for Django. Either `data` (with
    `sha256` and `size`) or no bytes and an `error_code` (media_too_large, media_fetch_failed).
    Fetch `data` only when needed: `Media.objects.defer("data")` for lists."""

    CALLER_FIELDS = ()

    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(
        Session,
        on_delete=models.DO_NOTHING,  # the database cascades
        db_column="session_id",
        db_constraint=False,
        related_name="media",
    )
    event = models.OneToOneField(
        Event,
        on_delete=models.DO_NOTHING,  # the database cascades
        db_column="event_id",
        db_constraint=False,
        related_name="media",
    )
    wa_message_id = models.TextField()
    kind = models.CharField(max_length=16, choices=MediaKind.choices)
    mime = models.TextField(null=True, blank=True)
    filename = models.TextField(null=True, blank=True)
    caption = models.TextField(null=True, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, null=True, blank=True)
    data = models.BinaryField(null=True, blank=True)
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices, null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), blank=True)
    updated_at = models.DateTimeField(db_default=Now(), blank=True)

    class Meta:
        managed = False
        db_table = "wa_media"
        ordering = ["-id"]
        verbose_name = "WhatsApp media"
        verbose_name_plural = "WhatsApp media"

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} ({self.session_id})"

    @property
    def stored(self) -> bool:
        """Whether the bytes are here (else see error_code)."""
        return self.error_code is None


class Command(RunnerTableModel):
    """wa_command (migrations/20261202000005_commands.sql): ask a session's page to do something
    that is not a message. Insert a row; the runner fills in status, result or error."""

    CALLER_FIELDS = ()

    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(
        Session,
        on_delete=models.DO_NOTHING,  # the database cascades
        db_column="session_id",
        db_constraint=False,
        related_name="commands",
    )
    kind = models.CharField(max_length=32, choices=CommandKind.choices)
    args = models.JSONField(db_default={}, blank=True)
    status = models.CharField(
        max_length=16, choices=CommandStatus.choices, db_default="queued", blank=True
    )
    result = models.JSONField(null=True, blank=True)
    error_code = models.CharField(max_length=32, choices=ErrorCode.choices, null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    idempotency_key = models.TextField(null=True, blank=True, unique=True)
    not_before = models.DateTimeField(db_default=Now(), blank=True)
    attempts = models.IntegerField(db_default=0, blank=True)
    runner_id = models.UUIDField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), blank=True)
    updated_at = models.DateTimeField(db_default=Now(), blank=True)

    class Meta:
        managed = False
        db_table = "wa_command"
        ordering = ["-id"]
        verbose_name = "WhatsApp command"

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} ({self.status})"

    def cancel(self) -> bool:
        """Cancel if still queued. Returns whether it was; refreshes `status` either way."""
        done = (
            type(self)
            .objects.using(self._state.db)
            .filter(pk=self.pk, status=CommandStatus.QUEUED)
            .update(status=CommandStatus.CANCELLED)
        )
        self.refresh_from_db(fields=["status", "finished_at", "updated_at"])
        return bool(done)


class ListenerCursor(models.Model):
    """The last wa_event id a `wa_outbox_listen` consumer handled. Owned by this package."""

    name = models.CharField(primary_key=True, max_length=100)
    last_event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "wa_outbox_listener_cursor"
        verbose_name = "event listener cursor"

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_event_id}"
