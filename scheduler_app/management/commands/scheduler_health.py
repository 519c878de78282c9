"""``manage.py scheduler_health``: exit 0 while a scheduler is alive, non-zero otherwise.

Made for a container's health check (``HEALTHCHECK CMD python manage.py scheduler_health --local``)
and for monitoring scripts.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from scheduler_app.coordination import HOST
from scheduler_app.health import max_heartbeat_age, scheduler_health

EXIT_UNHEALTHY = 1
EXIT_DATABASE = 2


class Command(BaseCommand):
    help = (
        "Check that a scheduler process is working: its heartbeat in the database is fresh, its control "
        "loop makes progress and none of its threads died. Exit status: 0 healthy, 1 no working scheduler "
        "(or none active with --active, or none on this host with --local), 2 database unreachable."
    )

    # A health check runs every few seconds and must judge the database itself: the system checks
    # would cost time and, on SQLite, crash on an unreachable database before handle() could tell.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help="seconds a heartbeat stays fresh (default: SCHEDULER['HEALTH_MAX_HEARTBEAT_AGE'] or LEASE_SECONDS)",
        )
        parser.add_argument("--active", action="store_true", help="require the active (leading) scheduler")
        parser.add_argument(
            "--local", action="store_true", help="require a scheduler on this host (a container's own check)"
        )
        parser.add_argument("--json", action="store_true", help="print the findings as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        max_age = options["max_age"]
        if max_age is not None and max_age <= 0:
            raise CommandError("--max-age must be greater than 0", returncode=EXIT_UNHEALTHY)
        try:
            health = scheduler_health(max_age if max_age is not None else max_heartbeat_age(), host=HOST)
        except DatabaseError as exc:
            raise CommandError(f"unhealthy: database unreachable: {exc}", returncode=EXIT_DATABASE) from exc
        if options["local"]:
            what = f"scheduler on this host ({HOST})"
            ok, seen, missing = health.local_working, health.local_alive, "no live"
        elif options["active"]:
            ok, seen, missing, what = health.active_working, health.active, "no", "active scheduler"
        else:
            ok, seen, missing, what = health.working, health.alive, "no live", "scheduler"
        problem = None
        if not ok and seen:
            # Alive is not enough: it must be processing fires (see scheduler_app.health).
            problem = f"no working {what}: " + "; ".join(health.problems)
        elif not ok:
            problem = f"{missing} {what}"
            if not health.alive:
                problem += f": no heartbeat in the last {health.max_age:g}s"
        if options["json"]:
            self.stdout.write(json.dumps({"healthy": problem is None, **health.as_dict()}))
        if problem:
            raise CommandError(f"unhealthy: {problem}", returncode=EXIT_UNHEALTHY)
        age = health.newest_age
        if not options["json"]:
            self.stdout.write(
                f"healthy: {health.alive} scheduler(s) alive ({health.active} active, {health.standby} standby), "
                f"newest heartbeat {age:.1f}s ago"
            )
