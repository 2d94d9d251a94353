"""Admin for the marketplace: search, filters and the columns an operator looks for."""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

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


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("user", "name", "expires_at", "revoked_at")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ("key_prefix", "user", "name", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("expires_at", "revoked_at")
    search_fields = ("key_prefix", "name", "user__username")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    readonly_fields = ("key_prefix", "created_at", "last_used_at")

    def get_changeform_initial_data(self, request):
        return {"expires_at": timezone.now() + timedelta(days=90)}

    def save_model(self, request, obj, form, change):
        if not change:
            key = obj.set_new_key()
            # Shown once: only the hash is stored.
            messages.warning(request, f"New API key (copy it now, it is not shown again): {key}")
        super().save_model(request, obj, form, change)


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
