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


class SourceTooLarge(ValidationFailed):
    """A component source over the size limit: the API answers 413 (too large), not 422."""

    code = "too_large"


class NotFound(ApplicationError):
    code = "not_found"


class Conflict(ApplicationError):
    code = "conflict"


class PermissionDenied(ApplicationError):
    code = "forbidden"
