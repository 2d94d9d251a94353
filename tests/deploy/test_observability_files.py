"""deploy/: the Grafana dashboard and the Prometheus alert rules parse, and every metric they
query is one the platform's /metrics exports (a renamed metric cannot silently blank a panel)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml
from django.urls import reverse
from django.utils import timezone
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from tasks.models import BeatHeartbeat
from tasks.monitoring import task_metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "task-platform.json"

# Grafana's variables, replaced by values PromQL accepts before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*"}


def referenced_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects; raises if it does not parse."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    names: set[str] = set()

    def walk(node) -> None:
        if type(node).__name__ == "VectorSelector":
            names.add(node.name)
        for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
            child = getattr(node, attribute, None)
            if child is not None and not isinstance(child, str | int | float):
                walk(child)
        for argument in getattr(node, "args", None) or ():
            walk(argument)

    walk(promql_parser.parse(expr))
    return names


def sample_names(family: str, kind: str) -> set[str]:
    """The series names a family of this type exposes."""
    if kind == "counter":
        return {f"{family}_total"}
    if kind == "histogram":
        return {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    return {family}


@pytest.fixture
def exported(admin_client_logged_in, redis_client) -> set[str]:
    """Every series name /metrics can expose: what it exposes now, and the task metrics workers write."""
    BeatHeartbeat.objects.create(name="beat", leader="h:1", last_tick_at=timezone.now())  # else no Beat age
    text = admin_client_logged_in.get(reverse("tasks:metrics")).content.decode()
    scraped = {(f.name, f.type) for f in text_string_to_metric_families(text)}
    recorded = {
        (family.name, family.type)
        for metric in vars(task_metrics).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
    }
    return {name for family, kind in scraped | recorded for name in sample_names(family, kind)}


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", [])]


def test_each_alert_rule_is_complete_and_its_expression_parses():
    rules = alert_rules()
    assert len(rules) >= 6
    for rule in rules:
        assert re.fullmatch(r"Platform[A-Za-z]+", rule["alert"]), rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"], rule
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        assert referenced_metrics(rule["expr"]), rule


@pytest.mark.django_db(transaction=True)
def test_alert_rules_and_dashboard_query_only_metrics_the_platform_exports(exported):
    queried = {name: rule["alert"] for rule in alert_rules() for name in referenced_metrics(rule["expr"])}
    queried |= {name: title for title, expr in dashboard_queries() for name in referenced_metrics(expr)}

    assert {name: where for name, where in queried.items() if name not in exported} == {}


def test_the_dashboard_has_a_panel_for_each_part_of_the_platform():
    titles = " / ".join(title for title, _ in dashboard_queries()).lower()
    for part in ("queue", "succeeded", "failed", "runtime", "outbox", "dead letters", "beat", "worker"):
        assert part in titles, part


@pytest.mark.django_db(transaction=True)
def test_a_query_naming_a_metric_nobody_exports_is_caught(exported):
    assert referenced_metrics('rate(celery_task_succeded_total{job=~"$job"}[$__rate_interval])') - exported
