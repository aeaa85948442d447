"""Error types shared by every room; the API maps each to an HTTP status with the message as reason."""

from __future__ import annotations


class SerenaError(Exception):
    """Base of the platform's expected errors: the message is safe to show to the caller."""

    status_code = 400
    code = "bad_request"


class ValidationFailed(SerenaError):
    status_code = 422
    code = "invalid"


class NotFound(SerenaError):
    status_code = 404
    code = "not_found"


class Conflict(SerenaError):
    status_code = 409
    code = "conflict"


class AuthError(SerenaError):
    """Authentication failed (bad credentials, bad or expired token)."""

    status_code = 401
    code = "unauthenticated"


class Forbidden(SerenaError):
    """Authenticated, but the permission table does not allow it."""

    status_code = 403
    code = "forbidden"


class Throttled(SerenaError):
    status_code = 429
    code = "throttled"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
