"""The address (slug) of a new component: its name's slug, numbered when the name was taken."""

from __future__ import annotations

import re
import secrets

from django.db.models import Exists
from django.db.models.functions import Length
from django.utils.text import slugify

from marketplace.models import Component

BASE_MAX_LENGTH = 200
SLUG_MAX_LENGTH = Component._meta.get_field("slug").max_length


def component_slug_next(*, name: str) -> str:
    """The slug a new component named ``name`` gets: one query, however many share the name.

    The one row read is the taken slug of this base with the highest number (longest, then
    greatest: digits of one length sort as numbers) and whether the bare base is taken. Two
    uploads at once may both choose it: the unique constraint decides (see the caller).
    """
    base = slugify(name)[:BASE_MAX_LENGTH] or "component"
    highest = (
        # startswith lets PostgreSQL use the slug's pattern index; the regex keeps only base-N.
        Component.objects.filter(slug__startswith=base, slug__regex=rf"^{re.escape(base)}(-[0-9]+)?$")
        .annotate(base_taken=Exists(Component.objects.filter(slug=base)))
        .order_by(Length("slug").desc(), "-slug")
        .values_list("slug", "base_taken")
        .first()
    )
    if highest is None or not highest[1]:
        return base
    slug = highest[0]
    number = int(slug[len(base) + 1 :]) if slug != base else 1
    numbered = f"{base}-{number + 1}"
    # Only names that are themselves "base-<200 digits>" get here: a random suffix instead.
    return numbered if len(numbered) <= SLUG_MAX_LENGTH else f"{base}-{secrets.token_hex(3)}"
