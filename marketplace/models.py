"""Marketplace models: authors upload components that others rate and download."""

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.utils import timezone


class Author(models.Model):
    """The marketplace profile of a user who uploads components."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="author")
    display_name = models.CharField(max_length=150, blank=True)
    bio = models.TextField(blank=True)
    reputation = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.display_name or self.user.get_username()


class SearchDocumentField(models.TextField):
    """A ``tsvector`` column on PostgreSQL and plain text elsewhere (SQLite fallback)."""

    def db_type(self, connection) -> str:
        return "tsvector" if connection.vendor == "postgresql" else "text"


class Component(models.Model):
    """An uploaded component: source text with YAML front matter, processed in the background."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PUBLISHED = "published", "Published"
        REJECTED = "rejected", "Rejected"

    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="components")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=220, unique=True)
    version = models.CharField(max_length=50, blank=True)
    description = models.TextField(blank=True)
    source = models.TextField(help_text="Source text starting with a YAML front matter block.")
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    rejection_reason = models.TextField(blank=True)
    download_count = models.PositiveIntegerField(default=0)
    rating_count = models.PositiveIntegerField(default=0)
    rating_average = models.DecimalField(max_digits=3, decimal_places=2, default=0)
    search_document = SearchDocumentField(blank=True, null=True, editable=False)
    indexed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} {self.version}".strip()


class Rating(models.Model):
    """One user's score (1..5) of one component; the database enforces both rules."""

    component = models.ForeignKey(Component, on_delete=models.CASCADE, related_name="ratings")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ratings")
    score = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(5)])
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(score__gte=1, score__lte=5),
                name="rating_score_between_1_and_5",
                violation_error_message="A rating must be between 1 and 5.",
            ),
            models.UniqueConstraint(
                fields=["user", "component"],
                name="rating_one_per_user_and_component",
                violation_error_message="This user has already rated this component.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} rated {self.component}: {self.score}"


class Download(models.Model):
    """One download of a component, by a user or anonymously."""

    component = models.ForeignKey(Component, on_delete=models.CASCADE, related_name="downloads")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="downloads"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.component} at {self.created_at:%Y-%m-%d %H:%M}"


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def expired(self, now: datetime | None = None) -> "ApiTokenQuerySet":
        """Tokens whose expiry is at or before ``now`` (default: the current time)."""
        return self.filter(expires_at__lte=now or timezone.now())

    def update(self, **kwargs: Any) -> int:
        """``QuerySet.update``, except that clearing ``revoked_at`` leaves revoked tokens revoked."""
        if "revoked_at" in kwargs and kwargs["revoked_at"] is None:
            rest = {name: value for name, value in kwargs.items() if name != "revoked_at"}
            with transaction.atomic(using=self.db):
                updated = super(ApiTokenQuerySet, self.filter(revoked_at__isnull=True)).update(**kwargs)
                if rest:
                    updated += super(ApiTokenQuerySet, self.filter(revoked_at__isnull=False)).update(**rest)
            return updated
        return super().update(**kwargs)


class ApiToken(models.Model):
    """An API key. Only its SHA-256 is stored; the key itself is shown once, when issued.

    Two rules hold whoever saves a token (admin, ``issue_token``, a shell): it expires at most
    ``API_TOKEN_MAX_DAYS`` after it was issued, and revocation is one-way: a save never clears
    a ``revoked_at`` the database already holds, even from a copy loaded before the revocation.
    """

    KEY_PREFIX_LENGTH = 8

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    key_prefix = models.CharField(max_length=KEY_PREFIX_LENGTH, editable=False, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        permissions = [("issue_token_for_others", "Can issue API tokens for other users")]

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.user})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save under the two rules: capped expiry, and a revocation in the database stays."""
        self.clean()
        with transaction.atomic(using=kwargs.get("using")):
            if self.pk is not None:
                stored = ApiToken.objects.select_for_update().filter(pk=self.pk).values_list("revoked_at", flat=True)
                revoked_at = stored.first()
                if revoked_at is not None:
                    self.revoked_at = revoked_at
            super().save(*args, **kwargs)

    def latest_allowed_expiry(self) -> datetime:
        """``API_TOKEN_MAX_DAYS`` after the token was issued (after now for a token not saved yet)."""
        return (self.created_at or timezone.now()) + timedelta(days=settings.API_TOKEN_MAX_DAYS)

    def clean(self) -> None:
        """Refuse an expiry beyond ``API_TOKEN_MAX_DAYS`` after issue (a form error in the admin)."""
        super().clean()
        if self.expires_at is not None and self.expires_at > self.latest_allowed_expiry():
            raise ValidationError(
                {"expires_at": f"A token expires at most {settings.API_TOKEN_MAX_DAYS} days after it is issued."}
            )

    def set_new_key(self) -> str:
        """Give the token a fresh random key and return it; only its hash is kept."""
        key = secrets.token_urlsafe(32)
        self.key_prefix = key[: self.KEY_PREFIX_LENGTH]
        self.key_hash = _hash_key(key)
        return key

    @staticmethod
    def hash_key(key: str) -> str:
        """The stored form of ``key``: tokens are looked up by it, the key itself is never kept."""
        return _hash_key(key)

    @property
    def is_active(self) -> bool:
        """Neither revoked nor expired."""
        return self.revoked_at is None and self.expires_at > timezone.now()

    def revoke(self) -> None:
        """Revoke the token for good; revoking it again keeps the first time."""
        now = timezone.now()
        ApiToken.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=now)
        self.revoked_at = ApiToken.objects.values_list("revoked_at", flat=True).get(pk=self.pk)


class DailyStats(models.Model):
    """Marketplace activity of one UTC day, filled by the ``calculate_daily_stats`` job."""

    date = models.DateField(unique=True)
    uploads = models.PositiveIntegerField(default=0)
    downloads = models.PositiveIntegerField(default=0)
    ratings = models.PositiveIntegerField(default=0)
    active_authors = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-date"]
        verbose_name_plural = "daily stats"

    def __str__(self) -> str:
        return f"Stats for {self.date}"


class Notification(models.Model):
    """A message to a user, shown in the API and also sent by email."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    subject = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    idempotency_key = models.CharField(max_length=200, unique=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.subject
