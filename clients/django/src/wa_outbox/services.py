"""WhatsAppService: the seed's method names and response shapes, on the outbox tables.

Every call is an ORM read or write; nothing talks HTTP. Where the seed waited for the Node
service (the QR, a send), this waits for the runner's row update, woken by LISTEN wa_event and
bounded by a timeout.
"""

from __future__ import annotations

import math
import mimetypes
import os
import re
from typing import Any
from urllib.parse import urlsplit

from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from . import conf, pgnotify
from .exceptions import (
    InTransactionError,
    InvalidInputError,
    MediaNotFoundError,
    MessageNotFoundError,
    QRTimeoutError,
    SessionConflictError,
    SessionFailedError,
    SessionLoggedOutError,
    SessionNotFoundError,
    SessionTimeoutError,
)
from .models import (
    FINISHED_COMMAND_STATUSES,
    FINISHED_MESSAGE_STATUSES,
    PAIR_PHONE_RE,
    SESSION_ID_RE,
    Command,
    CommandKind,
    CommandStatus,
    DesiredState,
    Media,
    Message,
    MessageKind,
    MessageStatus,
    Session,
    SessionStatus,
)

MAX_BODY_CHARS = 65_536
# Linked and able to send: a hibernated session (browser closed, login kept) is woken by the
# runner as soon as a message for it is due, and only then, so waiting for `connected` on it
# would wait forever.
READY_STATUSES = frozenset({SessionStatus.CONNECTED, SessionStatus.HIBERNATED})
MEDIA_TYPES = tuple(
    k
    for k in MessageKind.values
    if k
    not in (
        MessageKind.TEXT,
        MessageKind.LOCATION,
        MessageKind.CONTACT,
        MessageKind.POLL,
        MessageKind.REACTION,
        MessageKind.EDIT,
        MessageKind.REVOKE,
    )
)
# The runner's bounds on contact cards and polls (src/kinds.rs); checked here too so a bad call
# fails before a row is stored.
MAX_CONTACT_CARDS = 50
MAX_VCARD_CHARS = 16 * 1024
MIN_POLL_CHOICES, MAX_POLL_CHOICES = 2, 12
MAX_POLL_QUESTION_CHARS, MAX_POLL_CHOICE_CHARS = 255, 100
_VCARD_FN = re.compile(r"^FN(;[^:]*)?:(.*\S.*)$", re.IGNORECASE | re.MULTILINE)

_SESSION_ID = re.compile(SESSION_ID_RE)
_PAIR_PHONE = re.compile(PAIR_PHONE_RE)
# Same shapes the runner accepts (DESIGN.md §1); the runner still has the last word
# (invalid_recipient, not_on_whatsapp).
_JID = re.compile(r"^[0-9]{5,20}(-[0-9]{1,20})?@(c\.us|g\.us)$")
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")
_PHONE = re.compile(r"^\+?[0-9]{6,15}$")

_SESSION_COLUMNS = (
    "id",
    "user_id",
    "desired_state",
    "status",
    "qr_image",
    "qr_expires_at",
    "pairing_code",
    "phone_number",
    "push_name",
    "error_code",
    "error",
)


# ---- validation ---------------------------------------------------------------------------


def validate_session_id(value: Any, field: str = "session_id") -> str:
    if not isinstance(value, str) or not _SESSION_ID.match(value):
        raise InvalidInputError(
            field,
            f"expected 1 to 64 letters, digits, '_' or '-' (e.g. user_123_session), got {value!r}",
        )
    return value


