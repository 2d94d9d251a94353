"""``manage.py issue_token USER [--name NAME] [--days N]``: print a new API key, once."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketplace.services import api_token_issue


class Command(BaseCommand):
    help = "Issue an API token for USER and print its key (stored only hashed: it cannot be shown again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="username of the token's owner")
        parser.add_argument("--name", default="", help="what the token is for (shown in the admin)")
        parser.add_argument(
            "--days", type=int, default=None, help="days until the token expires (1..API_TOKEN_MAX_DAYS, default 90)"
        )

    def handle(self, *args: Any, user: str, name: str, days: int | None, **options: Any) -> None:
        cap = settings.API_TOKEN_MAX_DAYS
        days = min(90, cap) if days is None else days
        if not 1 <= days <= cap:
            raise CommandError(f"--days must be from 1 to {cap} (API_TOKEN_MAX_DAYS).")
        owner = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: user}).first()
        if owner is None:
            raise CommandError(f"No user {user!r}.")
        token, key = api_token_issue(user=owner, name=name[:100], days=days)
        # The key alone on stdout, so scripts can capture it: TOKEN=$(manage.py issue_token admin)
        self.stdout.write(key)
        self.stderr.write(f"Token {token.key_prefix}… for {user}, expires {token.expires_at:%Y-%m-%d %H:%M} UTC.")
