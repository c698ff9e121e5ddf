"""Exceptions raised by WhatsAppService. The views turn each into a JSON error with `code`."""

from __future__ import annotations


class WhatsAppServiceError(Exception):
    """Base class: everything the service raises on purpose is one of these."""

    code = "error"
    http_status = 500

    def as_dict(self) -> dict:
        return {"success": False, "error": str(self), "code": self.code}


class InvalidInputError(WhatsAppServiceError, ValueError):
    """A caller-supplied value is wrong. `field` names it (the Python argument name)."""

    code = "invalid_input"
    http_status = 400

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def as_dict(self) -> dict:
        return {**super().as_dict(), "field": self.field}


class SessionNotFoundError(WhatsAppServiceError, LookupError):
    code = "session_not_found"
    http_status = 404

    def __init__(self, session_id: str):
        self.session_id = session_id
        super().__init__(f"no WhatsApp session {session_id!r}; call init_session first")


class MessageNotFoundError(WhatsAppServiceError, LookupError):
    code = "message_not_found"
    http_status = 404

    def __init__(self, message_id):
        self.message_id = message_id
        super().__init__(f"no WhatsApp message {message_id!r}")


class CommandNotFoundError(WhatsAppServiceError, LookupError):
    code = "command_not_found"
    http_status = 404

    def __init__(self, command_id):
        self.command_id = command_id
        super().__init__(f"no WhatsApp command {command_id!r}")
class MediaNotFoundError(WhatsAppServiceError, LookupError):
    code = "media_not_found"
    http_status = 404

    def __init__(self, what):
        self.what = what
        super().__init__(f"no incoming media {what}")


class SessionConflictError(WhatsAppServiceError):
    """The session id is already used by another user_id."""

    code = "session_conflict"
    http_status = 409


class SessionLoggedOutError(WhatsAppServiceError):
    """Sending through a logged-out session: the runner would fail it with session_logged_out."""

    code = "session_logged_out"
    http_status = 409

    def __init__(self, session_id: str):
        self.session_id = session_id
        super().__init__(
            f"session {session_id!r} is logged out; call init_session to link it again"
        )


class SessionFailedError(WhatsAppServiceError):
    """The runner gave up on the session; `error_code` is from the wa_error_code set."""

    code = "session_failed"
    http_status = 502

    def __init__(self, session_id: str, error_code: str | None, error: str | None):
        self.session_id = session_id
        self.error_code = error_code
        self.error = error
        detail = error_code or "unknown error"
        if error:
            detail += f": {error}"
        super().__init__(f"session {session_id!r} failed ({detail})")

    def as_dict(self) -> dict:
        return {**super().as_dict(), "errorCode": self.error_code}


class QRTimeoutError(WhatsAppServiceError, TimeoutError):
    """No QR (nor connection) appeared in time: no runner running, or the page did not load."""

    code = "qr_timeout"
    http_status = 504

    def __init__(self, session_id: str, timeout: float, status: str | None):
        self.session_id = session_id
        self.timeout = timeout
        self.status = status
        super().__init__(
            f"session {session_id!r}: no QR code after {timeout:g}s (status {status!r}); "
            "is a wa-outbox runner running against this database?"
        )


class SessionTimeoutError(WhatsAppServiceError, TimeoutError):
    """wait_until_ready: the session did not reach `connected` in time."""

    code = "session_timeout"
    http_status = 504

    def __init__(self, session_id: str, timeout: float, status: str | None):
        self.session_id = session_id
        self.timeout = timeout
        self.status = status
        super().__init__(
            f"session {session_id!r} not connected after {timeout:g}s (status {status!r})"
        )


class InTransactionError(WhatsAppServiceError):
    """Waiting for the runner inside a transaction cannot succeed: it sees nothing until commit."""

    code = "in_transaction"
    http_status = 500
