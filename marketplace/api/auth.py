"""API authentication (``Authorization: Bearer <key>``) and the per-token rate limit on writes.

Keys are looked up by their SHA-256 (only the hash is stored); expired and revoked keys, and
keys of inactive users, are refused with 401. Write operations use ``write_auth``: after
authenticating, each call counts against the caller's window in the ``ratelimit`` cache
(django-ratelimit on Redis), and a caller over the limit gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from ninja.security import HttpBearer

from marketplace.services import api_token_authenticate

logger = logging.getLogger(__name__)

RATE_LIMIT_GROUP = "marketplace-api-write"

# Appended to the operation's security list: the empty requirement says "or no token at all",
# so the document tells clients these operations also answer anonymous callers.
ANONYMOUS_ALLOWED = {"security": [{}]}


class RateLimited(Exception):
    """A caller sent more writes than ``API_WRITE_RATE_LIMIT`` allows; retry after ``retry_after`` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many requests; retry after {retry_after} s.")
        self.retry_after = retry_after


def client_address(request: HttpRequest) -> str:
    """The caller's IP address, as the outermost of ``API_TRUSTED_PROXY_HOPS`` proxies saw it.

    Each trusted proxy appends its peer's address to X-Forwarded-For, so the client is the N-th
    entry from the right; anything left of it is the client's own claim. With no trusted proxy,
    fewer entries than hops (the request went around the chain) or an entry that is not an
    address, the connection's address counts.
    """
    hops = settings.API_TRUSTED_PROXY_HOPS
    remote = request.META.get("REMOTE_ADDR", "")
    if hops <= 0:
        return remote
    entries = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    entries = [entry for entry in entries if entry]
    if len(entries) < hops:
        return remote
    try:
        return str(ipaddress.ip_address(entries[-hops]))
    except ValueError:
        return remote


def _rate_limit_key(group: str, request: HttpRequest) -> str:
    token = getattr(request, "api_token", None)
    if token is not None:
        return f"token:{token.pk}"
    # Anonymous writes (downloads) are counted per client address.
    return f"ip:{client_address(request)}"


def enforce_write_rate_limit(request: HttpRequest) -> None:
    """Count this write against its caller's window; raise RateLimited when over the limit.

    Fails open: with the rate-limit Redis unreachable the write goes through (and the outage is
    logged), since refusing every write would turn a cache outage into an API outage.
    """
    try:
        usage = get_usage(
            request, group=RATE_LIMIT_GROUP, key=_rate_limit_key, rate=settings.API_WRITE_RATE_LIMIT, increment=True
        )
    except Exception:
        logger.exception("rate limit cache unreachable; write allowed without a limit")
        return
    if usage is not None and usage["should_limit"]:
        raise RateLimited(retry_after=max(1, int(usage["time_left"])))


class TokenAuth(HttpBearer):
    """Bearer token auth; ``optional`` lets anonymous callers in, ``write`` adds the rate limit.

    On success ``request.auth`` is the user (an ``AnonymousUser`` for anonymous callers) and
    ``request.api_token`` the token. A header that is present but wrong is always a 401, also
    where auth is optional: a client with a broken key should hear so, not act anonymously.
    """

    def __init__(self, *, optional: bool = False, write: bool = False) -> None:
        super().__init__()
        self.optional = optional
        self.write = write

    def __call__(self, request: HttpRequest) -> Any:
        request.api_token = None
        anonymous = self.optional and self.header not in request.headers
        user = AnonymousUser() if anonymous else super().__call__(request)
        if user is not None and self.write:
            enforce_write_rate_limit(request)
        return user

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        api_token = api_token_authenticate(key=token.strip())
        if api_token is None:
            return None
        request.api_token = api_token
        return api_token.user


read_auth = TokenAuth()
optional_read_auth = TokenAuth(optional=True)
write_auth = TokenAuth(write=True)
optional_write_auth = TokenAuth(optional=True, write=True)


def request_user_id(request: HttpRequest) -> int | None:
    """The id of the authenticated caller, or None for an anonymous one (optional auth)."""
    return request.auth.pk if request.auth.is_authenticated else None