def validate_user_id(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise InvalidInputError("user_id", f"expected an integer or None, got {value!r}")
    return value


def validate_recipient(value: Any, field: str = "recipient") -> str:
    if isinstance(value, str):
        candidate = value.strip()
        if _JID.match(candidate) or (
            len(candidate) <= 128 and _PHONE.match(_PHONE_PUNCTUATION.sub("", candidate))
        ):
            return candidate
    raise InvalidInputError(
        field,
        "expected a phone number (15551234567, +1 (555) 123-4567) or a JID "
        f"(15551234567@c.us, …@g.us), got {value!r}",
    )


def _validate_pair_phone(value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not _PAIR_PHONE.match(value)):
        raise InvalidInputError(
            "pair_phone", f"expected digits with an optional + (6 to 15), got {value!r}"
        )


def _validate_degrees(value: Any, field: str, limit: int) -> float:
    """A finite number of degrees within ±limit (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(field, f"expected a number of degrees, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not -limit <= number <= limit:
        raise InvalidInputError(
            field, f"expected a number between -{limit} and {limit}, got {value!r}"
        )
    return number


def _validate_text(value: Any, field: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(field, f"expected text, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidInputError(field, "must not be empty")
    if len(value) > MAX_BODY_CHARS:
        raise InvalidInputError(
            field, f"is {len(value)} characters; WhatsApp accepts at most {MAX_BODY_CHARS}"
        )
    return value


def _mention_options(mentions: Any) -> dict:
    """{"options": {"mentions": [...]}} for the people a text or caption mentions, or {}."""
    if mentions is None:
        return {}
    if not isinstance(mentions, (list, tuple)):
        raise InvalidInputError("mentions", f"expected a list of phone numbers, got {mentions!r}")
    people = []
    for m in mentions:
        person = validate_recipient(m, "mentions")
        if person.endswith("@g.us"):
            raise InvalidInputError("mentions", f"{m!r} is a group; mention people")
        people.append(person)
    return {"options": {"mentions": people}} if people else {}


def _target_options(message: Any, *, ours: bool) -> dict:
    """The options naming the message a reaction, edit, revoke or forward acts on: a Message id
    (an int: one of this session's rows that went out) as `target_id`, or a WhatsApp message id
    as the page serializes it (`true_…` for ours, `false_…` for a received one) as
    `target_wa_id`. With `ours`, only a message this account sent will do (`true_…`)."""
    if isinstance(message, bool) or not (
        isinstance(message, int)
        or (
            isinstance(message, str)
            and message.count("_") >= 2
            and (message.startswith("true_") or not ours)
        )
    ):
        want = "a WhatsApp id of ours (true_…)" if ours else "a WhatsApp message id (true_…/false_…)"
        raise InvalidInputError("message", f"expected a Message id or {want}, got {message!r}")
    return {"target_id": message} if isinstance(message, int) else {"target_wa_id": message}


def _validate_vcards(value: Any) -> list[str]:
    """One vCard string or a list of them, each framed and with an FN (as the runner checks)."""
    cards = [value] if isinstance(value, str) else value
    if not isinstance(cards, (list, tuple)) or not 1 <= len(cards) <= MAX_CONTACT_CARDS:
        raise InvalidInputError(
            "vcards", f"expected a vCard or a list of 1 to {MAX_CONTACT_CARDS}, got {value!r}"
        )
    for card in cards:
        if not isinstance(card, str):
            raise InvalidInputError("vcards", f"expected vCard text, got {type(card).__name__}")
        lines = [line for line in card.strip().splitlines() if line.strip()]
        if (
            len(card) > MAX_VCARD_CHARS
            or not lines
            or lines[0].strip().upper() != "BEGIN:VCARD"
            or lines[-1].strip().upper() != "END:VCARD"
            or not _VCARD_FN.search(card.replace("\r", ""))
        ):
            raise InvalidInputError(
                "vcards",
                "each vCard runs from BEGIN:VCARD to END:VCARD, has an FN (the name shown) and "
                f"at most {MAX_VCARD_CHARS} characters",
            )
    return list(cards)


def _validate_media_url(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInputError("media_url", f"expected an http(s) URL, got {type(value).__name__}")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError("media_url", f"expected an absolute http(s) URL, got {value!r}")
    return value.strip()


def _sniff_image(data: bytes) -> str | None:
    """The image type of `data` by its first bytes (the kinds a sticker is made from)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _read_file(file: Any, max_bytes: int) -> tuple[bytes, str | None, str | None]:
    """(data, filename, content type) from bytes or a file-like (Django File, UploadedFile, …)."""
    if isinstance(file, (bytes, bytearray, memoryview)):
        data, name, content_type = bytes(file), None, None
    elif hasattr(file, "read"):
        if hasattr(file, "seek"):
            try:
                file.seek(0)
            except (OSError, ValueError):
                pass
        # Read one byte past the cap so an over-large file is refused without reading it all.
        data = file.read(max_bytes + 1)
        if isinstance(data, str):
            raise InvalidInputError("file", "expected a binary file (opened with 'rb'), got text")
        name = getattr(file, "name", None)
        name = os.path.basename(name) if isinstance(name, str) and name else None
        content_type = getattr(file, "content_type", None)
    else:
        raise InvalidInputError(
            "file", f"expected bytes or a binary file, got {type(file).__name__}"
        )
    if not data:
        raise InvalidInputError("file", "is empty")
    if len(data) > max_bytes:
        raise InvalidInputError(
            "file", f"is larger than WA_OUTBOX_MEDIA_MAX_BYTES ({max_bytes} bytes)"
        )
    return data, name, content_type


def _kind_from_mime(mime: str | None) -> str:
    major = (mime or "").split("/", 1)[0]
    return {"image": "image", "video": "video", "audio": "audio"}.get(major, "document")


# ---- the service --------------------------------------------------------------------------


class WhatsAppService:
    """Drop-in for the seed's HTTP WhatsAppService: same method names, same response dicts.

    `using` picks the database alias holding the runner's tables (default: the
    WA_OUTBOX_DATABASE setting, itself "default").
    """

    def __init__(self, using: str | None = None):
        self.using = using or conf.get("WA_OUTBOX_DATABASE")

    # -- sessions --

    def init_session(
        self,
        user_id: int | None,
        session_id: str,
        *,
        pair_phone: str | None = None,
        timeout: float | None = None,
    ) -> dict:
        """Ask for the session to run and wait (up to WA_OUTBOX_QR_TIMEOUT) for its QR code.

        Returns {"success": True, "qrCode": "data:image/png;base64,…", "status": "qr_pending"};
        if the session is already linked (or restores its stored login) {"success": True,
        "qrCode": None, "status": "connected", "phoneNumber": …}; with `pair_phone`,
        {"success": True, "qrCode": None, "pairingCode": "ABCD1234", "status": "pairing"}.
        """
        session_id = validate_session_id(session_id)
        user_id = validate_user_id(user_id)
        _validate_pair_phone(pair_phone)
        timeout = (
            conf.get("WA_OUTBOX_QR_TIMEOUT")
            if timeout is None
            else conf.seconds("timeout", timeout)
        )
        self._refuse_in_transaction("init_session")

        # LISTEN before the write: a runner answering within milliseconds is not missed.
        with pgnotify.subscribe(session_id, using=self.using) as listener:
            self._request_running(session_id, user_id, pair_phone)
            found = pgnotify.wait_for(
                lambda: self._init_outcome(session_id, want_pairing=pair_phone is not None),
                listener=listener,
                timeout=timeout,
                session_id=session_id,
            )
        if found is None:
            raise QRTimeoutError(session_id, timeout, self._status_of(session_id))
        return found

    def start_session(
        self, user_id: int | None, session_id: str, *, pair_phone: str | None = None
    ) -> dict:
        """Ask for the session to run and return at once (init_session without the wait): for
        pages that poll get_session_status. Unlike init_session, `pair_phone=None` also clears
        a pairing number set before, so the session links by QR code."""
        session_id = validate_session_id(session_id)
        user_id = validate_user_id(user_id)
        _validate_pair_phone(pair_phone)
        self._request_running(session_id, user_id, pair_phone, replace_pair_phone=True)
        return self.get_session_status(session_id)

    def _request_running(
        self,
        session_id: str,
        user_id: int | None,
        pair_phone: str | None,
        *,
        replace_pair_phone: bool = False,
    ) -> None:
        sessions = Session.objects.using(self.using)
        with transaction.atomic(using=self.using):
            row = sessions.select_for_update().filter(pk=session_id).values("user_id").first()
            if row is None:
                try:
                    with transaction.atomic(using=self.using):
                        Session(id=session_id, user_id=user_id, pair_phone=pair_phone).save(
                            using=self.using
                        )
                    return
                except IntegrityError:
                    # Created concurrently: fall through to the update path.
                    row = (
                        sessions.select_for_update().filter(pk=session_id).values("user_id").first()
                    )
                    if row is None:
                        raise
            if user_id is not None and row["user_id"] not in (None, user_id):
                raise SessionConflictError(
                    f"session {session_id!r} belongs to another user; choose another session_id"
                )
            changes: dict[str, Any] = {"desired_state": DesiredState.RUNNING}
            if user_id is not None:
                changes["user_id"] = user_id
            if pair_phone is not None or replace_pair_phone:
                changes["pair_phone"] = pair_phone
            # Setting desired_state (even to its current value) fires the table's guard, which
            # restarts a failed/stopped/logged-out session from `new`.
            sessions.filter(pk=session_id).update(**changes)

    def _session_for_new_work(self, session_id: str) -> dict:
        """The session's `desired_state` and `status`, for a message or command about to be
        stored. Logged out by us (desired_state) or from the phone (status): the runner would
        fail the row with session_logged_out at insert; say so before storing anything."""
        session = (
            Session.objects.using(self.using)
            .filter(pk=session_id)
            .values("desired_state", "status")
            .first()
        )
        if session is None:
            raise SessionNotFoundError(session_id)
        if DesiredState.LOGGED_OUT in (session["desired_state"], session["status"]):
            raise SessionLoggedOutError(session_id)
        return session

    def _session_row(self, session_id: str) -> dict | None:
        return (
            Session.objects.using(self.using)
            .filter(pk=session_id)
            .values(*_SESSION_COLUMNS)
            .first()
        )

    def _status_of(self, session_id: str) -> str | None:
        row = self._session_row(session_id)
        return row and row["status"]

    def _init_outcome(self, session_id: str, *, want_pairing: bool) -> dict | None:
        row = self._session_row(session_id)
        if row is None:
            raise SessionNotFoundError(session_id)
        status = row["status"]
        if status == SessionStatus.FAILED:
            raise SessionFailedError(session_id, row["error_code"], row["error"])
        if status in READY_STATUSES:
            return {
                "success": True,
                "qrCode": None,
                "status": status,
                "phoneNumber": row["phone_number"],
            }
        if want_pairing:
            if status == SessionStatus.PAIRING and row["pairing_code"]:
                return {
                    "success": True,
                    "qrCode": None,
                    "pairingCode": row["pairing_code"],
                    "status": status,
                }
            return None
        if status == SessionStatus.QR_PENDING and _live_qr(row):
            return {"success": True, "qrCode": row["qr_image"], "status": status}
        return None

    def get_session_status(self, session_id: str) -> dict:
        """{"success": True, "status": …, "phoneNumber": …, "isReady": bool}, plus the current
        QR while one is shown (it rotates: poll this to refresh a QR on screen) and the last
        error of a failed session."""
        session_id = validate_session_id(session_id)
        row = self._session_row(session_id)
        if row is None:
            raise SessionNotFoundError(session_id)
        status = row["status"]
        return {
            "success": True,
            "status": status,
            "phoneNumber": row["phone_number"],
            "isReady": status in READY_STATUSES,
            "desiredState": row["desired_state"],
            "qrCode": row["qr_image"]
            if status == SessionStatus.QR_PENDING and _live_qr(row)
            else None,
            "pairingCode": row["pairing_code"] if status == SessionStatus.PAIRING else None,
            "pushName": row["push_name"],
            "errorCode": row["error_code"],
            "error": row["error"],
        }

    def wait_until_ready(self, session_id: str, timeout: float | None = None) -> dict:
        """Wait (up to WA_OUTBOX_INIT_TIMEOUT) for the session to be linked (`connected`, or
        `hibernated`), e.g. after the QR was scanned. Returns get_session_status()'s dict."""
        session_id = validate_session_id(session_id)
        timeout = (
            conf.get("WA_OUTBOX_INIT_TIMEOUT")
            if timeout is None
            else conf.seconds("timeout", timeout)
        )
        self._refuse_in_transaction("wait_until_ready")

        def ready() -> dict | None:
            row = self._session_row(session_id)
            if row is None:
                raise SessionNotFoundError(session_id)
            if row["status"] == SessionStatus.FAILED:
                raise SessionFailedError(session_id, row["error_code"], row["error"])
            return row if row["status"] in READY_STATUSES else None

        with pgnotify.subscribe(session_id, using=self.using) as listener:
            found = pgnotify.wait_for(
                ready, listener=listener, timeout=timeout, session_id=session_id
            )
        if found is None:
            raise SessionTimeoutError(session_id, timeout, self._status_of(session_id))
        return self.get_session_status(session_id)

    def disconnect(self, session_id: str) -> dict:
        """Close the session's browser and keep its login (desired_state = stopped). Queued
        messages wait until init_session runs it again."""
        self._set_desired(session_id, DesiredState.STOPPED)
        return {"success": True, "message": "Session disconnected"}

    def logout(self, session_id: str) -> dict:
        """Unlink the device and delete its stored login (desired_state = logged_out). A new
        QR scan is needed to use the session again."""
        self._set_desired(session_id, DesiredState.LOGGED_OUT)
        return {"success": True, "message": "Session logged out"}

    def _set_desired(self, session_id: str, desired: str) -> None:
        session_id = validate_session_id(session_id)
        updated = (
            Session.objects.using(self.using).filter(pk=session_id).update(desired_state=desired)
        )
        if not updated:
            raise SessionNotFoundError(session_id)

    # -- messages --

    def send_text_message(
        self,
        session_id: str,
        recipient: str,
        message: str,
        *,
        mentions: list[str] | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Queue a text message. `mentions`: phone numbers or c.us JIDs the text mentions
        (write them as @15551234567 in the text too). Returns {"success", "messageId",
        "status"}; see _queue()."""
        return self._queue(
            session_id,
            recipient,
            kind=MessageKind.TEXT,
            body=_validate_text(message, "message", required=True),
            **_mention_options(mentions),
            idempotency_key=idempotency_key,
            wait=wait,
        )

    def send_media_message(
        self,
        session_id: str,
        recipient: str,
        media_url: str | None = None,
        caption: str | None = None,
        media_type: str | None = None,
        *,
        file: Any = None,
        filename: str | None = None,
        mimetype: str | None = None,
        mentions: list[str] | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Queue a media message from `media_url` (the runner fetches it) or `file` (bytes or a
        binary file, stored in the row). `media_type` is image, video, audio, voice or document;
        None: guessed from the MIME type."""
        caption = _validate_text(caption, "caption", required=False)
        if (media_url is None) == (file is None):
            raise InvalidInputError("media_url", "give exactly one of media_url or file")
        if filename is not None and (not isinstance(filename, str) or not filename.strip()):
            raise InvalidInputError("filename", f"expected a file name, got {filename!r}")
        if mimetype is not None and (not isinstance(mimetype, str) or "/" not in mimetype):
            raise InvalidInputError(
                "mimetype", f"expected a MIME type like image/png, got {mimetype!r}"
            )
        data = None
        if media_url is not None:
            media_url = _validate_media_url(media_url)
            guess_name = os.path.basename(urlsplit(media_url).path) or None
        else:
            data, guess_name, content_type = _read_file(file, conf.get("WA_OUTBOX_MEDIA_MAX_BYTES"))
            mimetype = mimetype or content_type
        filename = filename or guess_name
        if mimetype is None and filename:
            mimetype = mimetypes.guess_type(filename)[0]
        if media_type is None:
            media_type = _kind_from_mime(mimetype)
        elif media_type not in MEDIA_TYPES:
            raise InvalidInputError(
                "media_type", f"expected one of {', '.join(MEDIA_TYPES)}, got {media_type!r}"
            )
        if mentions and media_type in (MessageKind.AUDIO, MessageKind.VOICE):
            raise InvalidInputError(
                "mentions", f"a {media_type} message has no caption to mention in"
            )
        return self._queue(
            session_id,
            recipient,
            kind=media_type,
            body=caption,
            media_url=media_url,
            media_data=data,
            media_mime=mimetype,
            media_filename=filename,
            **_mention_options(mentions),
            idempotency_key=idempotency_key,
            wait=wait,
        )

    def send_sticker(
        self,
        session_id: str,
        recipient: str,
        media_url: str | None = None,
        *,
        file: Any = None,
        mimetype: str | None = None,
        reply_to: str | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Queue an image as a sticker (kind `sticker`) from `media_url` (the runner fetches it)
        or `file` (bytes or a binary file, stored in the row): a PNG, JPEG, GIF or WebP that the
        page turns into WhatsApp's 512x512 WebP sticker. No caption. Bytes that are no such
        image fail the row with `media_invalid`. Returns {"success", "messageId", "status"};
        see _queue()."""
        if (media_url is None) == (file is None):
            raise InvalidInputError("media_url", "give exactly one of media_url or file")
        if mimetype is not None and (
            not isinstance(mimetype, str) or not mimetype.startswith("image/")
        ):
            raise InvalidInputError(
                "mimetype", f"a sticker is made from an image (image/...), got {mimetype!r}"
            )
        data = None
        if media_url is not None:
            media_url = _validate_media_url(media_url)
        else:
            data, name, content_type = _read_file(file, conf.get("WA_OUTBOX_MEDIA_MAX_BYTES"))
            mimetype = (
                mimetype
                or content_type
                or (mimetypes.guess_type(name)[0] if name else None)
                or _sniff_image(data)
            )
            if not mimetype or not mimetype.startswith("image/"):
                raise InvalidInputError(
                    "file", f"a sticker is made from an image; its type is {mimetype!r}"
                )
        extra = {}
        if reply_to is not None:
            extra["options"] = {"reply_to": _validate_text(reply_to, "reply_to", required=True)}
        return self._queue(
            session_id,
            recipient,
            kind=MessageKind.STICKER,
            media_url=media_url,
            media_data=data,
            media_mime=mimetype,
            **extra,
            idempotency_key=idempotency_key,
            wait=wait,
        )

    def send_location(
        self,
        session_id: str,
        recipient: str,
        latitude: float,
        longitude: float,
        name: str | None = None,
        address: str | None = None,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Queue a location pin (kind `location`, the pin in `options`). `latitude` in
        [-90, 90], `longitude` in [-180, 180]; `name` and `address` are shown under the pin.
        Returns {"success", "messageId", "status"}; see _queue()."""
        options: dict = {
            "latitude": _validate_degrees(latitude, "latitude", 90),
            "longitude": _validate_degrees(longitude, "longitude", 180),
        }
        for field, value in (("name", name), ("address", address)):
            text = _validate_text(value, field, required=False)
            if text is not None and text.strip():
                options[field] = text
        return self._queue(
            session_id,
            recipient,
            kind=MessageKind.LOCATION,
            options=options,
            idempotency_key=idempotency_key,
            wait=wait,
        )

    def send_contact(
        self,
        session_id: str,
        recipient: str,
        vcards: str | list[str],
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Queue one or more contact cards (kind `contact`, `options.vcards`). Each vCard runs
        from BEGIN:VCARD to END:VCARD and has an FN (the name shown on the card); a `waid=`
        parameter on its TEL lets WhatsApp offer "Message". Returns {"success", "messageId",
        "status"}; see _queue()."""
        return self._queue(
            session_id,
            recipient,
            kind=MessageKind.CONTACT,
            options={"vcards": _validate_vcards(vcards)},
            idempotency_key=idempotency_key,
            wait=wait,
        )

    def send_poll(
        self,
        session_id: str,
        recipient: str,
        question: str,
        choices: list[str],
        selectable_count: int = 1,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Queue a poll (kind `poll`): a question, 2 to 12 distinct choices, and how many of them
        one voter may pick (1 by default; 0 = any number). Returns {"success", "messageId",
        "status"}; see _queue()."""
        question = _validate_text(question, "question", required=True).strip()
        if len(question) > MAX_POLL_QUESTION_CHARS:
            raise InvalidInputError(
                "question", f"is {len(question)} characters; the limit is {MAX_POLL_QUESTION_CHARS}"
            )
        if not isinstance(choices, (list, tuple)) or not (
            MIN_POLL_CHOICES <= len(choices) <= MAX_POLL_CHOICES
        ):
            raise InvalidInputError(
                "choices",
                f"expected {MIN_POLL_CHOICES} to {MAX_POLL_CHOICES} strings, got {choices!r}",
            )
        clean: list[str] = []
        for choice in choices:
            if not isinstance(choice, str) or not 1 <= len(choice.strip()) <= MAX_POLL_CHOICE_CHARS:
                raise InvalidInputError(
                    "choices",
                    f"each choice is 1 to {MAX_POLL_CHOICE_CHARS} characters, got {choice!r}",
                )
            if choice.strip() in clean:
                raise InvalidInputError("choices", f"{choice.strip()!r} appears twice")
            clean.append(choice.strip())
        if (
            isinstance(selectable_count, bool)
            or not isinstance(selectable_count, int)
            or not 0 <= selectable_count <= len(clean)
        ):
            raise InvalidInputError(
                "selectable_count",
                f"expected 0 (any) to {len(clean)}, got {selectable_count!r}",
            )
        return self._queue(
            session_id,
            recipient,
            kind=MessageKind.POLL,
            options={"question": question, "choices": clean, "selectable_count": selectable_count},
            idempotency_key=idempotency_key,
            wait=wait,
        )

    def react(
        self,
        session_id: str,
        recipient: str,
        message: int | str,
        emoji: str,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Queue a reaction (kind `reaction`): `emoji` on `message` in the chat `recipient`; an
        empty `emoji` removes ours. `message` is one of this session's Message ids (an int, a row
        that went out) or a WhatsApp message id string (e.g. an incoming message's, from its
        Event). Returns {"success", "messageId", "status"}; see _queue()."""
        target = _target_options(message, ours=False)
        if (
            not isinstance(emoji, str)
            or len(emoji) > 32
            or any(c.isspace() or (c.isascii() and c.isalnum()) for c in emoji)
        ):
            raise InvalidInputError(
                "emoji", f"expected one emoji, or '' to remove the reaction, got {emoji!r}"
            )
        return self._queue(
            session_id,
            recipient,
            kind=MessageKind.REACTION,
            body=emoji,
            options=target,
            idempotency_key=idempotency_key,
            wait=wait,
        )

    def edit_message(
        self,
        session_id: str,
        recipient: str,
        message: int | str,
        text: str,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Queue an edit (kind `edit`): `text` replaces the text of `message`, one this account
        sent within the last 15 minutes (WhatsApp's window) — a Message id (an int) or its
        WhatsApp id (`true_…`). Past the window the runner refuses it (errorCode
        invalid_options). Returns {"success", "messageId", "status"}; see _queue()."""
        target = _target_options(message, ours=True)
        return self._queue(
            session_id,
            recipient,
            kind=MessageKind.EDIT,
            body=_validate_text(text, "text", required=True),
            options=target,
            idempotency_key=idempotency_key,
            wait=wait,
        )

    def delete_message(
        self,
        session_id: str,
        recipient: str,
        message: int | str,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Queue a delete for everyone (kind `revoke`) of `message`, one this account sent: a
        Message id (an int) or its WhatsApp id (`true_…`). Returns {"success", "messageId",
        "status"}; see _queue()."""
        target = _target_options(message, ours=True)
        return self._queue(
            session_id,
            recipient,
            kind=MessageKind.REVOKE,
            options=target,
            idempotency_key=idempotency_key,
            wait=wait,
        )

    def forward_message(
        self,
        session_id: str,
        recipient: str,
        message: int | str,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Queue a forward (kind `forward`) of `message` to the chat `recipient`, shown there
        as "Forwarded": one of this session's Message ids (an int, a row that went out) or a
        WhatsApp message id string (ours, or an incoming message's from its Event). Returns
        {"success", "messageId", "status"}; see _queue(). Never sent twice: interrupted
        mid-send it fails with send_failed ("may or may not")."""
        target = _target_options(message, ours=False)
        return self._queue(
            session_id,
            recipient,
            kind=MessageKind.FORWARD,
            options=target,
            idempotency_key=idempotency_key,
            wait=wait,
        )

    def _queue(
        self, session_id: str, recipient: str, *, idempotency_key, wait: bool, **fields
    ) -> dict:
        """Insert the row; then, when the call is not inside a transaction and the session is
        running, wait up to WA_OUTBOX_SEND_TIMEOUT for the runner to send it.

        `status` in the answer is the row's status when the call returns: `sent` (or later)
        once the page accepted it, still `queued`/`sending` if the wait ran out or the session
        is stopped (the message stays in the outbox and goes out later), `failed` with
        errorCode/error (and success False) if the runner refused it.
        """
        session_id = validate_session_id(session_id)
        recipient = validate_recipient(recipient)
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not idempotency_key
        ):
            raise InvalidInputError(
                "idempotency_key", f"expected a non-empty string, got {idempotency_key!r}"
            )
        session = self._session_for_new_work(session_id)

        waiting = wait and not connections[self.using].in_atomic_block
        timeout = conf.get("WA_OUTBOX_SEND_TIMEOUT")
        # A stopped session keeps the message queued and a failed one waits for init_session:
        # no answer can come within the timeout, so do not hold the caller.
        waiting = (
            waiting
            and timeout > 0
            and session["desired_state"] == DesiredState.RUNNING
            and session["status"] != SessionStatus.FAILED
        )
        if not waiting:
            msg = self._insert(session_id, recipient, idempotency_key, fields)
            return _message_result(msg)
        with pgnotify.subscribe(session_id, using=self.using) as listener:
            msg = self._insert(session_id, recipient, idempotency_key, fields)
            if msg["status"] in FINISHED_MESSAGE_STATUSES or msg["not_before"] > timezone.now():
                return _message_result(msg)
            found = pgnotify.wait_for(
                lambda: _finished(self._message_row(msg["id"])),
                listener=listener,
                timeout=timeout,
                session_id=session_id,
            )
        return _message_result(found or self._message_row(msg["id"]) or msg)

    def _insert(
        self, session_id: str, recipient: str, idempotency_key: str | None, fields: dict
    ) -> dict:
        try:
            with transaction.atomic(using=self.using):
                msg = Message(
                    session_id=session_id,
                    recipient=recipient,
                    idempotency_key=idempotency_key,
                    **fields,
                )
                msg.save(using=self.using)
        except IntegrityError:
            if idempotency_key is not None:
                existing = (
                    Message.objects.using(self.using)
                    .filter(idempotency_key=idempotency_key)
                    .values(*_MESSAGE_COLUMNS)
                    .first()
                )
                if existing is not None:
                    if existing["session_id"] != session_id:
                        raise InvalidInputError(
                            "idempotency_key", "already used for a message of another session"
                        ) from None
                    return existing
            if not Session.objects.using(self.using).filter(pk=session_id).exists():
                raise SessionNotFoundError(session_id) from None
            raise
        return {name: getattr(msg, name) for name in _MESSAGE_COLUMNS}

    def _message_row(self, message_id: int) -> dict | None:
        return (
            Message.objects.using(self.using)
            .filter(pk=message_id)
            .values(*_MESSAGE_COLUMNS)
            .first()
        )

    def get_message_status(self, message_id: int) -> dict:
        """{"success": True, "messageId", "status", "ack", "waMessageId", "errorCode", "error"}."""
        if isinstance(message_id, str) and message_id.isdigit():
            message_id = int(message_id)
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise InvalidInputError("message_id", f"expected an integer, got {message_id!r}")
        row = self._message_row(message_id)
        if row is None:
            raise MessageNotFoundError(message_id)
        return {**_message_result(row), "ack": row["ack"], "waMessageId": row["wa_message_id"]}

    def cancel_message(self, message_id: int) -> dict:
        """Cancel a message that is still queued. {"success": bool, "messageId", "status"}."""
        status = self.get_message_status(message_id)
        Message.objects.using(self.using).filter(
            pk=status["messageId"], status=MessageStatus.QUEUED
        ).update(status=MessageStatus.CANCELLED)
        row = self._message_row(status["messageId"])
        return {
            "success": row["status"] == MessageStatus.CANCELLED,
            "messageId": row["id"],
            "status": row["status"],
        }

    # ---- commands (wa_command) ---------------------------------------------------------------

    def check_numbers(
        self, session_id: str, numbers: list[str], *, timeout: float | None = None
    ) -> dict:
        """Which of up to 100 phone numbers are on WhatsApp. Waits (bounded) for the runner:
        {"success", "commandId", "status", "results": [{"number", "wid", "exists"}, …]} once
        done; see _command() for the other outcomes."""
        if not isinstance(numbers, (list, tuple)) or not 1 <= len(numbers) <= MAX_CHECK_NUMBERS:
            raise InvalidInputError(
                "numbers", f"expected a list of 1 to {MAX_CHECK_NUMBERS} phone numbers"
            )
        checked = []
        for n in numbers:
            r = validate_recipient(n, field="numbers")
            if r.endswith("@g.us"):
                raise InvalidInputError("numbers", f"{n!r} is a group, not a phone number")
            checked.append(r)
        answer = self._command(
            session_id, CommandKind.CHECK_NUMBERS, {"numbers": checked}, timeout=timeout
        )
        if answer["status"] == CommandStatus.DONE:
            answer["results"] = (answer.get("result") or {}).get("results", [])
        return answer

    def mark_read(self, session_id: str, chat: str, *, timeout: float | None = None) -> dict:
        """Send read receipts for a chat's unread messages (a phone number or JID).
        {"success", "commandId", "status", "result": {"chat", "found", "unread"}} once done."""
        chat = validate_recipient(chat, field="chat")
        return self._command(session_id, CommandKind.MARK_READ, {"chat": chat}, timeout=timeout)

    def set_typing(
        self,
        session_id: str,
        chat: str,
        state: str | bool = "typing",
        *,
        timeout: float | None = None,
    ) -> dict:
        """Show `typing` (or True), `recording`, or `paused` (or False) in a chat.
        {"success", "commandId", "status", "result": {"chat", "state"}} once done."""
        chat = validate_recipient(chat, field="chat")
        if state is True:
            state = "typing"
        elif state is False:
            state = "paused"
        if state not in PRESENCE_STATES:
            raise InvalidInputError(
                "state", f"expected one of {', '.join(PRESENCE_STATES)}, got {state!r}"
            )
        return self._command(
            session_id, CommandKind.PRESENCE, {"chat": chat, "state": state}, timeout=timeout
        )

    # ---- contacts, pictures, chats and history (issue 14) -------------------------------------

    def get_contact_info(
        self, session_id: str, contact: str, *, timeout: float | None = None
    ) -> dict:
        """What the page knows about a contact (a phone number, c.us JID or …@lid). Waits
        (bounded): {"success", "commandId", "status", "result": {"contact", "exists", "wid",
        "number", "name", "pushname", "is_business", "is_my_contact", "about"}} once done."""
        contact = _contact_arg(contact, groups=False)
        return self._command(
            session_id, CommandKind.CONTACT_INFO, {"contact": contact}, timeout=timeout
        )

    def get_profile_picture(
        self, session_id: str, contact: str, *, timeout: float | None = None
    ) -> dict:
        """A contact's or group's profile picture URL and its expiry (no bytes):
        {"success", "commandId", "status", "result": {"contact", "found", "url", "expires_at"}}
        once done; `url` None when there is no picture or it is hidden."""
        contact = _contact_arg(contact, groups=True)
        return self._command(
            session_id, CommandKind.PROFILE_PICTURE, {"contact": contact}, timeout=timeout
        )

    def get_chats(
        self, session_id: str, limit: int = 50, *, timeout: float | None = None
    ) -> dict:
        """The page's `limit` (1..200) most recent chats, newest first: {"success", "commandId",
        "status", "chats": [{"id", "number", "name", "is_group", "unread", "marked_unread",
        "timestamp", "archived", "pinned"}, …]} once done."""
        limit = _limit_arg(limit, MAX_CHATS)
        answer = self._command(session_id, CommandKind.CHATS, {"limit": limit}, timeout=timeout)
        if answer["status"] == CommandStatus.DONE:
            answer["chats"] = (answer.get("result") or {}).get("chats", [])
        return answer

    def get_chat_history(
        self, session_id: str, chat: str, limit: int = 50, *, timeout: float | None = None
    ) -> dict:
        """A chat's last `limit` (1..500) messages, oldest first: {"success", "commandId",
        "status", "messages": [{"id", "key", "from_me", "type", "body", "timestamp",
        "author"}, …], "result": {"chat", "found", "page_chat", "messages"}} once done."""
        chat = validate_recipient(chat, field="chat")
        limit = _limit_arg(limit, MAX_HISTORY)
        answer = self._command(
            session_id, CommandKind.HISTORY, {"chat": chat, "limit": limit}, timeout=timeout
        )
        if answer["status"] == CommandStatus.DONE:
            answer["messages"] = (answer.get("result") or {}).get("messages", [])
        return answer

    def create_group(
        self,
        session_id: str,
        subject: str,
        participants: list[str],
        *,
        timeout: float | None = None,
    ) -> dict:
        """Create a group, exactly once: {"success", "commandId", "status", "result": {"id",
        "subject", "added", "failed": [{"wid", "code"}], "recovered"}} once done. A row a runner
        was interrupted in is settled from the page, never run again; one the page cannot settle
        fails with errorCode "command_interrupted" (the group may or may not exist: check with
        get_group_info or get_chats before asking again)."""
        if not isinstance(subject, str) or not 1 <= len(subject.strip()) <= MAX_SUBJECT:
            raise InvalidInputError(
                "subject", f"expected a text of 1 to {MAX_SUBJECT} characters, got {subject!r}"
            )
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in subject):
            raise InvalidInputError("subject", "must not hold control characters")
        _check_participants(participants)
        return self._command(
            session_id,
            CommandKind.GROUP_CREATE,
            {"subject": subject.strip(), "participants": list(participants)},
            timeout=timeout,
        )

    def get_group_info(self, session_id: str, group: str, *, timeout: float | None = None) -> dict:
        """A group's subject, owner, creation and participants with admin flags, from the
        server: {"success", "commandId", "status", "result": {"group", "found", "subject",
        "owner", "created_at", "participants": [{"id", "is_admin", "is_super_admin"}]}}."""
        return self._command(
            session_id, CommandKind.GROUP_INFO, {"group": _group_arg(group)}, timeout=timeout
        )

    def get_group_invite_link(
        self, session_id: str, group: str, *, timeout: float | None = None
    ) -> dict:
        """The group's invite link (the account must be an admin): {"success", "commandId",
        "status", "result": {"group", "code", "link"}} once done."""
        return self._command(
            session_id,
            CommandKind.GROUP_INVITE_LINK,
            {"group": _group_arg(group)},
            timeout=timeout,
        )

    def update_group_participants(
        self,
        session_id: str,
        group: str,
        action: str,
        participants: list[str],
        *,
        timeout: float | None = None,
    ) -> dict:
        """Add, remove, promote or demote participants (the account must be an admin), exactly
        once: {"success", "commandId", "status", "result": {"group", "action", "results":
        [{"wid", "ok", "code"}], "recovered"}} once done; `code` is the page's answer per
        participant ("200" done, else its refusal). An interrupted row the page cannot settle
        fails with errorCode "command_interrupted" (check with get_group_info before asking
        again)."""
        if action not in PARTICIPANT_ACTIONS:
            raise InvalidInputError(
                "action", f"expected one of {', '.join(PARTICIPANT_ACTIONS)}, got {action!r}"
            )
        g = _group_arg(group)
        _check_participants(participants)
        return self._command(
            session_id,
            CommandKind.GROUP_PARTICIPANTS,
            {"group": g, "action": action, "participants": list(participants)},
            timeout=timeout,
        )

    def leave_group(self, session_id: str, group: str, *, timeout: float | None = None) -> dict:
        """Leave the group, exactly once: {"success", "commandId", "status", "result": {"group",
        "left", "recovered"}} once done; an interrupted leave the page cannot settle fails with
        errorCode "command_interrupted"."""
        return self._command(
            session_id, CommandKind.GROUP_LEAVE, {"group": _group_arg(group)}, timeout=timeout
        )

    # ---- incoming media (wa_media) -----------------------------------------------------------

    def get_media(
        self,
        media_id: int | None = None,
        *,
        session_id: str | None = None,
        wa_message_id: str | None = None,
        with_data: bool = True,
    ) -> dict:
        """A file someone sent to a session: by its wa_media id (an incoming message's
        payload["media_id"], or the `media` of the message_received signal), or by session and
        WhatsApp message id. {"success": True, "mediaId", "sessionId", "eventId", "waMessageId",
        "kind", "mimetype", "filename", "caption", "size", "sha256", "stored", "data" (bytes, or
        None when not stored or with_data=False), "errorCode", "error"}; "success" is False when
        the bytes were not stored (errorCode media_too_large or media_fetch_failed). Raises
        MediaNotFoundError for an unknown (or pruned) one."""
        rows = Media.objects.using(self.using)
        if media_id is not None:
            if isinstance(media_id, str) and media_id.isdigit():
                media_id = int(media_id)
            if isinstance(media_id, bool) or not isinstance(media_id, int):
                raise InvalidInputError("media_id", f"expected an integer, got {media_id!r}")
            rows = rows.filter(pk=media_id)
            what = f"#{media_id}"
        elif session_id is not None and wa_message_id is not None:
            session_id = validate_session_id(session_id)
            if not isinstance(wa_message_id, str) or not wa_message_id:
                raise InvalidInputError("wa_message_id", "expected a WhatsApp message id")
            rows = rows.filter(session_id=session_id, wa_message_id=wa_message_id)
            what = f"for {wa_message_id!r} in session {session_id!r}"
        else:
            raise InvalidInputError(
                "media_id", "give media_id, or session_id and wa_message_id"
            )
        if not with_data:
            rows = rows.defer("data")
        m = rows.first()
        if m is None:
            raise MediaNotFoundError(what)
        return {
            "success": m.error_code is None,
            "mediaId": m.pk,
            "sessionId": m.session_id,
            "eventId": m.event_id,
            "waMessageId": m.wa_message_id,
            "kind": m.kind,
            "mimetype": m.mime,
            "filename": m.filename,
            "caption": m.caption,
            "size": m.size,
            "sha256": m.sha256,
            "stored": m.error_code is None,
            "data": bytes(m.data) if with_data and m.data is not None else None,
            "errorCode": m.error_code,
            "error": m.error,
        }

    def get_command_status(self, command_id: int) -> dict:
        """{"success", "commandId", "status", "result", "errorCode", "error"} of a command row."""
        if isinstance(command_id, bool) or not isinstance(command_id, int):
            raise InvalidInputError("command_id", f"expected an integer, got {command_id!r}")
        row = self._command_row(command_id)
        if row is None:
            raise InvalidInputError("command_id", f"no command {command_id}")
        return _command_result(row)

    def _command(self, session_id: str, kind: str, args: dict, *, timeout: float | None) -> dict:
        """Insert a wa_command row, then wait up to `timeout` (default WA_OUTBOX_SEND_TIMEOUT) for
        the runner to finish it, woken by NOTIFY wa_command. Inside a transaction, or for a
        session that is stopped or failed, it returns at once (the row stays queued and runs
        once the session does). `success` is True only when the command is done; a wait that
        ran out returns the row as it is (`queued` or `running`)."""
        session_id = validate_session_id(session_id)
        if timeout is None:
            timeout = conf.get("WA_OUTBOX_SEND_TIMEOUT")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise InvalidInputError("timeout", f"expected seconds >= 0, got {timeout!r}")
        session = self._session_for_new_work(session_id)
        waiting = (
            timeout > 0
            and not connections[self.using].in_atomic_block
            and session["desired_state"] == DesiredState.RUNNING
            and session["status"] != SessionStatus.FAILED
        )

        def insert() -> dict:
            cmd = Command(session_id=session_id, kind=kind, args=args)
            cmd.save(using=self.using)
            return self._command_row(cmd.pk) or {}

        if not waiting:
            return _command_result(insert())
        # LISTEN before the insert: a runner answering within milliseconds is not missed.
        with pgnotify.listening(COMMAND_CHANNEL, using=self.using) as listener:
            row = insert()
            found = pgnotify.wait_for(
                lambda: _finished_command(self._command_row(row["id"])),
                listener=listener,
                timeout=timeout,
                session_id=session_id,
            )
        return _command_result(found or self._command_row(row["id"]) or row)

    def _command_row(self, command_id: int) -> dict | None:
        return (
            Command.objects.using(self.using)
            .filter(pk=command_id)
            .values(*_COMMAND_COLUMNS)
            .first()
        )

    def _refuse_in_transaction(self, what: str) -> None:
        if connections[self.using].in_atomic_block:
            raise InTransactionError(
                f"{what} waits for the wa-outbox runner, which cannot see this transaction's "
                "writes until it commits; call it outside transaction.atomic() (for views under "
                "ATOMIC_REQUESTS, decorate them with transaction.non_atomic_requests)"
            )


_MESSAGE_COLUMNS = (
    "id",
    "session_id",
    "status",
    "not_before",
    "ack",
    "wa_message_id",
    "error_code",
    "error",
)


MAX_CHECK_NUMBERS = 100
PRESENCE_STATES = ("typing", "recording", "paused")
COMMAND_CHANNEL = "wa_command"
_COMMAND_COLUMNS = ("id", "session_id", "kind", "status", "result", "error_code", "error")


MAX_CHATS = 200
MAX_SUBJECT = 100
MAX_PARTICIPANTS = 256
MAX_HISTORY = 500


def _contact_arg(contact: str, *, groups: bool) -> str:
    """A contact as the runner takes it: a phone number or c.us JID (normalised), a LID
    (`digits@lid`), or with `groups` a g.us JID."""
    if isinstance(contact, str) and contact.strip().endswith("@lid"):
        user = contact.strip()[: -len("@lid")]
        if user.isdigit() and len(user) <= 20:
            return f"{user}@lid"
        raise InvalidInputError("contact", f"{contact!r} is not a LID (digits@lid)")
    r = validate_recipient(contact, field="contact")
    if r.endswith("@g.us") and not groups:
        raise InvalidInputError("contact", f"{contact!r} is a group, not a contact")
    return r


PARTICIPANT_ACTIONS = ("add", "remove", "promote", "demote")


def _check_participants(participants) -> None:
    """A list of 1 to MAX_PARTICIPANTS people (no groups), none named twice, as the runner
    checks them."""
    if (
        isinstance(participants, str)
        or not isinstance(participants, (list, tuple))
        or not 1 <= len(participants) <= MAX_PARTICIPANTS
    ):
        raise InvalidInputError(
            "participants", f"expected a list of 1 to {MAX_PARTICIPANTS} phone numbers"
        )
    seen = set()
    for p in participants:
        r = validate_recipient(p, field="participants")
        if r.endswith("@g.us"):
            raise InvalidInputError("participants", f"{p!r} is a group, not a person")
        key = re.sub(r"\D", "", r.split("@")[0]) if r.endswith("@c.us") or "@" not in r else r
        if key in seen:
            raise InvalidInputError("participants", f"{p!r} is named twice")
        seen.add(key)


def _group_arg(group: str) -> str:
    g = validate_recipient(group, field="group")
    if not g.endswith("@g.us"):
        raise InvalidInputError("group", f"{group!r} is not a group JID (…@g.us)")
    return g


def _limit_arg(limit: int, most: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidInputError("limit", f"expected an integer from 1 to {most}, got {limit!r}")
    return limit


def _finished_command(row: dict | None) -> dict | None:
    if row is None or row["status"] in FINISHED_COMMAND_STATUSES:
        return row or {}
    return None


def _command_result(row: dict) -> dict:
    result = {
        "success": row.get("status") == CommandStatus.DONE,
        "commandId": row.get("id"),
        "status": row.get("status"),
        "result": row.get("result"),
    }
    if row.get("status") == CommandStatus.FAILED:
        result["errorCode"] = row["error_code"]
        result["error"] = row["error"]
    return result


def _finished(row: dict | None) -> dict | None:
    if row is None or row["status"] in FINISHED_MESSAGE_STATUSES:
        return row or {}
    return None


def _message_result(row: dict) -> dict:
    result = {
        "success": row["status"] != MessageStatus.FAILED,
        "messageId": row["id"],
        "status": row["status"],
    }
    if row["status"] == MessageStatus.FAILED:
        result["errorCode"] = row["error_code"]
        result["error"] = row["error"]
    return result


def _live_qr(row: dict) -> bool:
    # Freshness comes from the status, not from qr_expires_at: the runner clears the QR columns
    # whenever the session leaves qr_pending, while qr_expires_at is only an estimate of the next
    # rotation (WhatsApp's first QR lives longer than the later ones).
    return bool(row["qr_image"])
