"""Health and metrics endpoints: thin views over ``tasks.monitoring.health`` and the Prometheus collectors.

Who reads what (``tasks.monitoring.access``): anyone gets ``/health/live`` and the status of
``/health/ready``; its per-check details and ``/metrics`` need the metrics token or a staff
session with the monitoring permission.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from tasks.monitoring.access import Access, monitoring_access
from tasks.monitoring.health import run_checks
from tasks.monitoring.metrics import PlatformCollector
from tasks.monitoring.report_cache import readiness_reports
from tasks.monitoring.task_metrics import ProcessMetricFiles


@never_cache
@require_GET
def health_live(request: HttpRequest) -> JsonResponse:
    """The process answers requests. Touches nothing else, so a broker outage never restarts web."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def health_ready(request: HttpRequest) -> HttpResponse:
    """200 when every required check passes, else 503; the checks' details for monitoring readers only.

    Anonymous callers (load balancers) get ``{"status": ...}`` alone: worker host names, Beat's
    identity, queue depths and error texts are for the metrics token or a permitted staff user.
    """
    access = monitoring_access(request)
    if access is Access.WRONG_TOKEN:
        return HttpResponse("Invalid metrics token.\n", status=403, content_type="text/plain")
    report = readiness_reports.get(run_checks, max_age=settings.HEALTH_REPORT_CACHE_SECONDS)
    body = report.as_dict() if access is Access.READER else {"status": report.status}
    return JsonResponse(body, status=200 if report.ready else 503)


_REFUSALS = {
    Access.WRONG_TOKEN: "Invalid metrics token.\n",
    Access.NOT_ALLOWED: "Metrics need a staff user with the tasks.view_deadletter permission.\n",
}


def metrics_access_error(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read metrics (the METRICS_TOKEN bearer token or a permitted staff session)."""
    access = monitoring_access(request)
    if access is Access.READER:
        return None
    if access in _REFUSALS:
        return HttpResponse(_REFUSALS[access], status=403, content_type="text/plain")
    response = HttpResponse(
        "Send 'Authorization: Bearer <METRICS_TOKEN>' or log in to the admin.\n", status=401, content_type="text/plain"
    )
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def metrics_registry() -> CollectorRegistry:
    """A registry with the platform's state and the task metrics every process recorded."""
    registry = CollectorRegistry()
    registry.register(PlatformCollector())
    registry.register(ProcessMetricFiles(settings.PROMETHEUS_METRICS_DIR))
    return registry


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; 401 without credentials, 403 with wrong ones."""
    refused = metrics_access_error(request)
    if refused is not None:
        return refused
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
