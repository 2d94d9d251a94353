"""Domain errors. The API turns each into a 4xx with its message."""


class ApplicationError(Exception):
    """Base of every marketplace error a user can act on."""

    code = "error"

    def __init__(self, message: str, *, extra: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class ValidationFailed(ApplicationError):
    code = "invalid"


class NotFound(ApplicationError):
    code = "not_found"


class Conflict(ApplicationError):
    code = "conflict"


class PermissionDenied(ApplicationError):
    code = "forbidden"
