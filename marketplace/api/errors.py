"""One shape for every error the API answers: ``{"detail": str, "code": str}``, 422s add ``errors``.

Domain errors (``marketplace.errors.ApplicationError``) become the 4xx of ``ERROR_STATUS``;
ninja's own errors (unreadable body, failed validation, 404, auth) and the HTTP-level limits
(413, 429) get the same shape. :func:`exception_handlers_add` wires all of it into the API.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError

from marketplace.api.auth import RateLimited
from marketplace.api.schemas import ErrorOut
from marketplace.errors import (
    ApplicationError,
    Conflict,
    NotFound,
    PermissionDenied,
    SourceTooLarge,
    ValidationFailed,
)

# The most specific class of the error decides (SourceTooLarge is a ValidationFailed).
ERROR_STATUS: dict[type[ApplicationError], int] = {
    SourceTooLarge: 413,
    ValidationFailed: 422,
    NotFound: 404,
    Conflict: 409,
    PermissionDenied: 403,
}
HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
}

# Every operation documents every error status it can answer, so a client (and the fuzzer's
# schema checks) can rely on the document: 400 unreadable body, 401 no or bad token, 403 not
# yours, 404 no such thing, 409 state conflict, 413 too large, 422 invalid, 429 rate limited.
ERRORS = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 422, 429)}


def _error(api: NinjaAPI, request: HttpRequest, status: int, detail: str, code: str, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"detail": detail, "code": code, **extra}, status=status)


def _application_error(api: NinjaAPI, request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    status = next((ERROR_STATUS[cls] for cls in type(exc).__mro__ if cls in ERROR_STATUS), 400)
    return _error(api, request, status, exc.message, exc.code)


def _validation_error(api: NinjaAPI, request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors = [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors]
    summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "Invalid request."
    return _error(api, request, 422, summary, "invalid", errors=errors)


def _http_error(api: NinjaAPI, request: HttpRequest, exc: HttpError) -> HttpResponse:
    # ninja wraps errors of reading the body in a 400; one that was too big is a 413.
    if isinstance(exc.__cause__, RequestDataTooBig):
        return _request_too_big(api, request, exc.__cause__)
    return _error(api, request, exc.status_code, str(exc), HTTP_ERROR_CODES.get(exc.status_code, "error"))


def _request_too_big(api: NinjaAPI, request: HttpRequest, exc: Exception) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return _error(api, request, 413, f"The request body is larger than {limit} bytes.", "too_large")


def _not_found(api: NinjaAPI, request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(api, request, 404, "Not found.", "not_found")


def _rate_limited(api: NinjaAPI, request: HttpRequest, exc: RateLimited) -> HttpResponse:
    response = _error(api, request, 429, str(exc), "rate_limited")
    response["Retry-After"] = str(exc.retry_after)
    return response


HANDLERS: dict[type[Exception], Callable[..., HttpResponse]] = {
    ApplicationError: _application_error,
    NinjaValidationError: _validation_error,
    HttpError: _http_error,
    RequestDataTooBig: _request_too_big,
    Http404: _not_found,
    RateLimited: _rate_limited,
}


def exception_handlers_add(api: NinjaAPI) -> None:
    """Answer each exception of ``HANDLERS`` raised in ``api``'s views in the one error shape."""
    for exc_class, handler in HANDLERS.items():
        api.add_exception_handler(exc_class, partial(handler, api))
