"""Domain errors: every service raises these; the HTTP layer turns them into
`{"error_id", "message", "details"}` with `status_code`."""

from __future__ import annotations

from typing import Any


class AtiendeError(Exception):
    status_code = 500
    error_id = "internal-error"

    def __init__(self, message: str, details: Any = None, *, error_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details if details is not None else {}
        if error_id is not None:
            self.error_id = error_id

    def to_dict(self) -> dict[str, Any]:
        return {"error_id": self.error_id, "message": self.message, "details": self.details}


class InvalidInput(AtiendeError):
    status_code = 422
    error_id = "invalid-input"


class NotFound(AtiendeError):
    status_code = 404
    error_id = "not-found"


class Conflict(AtiendeError):
    status_code = 409
    error_id = "conflict"


class Forbidden(AtiendeError):
    status_code = 403
    error_id = "forbidden"


class Unauthorized(AtiendeError):
    status_code = 401
    error_id = "unauthorized"


class RateLimited(AtiendeError):
    status_code = 429
    error_id = "rate-limited"


class Unavailable(AtiendeError):
    status_code = 503
    error_id = "unavailable"
