"""``manage.py check_health``: the readiness checks of ``/health/ready``, in a terminal."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks.monitoring.health import run_checks


class Command(BaseCommand):
    help = "Run every registered health check (as /health/ready does) and print the results."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the /health/ready JSON instead of a table")
        parser.add_argument("--timeout", type=float, default=None, help="seconds (default HEALTH_CHECK_TIMEOUT)")

    def handle(self, *args: Any, **options: Any) -> None:
        report = run_checks(timeout=options["timeout"])
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            width = max(len(result.name) for result in report.results)
            for result in report.results:
                style = {"ok": self.style.SUCCESS, "warn": self.style.WARNING}.get(result.status, self.style.ERROR)
                required = "required" if result.required else "optional"
                self.stdout.write(
                    f"{result.name:<{width}}  {style(f'{result.status:<4}')}  {required}  "
                    f"{result.latency_ms:7.1f} ms  {result.detail}"
                )
            self.stdout.write(f"platform: {report.status}")
        if not report.ready:
            raise CommandError(f"not ready: {', '.join(r.name for r in report.failing if r.required)}")
