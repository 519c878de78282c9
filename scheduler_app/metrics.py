"""Prometheus metrics of every scheduler process, read from the database at scrape time.

The web process runs no task, so in-process counters there would stay at zero; and schedulers
come and go (fail-over, restarts). Everything here is therefore derived from the shared tables:

* counters and histograms (runs by task and status, run duration, fire lateness) are totals of
  ``TaskExecutionRecord`` rows. The first scrape of a process aggregates the whole history once;
  later scrapes only read the records that appeared or finished since (an id cursor plus the set
  of runs that were still open), so a scrape costs a few indexed queries however long the history
  is, and pruning old records never makes a counter go down.
* gauges (running, pending, queued, last success, processes alive, the active scheduler) are read fresh
  from ``TaskState``, ``TaskConfig`` and ``SchedulerProcess``: a handful of aggregate queries,
  never one per task.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import DatabaseError
from django.db.models import Count, FloatField, Func, Max, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from rest_framework.exceptions import AuthenticationFailed, Throttled

from scheduler_app import conf
from scheduler_app.api.authentication import password_user
from scheduler_app.coordination import leader
from scheduler_app.health import scheduler_health
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord, Trigger
from scheduler_app.tasks.base import OPEN_STATUSES, RAN_STATUSES, TaskStatus

logger = logging.getLogger("scheduler_app.metrics")

# Upper bounds in seconds. Runs last from milliseconds (a ping) to an hour (the default timeout).
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Fires are meant to start within tens of milliseconds of their time (see DESIGN.md's targets).
LATENESS_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Records younger than this are counted at a later scrape: on PostgreSQL an id can become visible
# after a higher one (two transactions committing out of order), and the cursor must not pass it.
CURSOR_LAG_SECONDS = 2.0


@dataclass
class Histogram:
    """Cumulative bucket counts (Prometheus' `le` semantics), their sum and count."""

    buckets: list[int]
    total: float = 0.0
    count: int = 0

    def family_sample(self, bounds: tuple[float, ...]) -> tuple[list[tuple[str, float]], float]:
        pairs = [(_bound(b), float(n)) for b, n in zip(bounds, self.buckets, strict=True)]
        return [*pairs, ("+Inf", float(self.count))], self.total


@dataclass
class Totals:
    """Everything counted so far from finished records; grows only."""

    runs: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    durations: dict[str, Histogram] = field(default_factory=dict)
    lateness: dict[str, Histogram] = field(default_factory=dict)

    def copy(self) -> Totals:
        """A snapshot that a concurrent scrape cannot change while it is being written out."""
        return Totals(
            runs=dict(self.runs),
            durations={k: Histogram(list(h.buckets), h.total, h.count) for k, h in self.durations.items()},
            lateness={k: Histogram(list(h.buckets), h.total, h.count) for k, h in self.lateness.items()},
        )


def _bound(value: float) -> str:
    return repr(float(value))


def _seconds(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


class RecordTotals:
    """Incremental totals of finished records, safe to share between the threads of a web process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.totals = Totals()
        # Highest record id already looked at (None: nothing yet), and ids that were still open then.
        self.cursor: int | None = None
        self.open_ids: set[int] = set()

    def refresh(self) -> tuple[Totals, dict[tuple[str, str], int]]:
        """Count what finished since the last call; returns a copy of the totals and the open runs.

        Every open (pending or running) record is either one we saw open before, or newer than the
        cursor: so the open runs come from the primary key index, not from a scan of the history.
        """
        with self.lock:
            records = TaskExecutionRecord.objects
            top = records.aggregate(top=Max("pk"))["top"] or 0
            if self.cursor is not None and 0 < top < self.cursor:
                # Ids never go back (pruning deletes the oldest; an empty table keeps its sequence),
                # unless the database was replaced by an older copy: start again.
                logger.info("execution records went back from id %s to %s; recounting", self.cursor, top)
                self.reset()
            start = self.cursor or 0
            old_enough = timezone.now() - timedelta(seconds=CURSOR_LAG_SECONDS)
            # The newest records old enough to have committed; ids and creation times rise together,
            # and a smaller `end` than the true one only delays counting.
            settled = records.filter(created_at__lte=old_enough).order_by("-created_at").values_list("pk", flat=True)
            end = min(top, max([start, *settled[:50]]))
            seen_before = Q(pk__in=self.open_ids) if self.open_ids else Q(pk__in=[])
            # Open runs first: a run that finishes between the two queries is counted next time.
            # Two queries, not one with OR: SQLite answers each from the primary key, the OR by a scan.
            open_rows = list(
                records.filter(pk__gt=start, status__in=OPEN_STATUSES).values_list("pk", "task_id", "status")
            )
            if self.open_ids:
                open_rows += records.filter(pk__in=self.open_ids, pk__lte=start, status__in=OPEN_STATUSES).values_list(
                    "pk", "task_id", "status"
                )
            still_open = {pk for pk, _, _ in open_rows if pk <= end}
            window = Q(pk__gt=start, pk__lte=end) | seen_before
            finished = records.filter(window).exclude(status__in=OPEN_STATUSES).exclude(pk__in=still_open)
            self._add(finished)
            self.cursor = end
            self.open_ids = still_open
            open_runs: dict[tuple[str, str], int] = defaultdict(int)
            for _, task, status in open_rows:
                open_runs[(task, status)] += 1
            return self.totals.copy(), open_runs

    def _add(self, finished: Any) -> None:
        totals = self.totals
        for row in finished.values("task_id", "status").annotate(n=Count("pk")).order_by():
            totals.runs[(row["task_id"], row["status"])] += row["n"]

        ran = finished.filter(status__in=RAN_STATUSES, duration_seconds__isnull=False)
        buckets = {f"b{i}": Count("pk", filter=Q(duration_seconds__lte=b)) for i, b in enumerate(DURATION_BUCKETS)}
        for row in ran.values("task_id").annotate(n=Count("pk"), total=Sum("duration_seconds"), **buckets).order_by():
            _merge(totals.durations, row, len(DURATION_BUCKETS))

        fired = finished.filter(trigger=Trigger.SCHEDULED, scheduled_at__isnull=False, started_at__isnull=False)
        fired = fired.alias(late=SecondsBetween("started_at", "scheduled_at"))
        buckets = {f"b{i}": Count("pk", filter=Q(late__lte=b)) for i, b in enumerate(LATENESS_BUCKETS)}
        for row in fired.values("task_id").annotate(n=Count("pk"), total=Sum("late"), **buckets).order_by():
            _merge(totals.lateness, row, len(LATENESS_BUCKETS))


class SecondsBetween(Func):
    """``end - start`` in seconds, computed by the database's own functions.

    Django's portable datetime arithmetic calls back into Python for every row on SQLite, which
    made the first scrape of a long history take seconds per 100,000 records.
    """

    arity = 2
    output_field = FloatField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:  # PostgreSQL
        return super().as_sql(
            compiler, connection, template="EXTRACT(EPOCH FROM (%(expressions)s))", arg_joiner=" - ", **extra
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra,
        )


def _merge(into: dict[str, Histogram], row: dict[str, Any], size: int) -> None:
    histogram = into.setdefault(row["task_id"], Histogram(buckets=[0] * size))
    for i in range(size):
        histogram.buckets[i] += row[f"b{i}"]
    histogram.count += row["n"]
    histogram.total += _seconds(row["total"])


class SchedulerCollector(Collector):
    """Builds every metric family from the database when Prometheus scrapes."""

    def __init__(self) -> None:
        self.records = RecordTotals()

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        totals, open_runs = self.records.refresh()
        yield from self._record_metrics(totals)
        yield from self._task_metrics(open_runs)
        yield from self._process_metrics()
        scrape = GaugeMetricFamily(
            "scheduler_metrics_scrape_duration_seconds", "Seconds this scrape spent reading the database."
        )
        scrape.add_metric([], time.monotonic() - started)
        yield scrape

    def _record_metrics(self, totals: Totals) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "scheduler_runs",
            "Finished execution records by task and status (success, failed, timeout, skipped, missed, interrupted).",
            labels=["task", "status"],
        )
        for (task, status), count in sorted(totals.runs.items()):
            runs.add_metric([task, status], count)
        yield runs

        durations = HistogramMetricFamily(
            "scheduler_run_duration_seconds",
            "Seconds a run's code took (runs that ran: success, failed, timeout, interrupted).",
            labels=["task"],
        )
        for task, histogram in sorted(totals.durations.items()):
            buckets, total = histogram.family_sample(DURATION_BUCKETS)
            durations.add_metric([task], buckets, total)
        yield durations

        lateness = HistogramMetricFamily(
            "scheduler_fire_lateness_seconds",
            "Seconds between a scheduled fire's time and the start of its run (or of its skip); includes jitter.",
            labels=["task"],
        )
        for task, histogram in sorted(totals.lateness.items()):
            buckets, total = histogram.family_sample(LATENESS_BUCKETS)
            lateness.add_metric([task], buckets, total)
        yield lateness

    def _task_metrics(self, open_runs: dict[tuple[str, str], int]) -> Iterator[Metric]:
        tasks = list(TaskConfig.objects.filter(registered=True).select_related("state").order_by("name"))
        running = GaugeMetricFamily(
            "scheduler_runs_in_progress", "Runs executing now, in any process.", labels=["task"]
        )
        pending = GaugeMetricFamily(
            "scheduler_runs_pending", "Manual runs and retries waiting for a scheduler.", labels=["task"]
        )
        queued = GaugeMetricFamily(
            "scheduler_runs_queued",
            "Runs handed to a django.tasks backend that no worker has taken yet (README: Scaling out).",
            labels=["task"],
        )
        enabled = GaugeMetricFamily("scheduler_task_enabled", "1 when the task is enabled.", labels=["task"])
        streak = GaugeMetricFamily(
            "scheduler_task_consecutive_failures", "Failed or timed-out runs since the last success.", labels=["task"]
        )
        last_success = GaugeMetricFamily(
            "scheduler_task_last_success_timestamp_seconds",
            "Unix time of the task's last successful run (absent if it never succeeded).",
            labels=["task"],
        )
        next_run = GaugeMetricFamily(
            "scheduler_task_next_run_timestamp_seconds", "Unix time of the task's next fire.", labels=["task"]
        )
        config_error = GaugeMetricFamily(
            "scheduler_task_config_error",
            "1 when the scheduler left the task out because its configuration cannot be scheduled (see the "
            "task's config_error).",
            labels=["task"],
        )
        for task in tasks:
            name = task.name
            running.add_metric([name], open_runs.get((name, TaskStatus.RUNNING), 0))
            pending.add_metric([name], open_runs.get((name, TaskStatus.PENDING), 0))
            queued.add_metric([name], open_runs.get((name, TaskStatus.QUEUED), 0))
            enabled.add_metric([name], 1 if task.enabled else 0)
            config_error.add_metric([name], 1 if task.config_error else 0)
            state = getattr(task, "state", None)
            if state is None:
                continue
            streak.add_metric([name], state.consecutive_failures)
            if state.last_success_at is not None:
                last_success.add_metric([name], state.last_success_at.timestamp())
            if state.next_run_at is not None and task.enabled:
                next_run.add_metric([name], state.next_run_at.timestamp())
        yield from (running, pending, queued, enabled, config_error, streak, last_success, next_run)

    def _process_metrics(self) -> Iterator[Metric]:
        now = timezone.now()
        alive = list(SchedulerProcess.objects.alive().order_by("started_at"))
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for process in alive:
            counts[(process.kind, process.role or "none")] += 1
        processes = GaugeMetricFamily(
            "scheduler_processes_alive",
            "Processes with a fresh heartbeat, by kind (scheduler, command, worker) and role (active, standby, none).",
            labels=["kind", "role"],
        )
        for kind in SchedulerProcess.Kind.values:
            roles = ("active", "standby") if kind == SchedulerProcess.Kind.SCHEDULER else ("none",)
            for role in roles:
                processes.add_metric([kind, role], counts.get((kind, role), 0))
        yield processes

        schedulers = [p for p in alive if p.kind == SchedulerProcess.Kind.SCHEDULER]
        up = GaugeMetricFamily("scheduler_up", "1 while the leader (the lease holder) has a fresh heartbeat.")
        up.add_metric([], 1 if leader(schedulers) else 0)
        yield up

        health = scheduler_health()
        healthy = GaugeMetricFamily(
            "scheduler_healthy",
            "1 while an active scheduler is processing fires (fresh heartbeat and loop progress, no dead thread): "
            "what /scheduler/health/ready answers.",
        )
        healthy.add_metric([], 1 if health.active_working else 0)
        yield healthy
        troubled = GaugeMetricFamily(
            "scheduler_processes_unhealthy",
            "Live scheduler processes that are not processing fires (a dead thread, a stalled control loop).",
        )
        troubled.add_metric([], len(health.problems))
        yield troubled

        info = GaugeMetricFamily(
            "scheduler_process_heartbeat_age_seconds",
            "Seconds since each live scheduler process's last heartbeat; `role` says which one is active.",
            labels=["process", "role"],
        )
        for process in schedulers:
            info.add_metric([process.label, process.role or "none"], (now - process.last_heartbeat).total_seconds())
        yield info


collector = SchedulerCollector()
registry = CollectorRegistry(auto_describe=False)
registry.register(collector)


# -- the view ------------------------------------------------------------------------------------


def _token() -> str:
    name = conf.get("METRICS_TOKEN_ENV")
    return os.environ.get(name, "") if name else ""


def _refusal(status: int, reason: str, **headers: str) -> JsonResponse:
    codes = {401: "not_authenticated", 403: "forbidden", 429: "throttled"}
    response = JsonResponse({"detail": reason, "code": codes[status]}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="scheduler metrics"'
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _refused(request: HttpRequest) -> JsonResponse | None:
    """Why this request may not read the metrics (a JSON 401/403/429), or None when it may.

    Checks the bearer token, Basic auth, then the session. Basic auth is the API's
    (``password_user``): NUL bytes refused, failed tries throttled.
    """
    if conf.get("METRICS_ALLOW_ANONYMOUS"):
        return None
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        token = _token()
        if token and hmac.compare_digest(credentials.strip().encode(), token.encode()):
            return None
        return _refusal(401, "invalid bearer token")
    user = request.user if hasattr(request, "user") else None
    if scheme == "basic":
        try:
            username, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return _refusal(401, "malformed basic credentials")
        try:
            user = password_user(request, username, password)
        except Throttled as exc:
            return _refusal(429, str(exc.detail), Retry_After=f"{exc.wait or 1:.0f}")
        except AuthenticationFailed:
            return _refusal(401, "invalid username or password")
    if user is None or not user.is_authenticated:
        return _refusal(401, "authentication required: a staff user, or the metrics bearer token")
    if not (user.is_active and user.is_staff):
        return _refusal(403, "only staff users may read the metrics")
    return None


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if refusal := _refused(request):
        return refusal
    try:
        body = generate_latest(registry)
    except DatabaseError as exc:
        logger.warning("metrics scrape failed: database unavailable (%s)", exc)
        return JsonResponse({"detail": "database unavailable", "code": "database_unavailable"}, status=503)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
