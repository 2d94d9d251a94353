"""Health and metrics endpoints: thin views over ``tasks.monitoring.health`` and the Prometheus collectors."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from tasks.monitoring.health import run_checks
from tasks.monitoring.metrics import PlatformCollector


@never_cache
@require_GET
def health_live(request: HttpRequest) -> JsonResponse:
    """The process answers requests. Touches nothing else, so a broker outage never restarts web."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def health_ready(request: HttpRequest) -> JsonResponse:
    """Every check's status and latency; 503 when a required check fails."""
    report = run_checks()
    return JsonResponse(report.as_dict(), status=200 if report.ready else 503)


def _bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def metrics_access_error(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read metrics (the METRICS_TOKEN bearer token or a staff session)."""
    token = _bearer_token(request)
    expected = settings.METRICS_TOKEN
    if token is not None:
        if expected and hmac.compare_digest(token.encode(), expected.encode()):
            return None
        return HttpResponse("Invalid metrics token.\n", status=403, content_type="text/plain")
    if request.user.is_authenticated:
        if request.user.is_staff:
            return None
        return HttpResponse("Metrics are for staff users.\n", status=403, content_type="text/plain")
    response = HttpResponse(
        "Send 'Authorization: Bearer <METRICS_TOKEN>' or log in to the admin.\n", status=401, content_type="text/plain"
    )
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def metrics_registry() -> CollectorRegistry:
    """A registry with the platform's state and the worker processes' task metrics."""
    registry = CollectorRegistry()
    registry.register(PlatformCollector())
    path = settings.PROMETHEUS_MULTIPROC_DIR
    if path.is_dir():
        multiprocess.MultiProcessCollector(registry, path=str(path))
    return registry


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; 401 without credentials, 403 with wrong ones."""
    refused = metrics_access_error(request)
    if refused is not None:
        return refused
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
