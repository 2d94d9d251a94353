"""Writes of the marketplace: ``<entity>_<action>(*, ...)``. Each registers its domain events.

Domain code never calls ``.delay()``: it registers events, and the bus runs the handlers
after commit (see marketplace/handlers.py).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, F, Q
from django.utils import timezone

from marketplace import selectors
from marketplace.errors import Conflict, NotFound, PermissionDenied, SourceTooLarge, ValidationFailed
from marketplace.events import (
    ComponentDownloaded,
    ComponentPublished,
    ComponentRated,
    ComponentRejected,
    ComponentUploaded,
    NotificationRequested,
)
from marketplace.front_matter import parse_front_matter
from marketplace.models import ApiToken, Author, Component, Download, Notification, Rating
from marketplace.names import name_problem, one_line
from marketplace.slugs import BASE_MAX_LENGTH, component_slug_next
from tasks.transaction import register_event, transactional

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

MAX_SOURCE_BYTES = 256 * 1024
SUBJECT_MAX_LENGTH = Notification._meta.get_field("subject").max_length
# last_used_at is written at most this often per token, so a busy client costs one UPDATE a
# minute, not one per request.
TOKEN_LAST_USED_RESOLUTION = timedelta(minutes=1)


def author_get_or_create(*, user: AbstractBaseUser) -> Author:
    """The marketplace profile of ``user``, created on first use."""
    author, _ = Author.objects.get_or_create(user=user, defaults={"display_name": user.get_username()})
    return author


def _component_create(*, author: Author, name: str, source: str) -> Component:
    # Two uploads of one name at the same moment may pick the same free slug; the unique
    # constraint decides, and the loser takes a random suffix instead of failing.
    slug = component_slug_next(name=name)
    for _ in range(3):
        try:
            with transaction.atomic():
                return Component.objects.create(author=author, name=name, slug=slug, source=source)
        except IntegrityError:
            slug = f"{slug[:BASE_MAX_LENGTH]}-{secrets.token_hex(3)}"
    raise Conflict("Could not find a free address for this component name; try again.")


def component_source_size_check(*, source: str) -> None:
    """Refuse a source over ``MAX_SOURCE_BYTES`` (UTF-8 bytes, not characters) with SourceTooLarge."""
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise SourceTooLarge(f"The source is larger than {MAX_SOURCE_BYTES // 1024} KiB.")


def _check_source(source: str) -> None:
    if not source.strip():
        raise ValidationFailed("The source is empty.")
    component_source_size_check(source=source)


@transactional
def component_upload(*, author: Author, name: str, source: str) -> Component:
    """Store a new component as pending; it is checked and published in the background."""
    name = name.strip()
    if not name:
        raise ValidationFailed("A component needs a name.")
    max_length = Component._meta.get_field("name").max_length
    if len(name) > max_length:
        raise ValidationFailed(f"A component name has at most {max_length} characters.")
    problem = name_problem(name)
    if problem:
        raise ValidationFailed(f"A component name {problem}.")
    _check_source(source)
    component = _component_create(author=author, name=name, source=source)
    register_event(ComponentUploaded(component_id=component.pk, author_id=author.pk))
    return component


@transactional
def component_upload_by_user(*, user: AbstractBaseUser, name: str, source: str) -> Component:
    """Upload as ``user``, creating their author profile on first upload; a refused upload
    leaves no profile behind either (one transaction)."""
    author = author_get_or_create(user=user)
    return component_upload(author=author, name=name, source=source)


@transactional
def component_new_version(*, component: Component, source: str) -> Component:
    """Replace the source of a component; it is checked and published again in the background."""
    _check_source(source)
    component.source = source
    component.status = Component.Status.PENDING
    component.rejection_reason = ""
    component.save(update_fields=["source", "status", "rejection_reason", "updated_at"])
    register_event(ComponentUploaded(component_id=component.pk, author_id=component.author_id))
    return component


def component_new_version_by_owner(*, slug: str, user: AbstractBaseUser, source: str) -> Component:
    """Replace the source of ``user``'s component ``slug``: NotFound, or PermissionDenied for others'."""
    component = selectors.component_get_visible(slug=slug, user_id=user.pk)
    if component.author.user_id != user.pk:
        raise PermissionDenied("Only the author can upload a new version of this component.")
    return component_new_version(component=component, source=source)


@transactional
def component_process_upload(*, component_id: int) -> Component | None:
    """Parse and validate a pending upload, then publish or reject it with a readable reason.

    Idempotent: a component that is no longer pending is left alone.
    """
    component = Component.objects.select_for_update().filter(pk=component_id).first()
    if component is None or component.status != Component.Status.PENDING:
        return component
    try:
        metadata = parse_front_matter(component.source)
    except ValidationFailed as exc:
        component.status = Component.Status.REJECTED
        component.rejection_reason = exc.message
        component.save(update_fields=["status", "rejection_reason", "updated_at"])
        register_event(ComponentRejected(component_id=component.pk, author_id=component.author_id, reason=exc.message))
        _notify_author(
            component,
            f"{component.name} was rejected",
            exc.message,
            f"rejected-{component.pk}-{_source_digest(component)}",
        )
        return component
    component.metadata = metadata
    component.version = str(metadata["version"])[:50]
    component.description = str(metadata["description"])
    component.status = Component.Status.PUBLISHED
    component.rejection_reason = ""
    component.save(update_fields=["metadata", "version", "description", "status", "rejection_reason", "updated_at"])
    register_event(
        ComponentPublished(component_id=component.pk, author_id=component.author_id, version=component.version)
    )
    _notify_author(
        component,
        f"{component.name} {component.version} is published",
        "Your component passed the checks and is now listed.",
        f"published-{component.pk}-{_source_digest(component)}",
    )
    return component


def _source_digest(component: Component) -> str:
    """Names one uploaded source, so each upload's outcome is announced once."""
    return hashlib.sha256(component.source.encode()).hexdigest()[:16]


