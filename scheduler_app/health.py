"""Health checks for load balancers, orchestrators and container health checks.

* liveness (``/scheduler/health/live``): the web process answers; it touches no database, so that
  a database outage does not get every web process restarted.
* readiness (``/scheduler/health/ready``): the database answers and an active scheduler is
  *working*; 503 otherwise.
* ``manage.py scheduler_health``: the same judgement as an exit status, for a container's check.

"Working" means fires are being processed, not merely that the process has a heartbeat: its
heartbeat is fresh, its control loop completed a round recently with the fire dispatcher not stuck
(``progress_at``, sent with the heartbeat) and it reports no ``problem`` (a long-lived thread died;
the process then stops and exits for its supervisor to restart it). A task whose configuration
cannot be scheduled is no process problem: it is left out, shown as that task's ``config_error``.

The bodies are JSON and say no more than an anonymous caller may know (no host names or pids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError
from django.db.models import Exists, OuterRef
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from scheduler_app import conf
from scheduler_app.coordination import unexpired_lease
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
    # Of the alive: those working (see the module's docstring), all and active; why the others are not.
    working: int = 0
    active_working: int = 0
    local_working: int = 0
    problems: list[str] = field(default_factory=list)

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
            "working": self.working,
            "active_working": self.active_working,
            "problems": self.problems,
        }


def scheduler_health(max_age: float | None = None, host: str | None = None) -> SchedulerHealth:
    """One query: the scheduler processes whose heartbeat is younger than ``max_age`` seconds.

    Raises ``DatabaseError`` when the database cannot be read.
    """
    max_age = max_heartbeat_age() if max_age is None else max_age
    cutoff = timezone.now() - timedelta(seconds=max_age)
    rows = SchedulerProcess.objects.filter(kind=SchedulerProcess.Kind.SCHEDULER, last_heartbeat__gte=cutoff)
    # Progress is written with the heartbeat after the round it reports: allow for that round.
    progress_cutoff = cutoff - timedelta(seconds=2 * float(conf.get("POLL_INTERVAL")))
    health = SchedulerHealth(max_age=max_age)
    # Who leads is the lease's word (as in coordination.leader); the other live schedulers stand by.
    rows = rows.annotate(leads=Exists(unexpired_lease().filter(holder=OuterRef("pk"))))
    fields = ("leads", "last_heartbeat", "host", "progress_at", "problem")
    for active, heartbeat, process_host, progress_at, problem in rows.values_list(*fields):
        health.alive += 1
        health.active += active
        health.standby += not active
        health.local_alive += process_host == host
        if health.newest_heartbeat is None or heartbeat > health.newest_heartbeat:
            health.newest_heartbeat = heartbeat
        if problem:
            health.problems.append(problem)
        elif progress_at is None or progress_at < progress_cutoff:
            health.problems.append(f"no progress of its control loop in the last {max_age:g}s")
        else:
            health.working += 1
            health.active_working += active
            health.local_working += process_host == host
    return health


def unhealthy_reason(health: SchedulerHealth) -> str | None:
    """Why no active scheduler is working (None when one is): what ``ready`` answers."""
    if health.active_working:
        return None
    if health.active:
        return "the active scheduler is not processing fires: " + "; ".join(health.problems)
    if health.alive:
        return "no active scheduler: schedulers are standing by for the lease"
    return f"no scheduler heartbeat in the last {health.max_age:g}s (is `manage.py runscheduler` running?)"


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
    reason = unhealthy_reason(health)
    body = {"status": "ok" if reason is None else "unavailable", "database": "ok", "scheduler": health.as_dict()}
    if reason is not None:
        body["reason"] = reason
    return JsonResponse(body, status=200 if reason is None else 503)
