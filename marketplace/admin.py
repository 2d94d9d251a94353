"""Admin for the marketplace: search, filters and the columns an operator looks for."""

from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from marketplace.models import ApiToken, Author, Component, DailyStats, Download, Notification, Rating


@admin.register(Author)
class AuthorAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "reputation", "created_at")
    search_fields = ("display_name", "user__username", "user__email")
    list_select_related = ("user",)
    raw_id_fields = ("user",)


@admin.register(Component)
class ComponentAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "author", "status", "download_count", "rating_average", "created_at")
    list_filter = ("status", "created_at")
    search_fields = ("name", "slug", "description", "author__display_name", "author__user__username")
    list_select_related = ("author__user",)
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("download_count", "rating_count", "rating_average", "indexed_at", "created_at", "updated_at")
    raw_id_fields = ("author",)
    date_hierarchy = "created_at"


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ("component", "user", "score", "created_at")
    list_filter = ("score", "created_at")
    search_fields = ("component__name", "user__username")
    list_select_related = ("component", "user")
    raw_id_fields = ("component", "user")


@admin.register(Download)
class DownloadAdmin(admin.ModelAdmin):
    list_display = ("component", "user", "created_at")
    list_filter = ("created_at",)
    search_fields = ("component__name", "user__username")
    list_select_related = ("component", "user")
    raw_id_fields = ("component", "user")
    date_hierarchy = "created_at"


class ApiTokenAddForm(forms.ModelForm):
    """A new token: for the issuer, or for another user with ``issue_token_for_others``."""

    issuer: Any = None  # the requesting user, set by ApiTokenAdmin.get_form

    class Meta:
        model = ApiToken
        fields = ("user", "name", "expires_at")

    def clean_user(self) -> Any:
        user = self.cleaned_data["user"]
        if user.is_superuser and not self.issuer.is_superuser:
            raise forms.ValidationError("Only a superuser may issue a token for a superuser.")
        return user


class ApiTokenChangeForm(forms.ModelForm):
    """An existing token: its name and expiry (capped), and a one-way revoke box."""

    revoke = forms.BooleanField(required=False, help_text="Revoke the token for good; it cannot be undone.")

    class Meta:
        model = ApiToken
        fields = ("name", "expires_at")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """API tokens, issued by staff for themselves (for others with ``issue_token_for_others``).

    The new key is shown once, on the page that answers the add form (not cached, not in a
    message or a cookie); only its hash is stored. Revocation is one-way (the model holds it too).
    """

    list_display = ("key_prefix", "user", "name", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("expires_at", "revoked_at")
    search_fields = ("key_prefix", "name", "user__username")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    actions = ("revoke_tokens",)

    def may_issue_for_others(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.issue_token_for_others")

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        if obj is None:
            return [*(["user"] if self.may_issue_for_others(request) else []), "name", "expires_at"]
        fields = ["key_prefix", "user", "name", "created_at", "expires_at", "last_used_at", "revoked_at"]
        if obj.revoked_at is None and self.has_change_permission(request, obj):
            fields.append("revoke")
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        return ("key_prefix", "user", "created_at", "last_used_at", "revoked_at")

    def get_form(self, request: HttpRequest, obj: ApiToken | None = None, change: bool = False, **kwargs: Any) -> Any:
        kwargs["form"] = ApiTokenChangeForm if obj is not None else ApiTokenAddForm
        form = super().get_form(request, obj, change=change, **kwargs)
        form.issuer = request.user
        return form

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"expires_at": timezone.now() + timedelta(days=settings.API_TOKEN_MAX_DAYS)}

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not change:
            if not self.may_issue_for_others(request):
                obj.user = request.user
            obj.issued_key = obj.set_new_key()  # for response_add; only the hash is saved
        super().save_model(request, obj, form, change)
        if change and form.cleaned_data.get("revoke"):
            obj.revoke()

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> Any:
        """The key, once, on a page no cache keeps; never in a message (a cookie) or a redirect."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API token issued",
            "token": obj,
            "key": obj.issued_key,
            "changelist_url": reverse("admin:marketplace_apitoken_changelist"),
        }
        response = TemplateResponse(request, "admin/marketplace/apitoken/key_issued.html", context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected tokens (for good)", permissions=["change"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{revoked} token(s) revoked.", messages.SUCCESS)


@admin.register(DailyStats)
class DailyStatsAdmin(admin.ModelAdmin):
    list_display = ("date", "uploads", "downloads", "ratings", "active_authors", "computed_at")
    date_hierarchy = "date"


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("subject", "user", "created_at", "emailed_at", "read_at")
    list_filter = ("created_at", "read_at")
    search_fields = ("subject", "user__username")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