def _notify_author(component: Component, subject: str, body: str, key: str) -> None:
    user_id = Author.objects.filter(pk=component.author_id).values_list("user_id", flat=True).get()
    register_event(NotificationRequested(user_id=user_id, subject=subject, body=body, idempotency_key=key))


@transactional
def component_rate(*, component: Component, user: AbstractBaseUser, score: int) -> Rating:
    """Rate a component 1..5, once per user (a second rating updates the first)."""
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise ValidationFailed("A rating must be a whole number from 1 to 5.")
    # Lock the row: ratings of one component are serialised so its average is computed from
    # committed rows, and the status checked is the current one, not the caller's copy.
    status, author_user_id = (
        Component.objects.select_for_update(of=("self",))
        .filter(pk=component.pk)
        .values_list("status", "author__user_id")
        .get()
    )
    if author_user_id == user.pk:
        raise PermissionDenied("Authors cannot rate their own components.")
    if status != Component.Status.PUBLISHED:
        raise Conflict("Only published components can be rated.")
    try:
        rating, _ = Rating.objects.update_or_create(component=component, user=user, defaults={"score": score})
    except IntegrityError as exc:
        raise Conflict("This rating conflicts with another one; try again.") from exc
    stats = (
        Rating.objects.filter(component=component)
        .exclude(user_id=author_user_id)
        .aggregate(avg=Avg("score"), count=Count("pk"))
    )
    Component.objects.filter(pk=component.pk).update(
        rating_average=Decimal(stats["avg"] or 0).quantize(Decimal("0.01")), rating_count=stats["count"]
    )
    register_event(
        ComponentRated(component_id=component.pk, author_id=component.author_id, user_id=user.pk, score=score)
    )
    return rating


