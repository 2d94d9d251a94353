"""The marketplace JSON API (django-ninja), mounted at ``/api/v1/`` by ``config/urls.py``.

OpenAPI document at ``/api/v1/openapi.json``, interactive docs at ``/api/v1/docs``. One router
per resource (``components``, ``ratings``, ``downloads``, ``authors``, ``me``), with
``schemas``, ``errors``, ``pagination`` and ``auth`` beside them. Views are thin: they check
HTTP-level limits, then call services and selectors. Every error, whatever raised it, has one
shape, ``{"detail": str, "code": str}`` (see ``errors``).
"""

from __future__ import annotations

from ninja import NinjaAPI
from ninja.operation import Operation

from marketplace.api import authors, components, downloads, errors, me, ratings


class MarketplaceAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation: Operation) -> str:
        # ninja derives an operation's id from its view's module; the ids stay those the document
        # published while every view lived in one module, so generated clients keep their names.
        return f"marketplace_api_{operation.view_func.__name__}"


api = MarketplaceAPI(
    title="Component marketplace API",
    version="1",
    description="Upload, find, rate and download components. Authenticate with `Authorization: Bearer <key>`; "
    "keys come from `manage.py issue_token USER` or the admin. Errors are `{detail, code}`.",
    urls_namespace="marketplace-api",
)
errors.exception_handlers_add(api)
api.add_router("/components", components.router)
api.add_router("/components", ratings.router)
api.add_router("/components", downloads.router)
api.add_router("/authors", authors.router)
api.add_router("/me", me.router)

__all__ = ["api"]
