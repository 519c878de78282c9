"""Health checks for load balancers, orchestrators and container health checks.

* liveness (``/scheduler/health/live``): the web process answers; it touches no database, so that
  a database outage does not get every web process restarted.
* readiness (``/scheduler/health/ready``): the database answers and an active scheduler has a fresh
  heartbeat, i.e. tasks are being scheduled; 503 otherwise.
* ``manage.py scheduler_health``: the same judgement as an exit status, for a container's check.

The bodies are JSON and say no more than an anonymous caller may know (no host names or pids).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from scheduler_app import conf
from scheduler_app.models import SchedulerProcess


def max_heartbeat_age() -> float:
    configured = conf.get("HEALTH_MAX_HEARTBEAT_AGE")
    return float(configured if configured is not None else conf.get("LEASE_SECONDS"))


@dataclass
class SchedulerHealth:
    """What the database says about the scheduler processes, judged against ``max_age``."""

    max_age: float
    alive: int = 0
    active: int = 0
    standby: int = 0
    newest_heartbeat: datetime | None = None
    local_alive: int = 0

    @property
    def newest_age(self) -> float | None:
        if self.newest_heartbeat is None:
            return None
        return max(0.0, (timezone.now() - self.newest_heartbeat).total_seconds())

    def as_dict(self) -> dict[str, object]:
        age = self.newest_age
        return {
            "alive": self.alive,
            "active": self.active,
            "standby": self.standby,
            "heartbeat_age_seconds": round(age, 3) if age is not None else None,
            "max_heartbeat_age_seconds": self.max_age,
        }


def scheduler_health(max_age: float | None = None, host: str | None = None) -> SchedulerHealth:
    """One query: the scheduler processes whose heartbeat is younger than ``max_age`` seconds.

    Raises ``DatabaseError`` when the database cannot be read.
    """
    max_age = max_heartbeat_age() if max_age is None else max_age
    cutoff = timezone.now() - timedelta(seconds=max_age)
    rows = SchedulerProcess.objects.filter(kind=SchedulerProcess.Kind.SCHEDULER, last_heartbeat__gte=cutoff)
    health = SchedulerHealth(max_age=max_age)
    for role, heartbeat, process_host in rows.values_list("role", "last_heartbeat", "host"):
        health.alive += 1
        health.active += role == SchedulerProcess.Role.ACTIVE
        health.standby += role == SchedulerProcess.Role.STANDBY
        health.local_alive += process_host == host
        if health.newest_heartbeat is None or heartbeat > health.newest_heartbeat:
            health.newest_heartbeat = heartbeat
    return health


@never_cache
@require_safe
def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def ready(request: HttpRequest) -> JsonResponse:
    try:
        health = scheduler_health()
    except DatabaseError:
        return JsonResponse({"status": "unavailable", "database": "unreachable", "scheduler": None}, status=503)
    ok = health.active > 0
    body = {"status": "ok" if ok else "unavailable", "database": "ok", "scheduler": health.as_dict()}
    if not ok:
        body["reason"] = (
            "no active scheduler: schedulers are standing by for the lease"
            if health.alive
            else f"no scheduler heartbeat in the last {health.max_age:g}s (is `manage.py runscheduler` running?)"
        )
    return JsonResponse(body, status=200 if ok else 503)