@transactional
def component_download(*, component: Component, user: AbstractBaseUser | None = None) -> Download:
    """Record a download of a published component; the counter follows in the background."""
    if not Component.objects.filter(pk=component.pk, status=Component.Status.PUBLISHED).exists():
        raise NotFound("No published component with this name.")
    download = Download.objects.create(component=component, user=user)
    register_event(ComponentDownloaded(component_id=component.pk, user_id=user.pk if user else None))
    return download


def component_download_count_refresh(*, component_id: int) -> int:
    """Set the download counter from the Download rows: exact under any concurrency."""
    count = Download.objects.filter(component_id=component_id).count()
    Component.objects.filter(pk=component_id).update(download_count=count)
    return count


def author_reputation_recalculate(*, author_id: int) -> Decimal:
    """Reputation = the average score over all ratings of the author's published components."""
    # An author's ratings of their own components (refused since, but older ones may be stored)
    # do not count.
    average = (
        Rating.objects.filter(component__author_id=author_id, component__status=Component.Status.PUBLISHED)
        .exclude(user_id=F("component__author__user_id"))
        .aggregate(avg=Avg("score"))["avg"]
    )
    # Averaged from the scores themselves and rounded once, not from rounded per-component means.
    reputation = Decimal(str(average or 0)).quantize(Decimal("0.01"))
    Author.objects.filter(pk=author_id).update(reputation=reputation)
    return reputation


@transactional
def notification_send(*, user_id: int, subject: str, body: str, idempotency_key: str) -> Notification | None:
    """Store a notification and email it, once per ``idempotency_key``.

    The subject is put on one line and cut to fit the column: it carries a component name, and
    names stored before control characters were refused (or a long name with its version) would
    otherwise fail the email (a header with a line break) or the insert (too long).
    """
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return None
    subject = one_line(subject, SUBJECT_MAX_LENGTH)
    notification, _ = Notification.objects.get_or_create(
        idempotency_key=idempotency_key, defaults={"user": user, "subject": subject, "body": body}
    )
    if notification.emailed_at is None and user.email:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [user.email])
        notification.emailed_at = timezone.now()
        notification.save(update_fields=["emailed_at"])
    return notification


def rating_notify_author(*, component_id: int, author_id: int, rater_id: int) -> Notification | None:
    """Tell an author their component got a top rating (not when they rated it themselves)."""
    author_user_id = Author.objects.filter(pk=author_id).values_list("user_id", flat=True).first()
    if author_user_id is None or author_user_id == rater_id:
        return None
    name = Component.objects.filter(pk=component_id).values_list("name", flat=True).first() or f"#{component_id}"
    return notification_send(
        user_id=author_user_id,
        subject=f"{name} got a 5-star rating",
        body=f"Someone rated {name} 5 stars.",
        idempotency_key=f"top-rating-{component_id}-{rater_id}",
    )


def notifications_mark_read(*, user_id: int, notification_ids: list[int] | None = None) -> int:
    """Mark a user's notifications read (all of them when no ids are given)."""
    queryset = Notification.objects.filter(user_id=user_id, read_at__isnull=True)
    if notification_ids is not None:
        queryset = queryset.filter(pk__in=notification_ids)
    return queryset.update(read_at=timezone.now())


def api_token_issue(*, user: AbstractBaseUser, name: str = "", days: int = 90) -> tuple[ApiToken, str]:
    """Issue a token; return it and its key, which is shown this once and stored only hashed."""
    token = ApiToken(user=user, name=name, expires_at=timezone.now() + timedelta(days=days))
    key = token.set_new_key()
    token.save()
    return token, key


def api_token_authenticate(*, key: str) -> ApiToken | None:
    """The active token whose key is ``key`` (looked up by hash), or None; notes its use."""
    token = ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_key(key)).first()
    if token is None or not token.is_active or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at <= now - TOKEN_LAST_USED_RESOLUTION:
        # Conditional UPDATE: concurrent requests of one token write the timestamp once.
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - TOKEN_LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        token.last_used_at = now
    return token
