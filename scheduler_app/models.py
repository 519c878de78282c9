"""Task configuration, state, run history, and the rows that coordinate scheduler processes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from scheduler_app import conf
from scheduler_app.tasks.base import OPTION_DEFAULTS, OverlapPolicy, ScheduleType, TaskSchedule, TaskStatus
from scheduler_app.validation import MAX_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from scheduler_app.tasks.base import BaseTask

SCHEDULE_TYPE_CHOICES = [(t.value, t.value) for t in ScheduleType]
# Runs that count as failures in `fail_count` and in failure streaks.
FAILURE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.TIMEOUT})


class TaskConfigQuerySet(models.QuerySet["TaskConfig"]):
    """``TaskConfig``'s effective values (an override, else the code's default) as SQL filters."""

    _ENABLED = Q(enabled_override=True) | Q(enabled_override__isnull=True, default_enabled=True)

    def enabled(self) -> TaskConfigQuerySet:
        return self.filter(self._ENABLED)

    def disabled(self) -> TaskConfigQuerySet:
        return self.exclude(self._ENABLED)

    def of_schedule_type(self, schedule_type: str) -> TaskConfigQuerySet:
        return self.filter(
            Q(schedule_type_override=schedule_type) | Q(schedule_type_override="", default_schedule_type=schedule_type)
        )


class TaskConfig(models.Model):
    """One row per task: the code's defaults (refreshed at start-up) and the operators' overrides."""

    name = models.CharField(primary_key=True, max_length=100)
    description = models.TextField(blank=True)
    registered = models.BooleanField(
        default=True, help_text="False when the task is no longer defined in code; its history is kept."
    )

    default_enabled = models.BooleanField(default=True)
    default_schedule_type = models.CharField(max_length=16, choices=SCHEDULE_TYPE_CHOICES)
    default_cron_expression = models.CharField(max_length=200, blank=True)
    default_interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    default_timezone = models.CharField(max_length=64, blank=True)
    default_timeout_seconds = models.FloatField(
        null=True, blank=True, help_text="The task class's `timeout`; empty means SCHEDULER['DEFAULT_TIMEOUT']."
    )
    allow_concurrent = models.BooleanField(default=False)
    default_options = models.JSONField(
        default=dict, blank=True, help_text="The code's schedule policies (jitter, overlap, catch-up, retries, dates)."
    )

    enabled_override = models.BooleanField(
        null=True, blank=True, help_text="Set by enable/disable; empty means the code's `enabled`."
    )
    disabled_reason = models.TextField(blank=True)
    schedule_type_override = models.CharField(
        max_length=16, choices=SCHEDULE_TYPE_CHOICES, blank=True, help_text="Empty means the code's schedule."
    )
    cron_expression_override = models.CharField(max_length=200, blank=True)
    interval_seconds_override = models.PositiveIntegerField(null=True, blank=True)
    timezone_override = models.CharField(max_length=64, blank=True)
    timeout_override = models.FloatField(null=True, blank=True)
    options_override = models.JSONField(
        default=dict, blank=True, help_text="Schedule policies set by operators; each key wins over the code's."
    )
    # Written by the active scheduler (without a revision bump): why it left the task out of the
    # schedule, e.g. a value stored before today's validation; empty while the task is scheduled.
    config_error = models.TextField(
        blank=True, help_text="Why the scheduler cannot schedule this task; empty when it can."
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Bumped by every change; schedulers compare the sum, which no clock skew can fool.
    revision = models.PositiveBigIntegerField(default=0)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = TaskConfigQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "task"
        permissions = [("operate_task", "Can trigger, enable, disable and reschedule tasks")]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def code_defaults(cls, task: BaseTask) -> dict[str, object]:
        schedule = task.schedule
        return {
            "description": task.description or (type(task).__doc__ or "").strip(),
            "registered": True,
            "default_enabled": bool(task.enabled),
            "default_schedule_type": ScheduleType(schedule.schedule_type).value,
            "default_cron_expression": (schedule.cron_expression or "").strip(),
            "default_interval_seconds": int(schedule.interval_seconds) if schedule.interval_seconds else None,
            "default_timezone": schedule.timezone or "",
            "default_timeout_seconds": float(task.timeout) if task.timeout is not None else None,
            "allow_concurrent": bool(schedule.allow_concurrent),
            "default_options": schedule.options(),
        }

    @property
    def enabled(self) -> bool:
        # The same rule in SQL: TaskConfigQuerySet.enabled().
        return self.default_enabled if self.enabled_override is None else self.enabled_override

    @property
    def enabled_source(self) -> str:
        return "code" if self.enabled_override is None else "override"

    @property
    def schedule_overridden(self) -> bool:
        return bool(self.schedule_type_override)

    @property
    def schedule_source(self) -> str:
        return "override" if self.schedule_overridden else "code"

    @property
    def schedule_type(self) -> str:
        return self.schedule_type_override or self.default_schedule_type

    @property
    def cron_expression(self) -> str | None:
        if self.schedule_type != ScheduleType.CRON:
            return None
        return self.cron_expression_override if self.schedule_overridden else self.default_cron_expression

    @property
    def interval_seconds(self) -> int | None:
        if self.schedule_type != ScheduleType.INTERVAL:
            return None
        return self.interval_seconds_override if self.schedule_overridden else self.default_interval_seconds

    @property
    def timezone(self) -> str:
        zone = self.timezone_override if self.schedule_overridden else self.default_timezone
        return zone or settings.TIME_ZONE

    @property
    def timeout_seconds(self) -> float:
        """The effective timeout: the operators' override, else the task class's, else the settings'."""
        return self.timeout_with_fallback(None)

    def timeout_with_fallback(self, fallback: float | None) -> float:
        """The effective timeout when ``fallback`` (e.g. ``trigger_task --timeout``) stands in for
        ``SCHEDULER["DEFAULT_TIMEOUT"]``; the one rule every run and every display uses."""
        chosen = self.timeout_override
        if chosen is None:
            chosen = self.default_timeout_seconds if self.default_timeout_seconds is not None else fallback
        if chosen is None:
            # Only then: the settings lookup costs more than the rest, and every run asks.
            chosen = conf.get("DEFAULT_TIMEOUT")
        # Capped at validation's bound: a value stored before the bound existed must not overflow a wait.
        return min(float(chosen), MAX_TIMEOUT_SECONDS)

    @property
    def timeout_source(self) -> str:
        if self.timeout_override is not None:
            return "override"
        return "code" if self.default_timeout_seconds is not None else "settings"

    @property
    def options(self) -> dict[str, object]:
        """Effective policies: built-in defaults, then the code's, then the operators' overrides."""
        return {**OPTION_DEFAULTS, **(self.default_options or {}), **(self.options_override or {})}

    def option(self, name: str) -> object:
        """One effective policy, what ``options.get(name)`` gives, without merging the layers per call.

        The scheduler asks several per fire. The merge is kept while ``default_options`` and
        ``options_override`` are the same objects: they are replaced when they change (assignment,
        a read from the database), never changed in place.
        """
        default, override = self.default_options, self.options_override
        kept = self.__dict__.get("_merged_options")
        if kept is None or kept[0] is not default or kept[1] is not override:
            kept = self.__dict__["_merged_options"] = (default, override, self.options)
        return kept[2].get(name)

    @property
    def overlap_policy(self) -> OverlapPolicy:
        overlap = self.option("overlap")
        if overlap:
            return OverlapPolicy(overlap)
        return OverlapPolicy.ALLOW if self.allow_concurrent else OverlapPolicy.SKIP

    @property
    def catch_up_window_seconds(self) -> float:
        window = self.option("catch_up_window_seconds")
        return float(conf.get("MISFIRE_GRACE_SECONDS") if window is None else window)  # type: ignore[arg-type]

    def effective_schedule(self) -> TaskSchedule:
        return TaskSchedule(
            schedule_type=self.schedule_type,
            cron_expression=self.cron_expression,
            interval_seconds=self.interval_seconds,
            allow_concurrent=self.allow_concurrent,
            timezone=self.timezone,
        )

    def schedule_fingerprint(self) -> str:
        """Identifies the effective trigger; the scheduler replaces a job when it changes."""
        options = self.options
        window = f"|{options.get('start_date') or ''}|{options.get('end_date') or ''}"
        if self.schedule_type == ScheduleType.CRON:
            return f"cron|{self.cron_expression}|{self.timezone}{window}"
        return f"interval|{self.interval_seconds}{window}"


