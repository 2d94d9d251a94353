"""Admin for flow limits: the limits and unique window each handler declares in code, the
operators' overrides of them (in force in every process within ``FLOW_LIMITS_REFRESH`` seconds),
and their history."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from tasks.admin_mixins import ReadOnlyAdminMixin
from tasks.messaging.brokers import async_subscription_by_handler, async_subscriptions_by_handler
from tasks.messaging.flow_limit_overrides import (
    NO_LIMIT,
    flow_limit_change_record,
    flow_limit_snapshot,
    flow_limits_in_force,
    unique_window,
)
from tasks.messaging.subscriptions import Subscription, rate_limit_parse
from tasks.models import FlowLimit, FlowLimitChange

HISTORY_ROWS_ON_PAGE = 20


def _describe(subscription: Subscription, rate: str, concurrency: int | None, unique_for: object) -> str:
    parts = []
    if rate:
        parts.append(f"{rate}{' per key' if subscription.rate_key else ''}")
    if concurrency:
        parts.append(f"{concurrency} at once{' per key' if subscription.concurrency_key else ''}")
    if subscription.unique:
        parts.append(f"{'debounced' if subscription.debounce else 'unique'} for {unique_for}")
    return ", ".join(parts) or "none"


def _describe_code_limits(subscription: Subscription | None) -> str:
    if subscription is None:
        return "not subscribed in this code"
    return _describe(subscription, subscription.rate_limit or "", subscription.concurrency, subscription.unique_for)


def _describe_in_force(subscription: Subscription | None) -> str:
    if subscription is None:
        return "—"
    limits = flow_limits_in_force(subscription)
    rate = f"{limits.rate.amount} per {limits.rate.get_expiry()} s" if limits.rate else ""
    return _describe(subscription, rate, limits.concurrency, unique_window(subscription))


class FlowLimitForm(forms.ModelForm):
    class Meta:
        model = FlowLimit
        fields = ("handler", "rate_limit", "concurrency", "unique_for", "reason")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [
            (s.handler_path, f"{s.handler_path} (code: {_describe_code_limits(s)})")
            for s in async_subscriptions_by_handler().values()
        ]
        if self.instance.pk and self.instance.handler not in dict(choices):
            choices.append((self.instance.handler, f"{self.instance.handler} (not subscribed in this code)"))
        self.fields["handler"] = forms.ChoiceField(choices=choices, help_text="An async handler of this code.")

    def clean(self) -> dict:
        cleaned = super().clean()
        subscription = async_subscription_by_handler(cleaned.get("handler") or "")
        if cleaned.get("unique_for") is not None and subscription is not None and subscription.unique is None:
            self.add_error("unique_for", "This handler declares no unique key (unique= in its subscribe_async).")
        if cleaned.get("unique_for") is not None and cleaned["unique_for"].total_seconds() <= 0:
            self.add_error("unique_for", "A unique window is longer than zero.")
        return cleaned

    def clean_rate_limit(self) -> str:
        text = self.cleaned_data["rate_limit"].strip()
        if text and text.lower() != NO_LIMIT:
            try:
                rate_limit_parse(text)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return text


class FlowLimitAdmin(admin.ModelAdmin):
    """Overrides of the flow limits and unique windows declared in code. Blank fields keep the
    code's value; "none" (rate) or 0 (concurrency) lifts a limit. Each change is recorded in the
    history."""

    form = FlowLimitForm
    list_display = ("handler", "code_limits", "rate_limit", "concurrency", "in_force", "reason", "changed_at")
    search_fields = ("handler",)
    readonly_fields = ("code_limits", "in_force", "change_history")
    change_list_template = "admin/tasks/flowlimit/change_list.html"

    @admin.display(description="Declared in code")
    def code_limits(self, obj: FlowLimit) -> str:
        return _describe_code_limits(async_subscription_by_handler(obj.handler)) if obj.handler else "—"

    @admin.display(description="In force")
    def in_force(self, obj: FlowLimit) -> str:
        return _describe_in_force(async_subscription_by_handler(obj.handler)) if obj.handler else "—"

    @admin.display(description="History")
    def change_history(self, obj: FlowLimit) -> str:
        if not obj.handler:
            return "—"
        changes = FlowLimitChange.objects.filter(handler=obj.handler).select_related("user")[:HISTORY_ROWS_ON_PAGE]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    timezone.localtime(c.at).strftime("%Y-%m-%d %H:%M:%S"),
                    c.action,
                    c.user or "—",
                    c.source,
                    "; ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in c.changes.items()),
                )
                for c in changes
            ),
        )
        return format_html("<table>{}</table>", rows) if changes else "—"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        overridden = set(FlowLimit.objects.values_list("handler", flat=True))
        declared = [
            (s.handler_path, _describe_code_limits(s), _describe_in_force(s))
            for s in async_subscriptions_by_handler().values()
            if s.rate_limit or s.concurrency or s.unique or s.handler_path in overridden
        ]
        return super().changelist_view(request, {**(extra_context or {}), "declared_limits": declared})

    def save_model(self, request: HttpRequest, obj: FlowLimit, form: forms.Form, change: bool) -> None:
        old = flow_limit_snapshot(FlowLimit.objects.filter(pk=obj.pk).first() if obj.pk else None)
        super().save_model(request, obj, form, change)
        flow_limit_change_record(
            handler=obj.handler, old=old, new=flow_limit_snapshot(obj), user=request.user, source="admin"
        )

    def delete_model(self, request: HttpRequest, obj: FlowLimit) -> None:
        old = flow_limit_snapshot(obj)
        super().delete_model(request, obj)
        flow_limit_change_record(handler=obj.handler, old=old, new={}, user=request.user, source="admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[FlowLimit]) -> None:
        for obj in list(queryset):
            self.delete_model(request, obj)


class FlowLimitChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only history of every flow-limit override."""

    list_display = ("at", "handler", "action", "user", "source", "changes")
    list_filter = ("action", "source")
    search_fields = ("handler",)
    date_hierarchy = "at"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
