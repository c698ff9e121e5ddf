"""Default permission for the views; hosts replace it with settings.WA_OUTBOX_PERMISSION."""


def is_authenticated(request) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated)


def allow_any(request) -> bool:
    """For hosts that authenticate in front of Django (or in tests). Use with care."""
    return True