class TaskState(models.Model):
    """Runtime state of one task, updated by the runner in the same transaction as its records."""

    task = models.OneToOneField(
        TaskConfig, primary_key=True, on_delete=models.CASCADE, related_name="state", db_column="task_name"
    )
    running_count = models.PositiveIntegerField(default=0)
    # The pending record of the one fire an overlap policy of "buffer_one" keeps for later.
    buffered_record_id = models.BigIntegerField(null=True, blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_result = models.CharField(max_length=16, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    run_count = models.PositiveIntegerField(default=0)
    fail_count = models.PositiveIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "task state"

    def __str__(self) -> str:
        return f"{self.task_id}: {self.status}"

    @property
    def status(self) -> str:
        return "running" if self.running_count else "idle"


class Trigger(models.TextChoices):
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    RETRY = "retry"


class TaskExecutionRecord(models.Model):
    """One row per fire or trigger of a task: run, skipped, missed or interrupted."""

    Status = models.TextChoices("Status", [(s.name, s.value) for s in TaskStatus])

    id = models.BigAutoField(primary_key=True)
    # Not indexed on its own: record_task_latest (task, -id) serves every lookup by task, and each index
    # is pages that every fire's commit writes (Meta.indexes).
    task = models.ForeignKey(
        TaskConfig, on_delete=models.CASCADE, related_name="records", db_column="task_name", db_index=False
    )
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    status = models.CharField(max_length=16, choices=Status.choices)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    message = models.TextField(blank=True)
    error = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    origin = models.CharField(
        max_length=100, blank=True, help_text="Where the run was asked for: scheduler, api, admin, command."
    )
    worker = models.ForeignKey(
        "SchedulerProcess", null=True, blank=True, on_delete=models.SET_NULL, related_name="records"
    )
    worker_label = models.CharField(max_length=255, blank=True, help_text="host:pid of the process that ran it.")
    attempt = models.PositiveSmallIntegerField(default=1, help_text="1 for a first run, 2 for its first retry, ...")
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="retries",
        help_text="The first run of which this is a retry.",
        db_index=False,
    )
    jitter_seconds = models.FloatField(null=True, blank=True, help_text="Random delay applied before the run.")

    class Meta:
        ordering = ["-id"]
        verbose_name = "execution record"
        indexes = [
            models.Index(fields=["task", "-id"], name="record_task_latest"),
            # Open runs are few among millions of records; the scheduler looks for them every second.
            # One partial index per status: SQLite uses a partial index only for a query that
            # repeats its condition, and `status IN (...)` is not implied by `status = 'pending'`.
            models.Index(fields=["id"], name="record_pending", condition=Q(status="pending")),
            models.Index(fields=["id"], name="record_running", condition=Q(status="running")),
            models.Index(fields=["id"], name="record_queued", condition=Q(status="queued")),
            # A fire's record has no user and is no retry: indexed, its NULLs cost every fire's commit
            # two more pages (a fire wrote 12 pages of write-ahead log, 9 after these three changes,
            # BENCHMARKS.md). The lookups by user or by first run (deletions) name a value, which
            # implies IS NOT NULL, so these partial indexes serve them.
            models.Index(fields=["triggered_by"], name="record_triggered_by", condition=Q(triggered_by__isnull=False)),
            models.Index(fields=["retry_of"], name="record_retry_of", condition=Q(retry_of__isnull=False)),
        ]
        constraints = [
            # Two schedulers that both believe they lead still cannot both run one fire.
            models.UniqueConstraint(
                fields=["task", "scheduled_at"], condition=Q(trigger="scheduled"), name="unique_scheduled_fire"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} #{self.pk} {self.status}"

    @property
    def lateness_seconds(self) -> float | None:
        if self.scheduled_at is None or self.started_at is None:
            return None
        return (self.started_at - self.scheduled_at).total_seconds()


def heartbeat_cutoff(now: datetime | None = None) -> datetime:
    """The one rule of "alive": a process whose last heartbeat is older than this is dead.

    SCHEDULER["LEASE_SECONDS"], the same span as the leader lease, so that a leader that stops
    heartbeating loses the lease when it is seen dead.
    """
    return (now or timezone.now()) - timedelta(seconds=float(conf.get("LEASE_SECONDS")))


class ProcessQuerySet(models.QuerySet["SchedulerProcess"]):
    def alive(self, now: datetime | None = None) -> ProcessQuerySet:
        return self.filter(last_heartbeat__gte=heartbeat_cutoff(now))

    def dead(self, now: datetime | None = None) -> ProcessQuerySet:
        return self.filter(last_heartbeat__lt=heartbeat_cutoff(now))


class SchedulerProcess(models.Model):
    """A live process that runs tasks (a scheduler or a `trigger_task` command), proven by heartbeats."""

    class Kind(models.TextChoices):
        SCHEDULER = "scheduler"
        COMMAND = "command"
        # A django.tasks worker (e.g. `manage.py db_worker`) running fleet runs (scheduler_app/executors).
        WORKER = "worker"

    class Role(models.TextChoices):
        ACTIVE = "active"
        STANDBY = "standby"
        NONE = ""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    role = models.CharField(max_length=16, choices=Role.choices, blank=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(default=timezone.now, db_index=True)
    # When the scheduler's control loop last completed a round with its threads working (written
    # with the next heartbeat); "healthy" means this is fresh and `problem` is empty.
    progress_at = models.DateTimeField(null=True, blank=True)
    problem = models.TextField(blank=True, help_text="Why this process cannot do its work, e.g. a thread died.")

    objects = ProcessQuerySet.as_manager()

    class Meta:
        ordering = ["started_at"]
        verbose_name = "scheduler process"
        verbose_name_plural = "scheduler processes"

    def __str__(self) -> str:
        return f"{self.kind} {self.host}:{self.pid}"

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"

    def is_alive(self, now: datetime | None = None) -> bool:
        """A fresh heartbeat (``heartbeat_cutoff``), judged from this row as it was read."""
        return self.last_heartbeat >= heartbeat_cutoff(now)


class SchedulerLease(models.Model):
    """The single leader lease: only its holder runs APScheduler and writes the job store."""

    name = models.CharField(primary_key=True, max_length=50, default="default")
    holder = models.UUIDField(null=True, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"lease {self.name} held by {self.holder}"
