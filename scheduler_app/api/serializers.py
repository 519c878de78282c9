"""What the API shows of tasks, runs and scheduler processes, and what it accepts.

A task carries the seed's fields (``name`` ... ``fail_count``) first, then what an operator needs
to see more: where each effective value comes from (code or an override), the code's default
schedule, the timeout, who changed it last.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from scheduler_app.describe import describe_schedule
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord, Trigger
from scheduler_app.options import CHOICE, DATETIME, OPTIONS, SECONDS, WHOLE, Option
from scheduler_app.tasks.base import ScheduleType, TaskStatus
from scheduler_app.validation import (
    ASCII_INTEGER,
    ASCII_NUMBER,
    CRON_EXPRESSION_MAX_LENGTH,
    DISABLED_REASON_MAX_LENGTH,
    MAX_INTERVAL_SECONDS,
    MAX_TIMEOUT_SECONDS,
    MIN_SECONDS,
    TIMEZONE_MAX_LENGTH,
    disabled_reason_error,
    options_errors,
    schedule_errors,
    timeout_error,
)

SCHEDULE_TYPES = [t.value for t in ScheduleType]
RECORD_STATUSES = [s.value for s in TaskStatus]
TRIGGERS = [t.value for t in Trigger]
TASK_STATUSES = ["idle", "running"]
SOURCES = ["code", "override"]
# The bounds below are validation.py's constants, and every input serializer also runs
# validation.py's functions: the admin form and code obey the very same rules.
# Numbers as JSON numbers, or as strings of ASCII digits (what an HTML form posts).


class StrictIntegerField(serializers.IntegerField):
    """An integer; ``true`` and digits of other scripts (``"٣"``) are refused, not read as 1 and 3."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or (isinstance(data, str) and not ASCII_INTEGER.fullmatch(data.strip())):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A number; ``true``, ``"NaN"``, ``"Infinity"`` and digits of other scripts are refused."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or (isinstance(data, str) and not ASCII_NUMBER.fullmatch(data.strip())):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Text only: a number or a boolean is not silently turned into a string."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class BlankAsNullChoiceField(serializers.ChoiceField):
    """A choice stored as a string where "" means "none yet" (e.g. ``last_result`` before any run)."""

    def to_representation(self, value: Any) -> str | None:
        return None if value in ("", None) else str(value)


class DefaultScheduleSerializer(serializers.Serializer):
    """The schedule the task's code defines, which an override replaces until it is cleared."""

    schedule_type = serializers.ChoiceField(choices=SCHEDULE_TYPES, source="default_schedule_type", read_only=True)
    cron_expression = serializers.SerializerMethodField()
    interval_seconds = serializers.SerializerMethodField()
    timezone = serializers.SerializerMethodField()

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_cron_expression(self, config: TaskConfig) -> str | None:
        return config.default_cron_expression or None if config.default_schedule_type == ScheduleType.CRON else None

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_interval_seconds(self, config: TaskConfig) -> int | None:
        if config.default_schedule_type != ScheduleType.INTERVAL:
            return None
        return config.default_interval_seconds

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_timezone(self, config: TaskConfig) -> str | None:
        return config.default_timezone or None


def _option_field(option: Option) -> serializers.Field:
    """The API field of one schedule option (options.py); null sends it back to the code's value."""
    common: dict[str, Any] = {"allow_null": True, "required": False, "help_text": option.help_text}
    if option.kind == CHOICE:
        return serializers.ChoiceField(choices=option.choice_values, **common)
    if option.kind == DATETIME:
        return serializers.DateTimeField(**common)
    field = StrictIntegerField if option.kind == WHOLE else StrictFloatField
    return field(min_value=option.low, max_value=option.high, **common)


class OptionsSerializer(serializers.Serializer):
    """The schedule's policies. In a PATCH, each key given replaces the code's value, ``null`` goes
    back to it, and keys left out stay as they are."""

    def get_fields(self) -> dict[str, serializers.Field]:
        return {option.name: _option_field(option) for option in OPTIONS}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict) and (unknown := sorted(set(data) - set(self.fields))):
            known = ", ".join(self.fields)
            errors: dict[str, Any] = {key: [f"unknown schedule option; known: {known}"] for key in unknown}
            try:  # the known keys' mistakes are named in the same answer
                super().to_internal_value({key: value for key, value in data.items() if key in self.fields})
            except serializers.ValidationError as exc:
                errors.update(exc.detail if isinstance(exc.detail, dict) else {})
            raise serializers.ValidationError(errors)
        return super().to_internal_value(data)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # null sends a key back to the code's value: only the values given are checked here (the
        # service checks them again together with the policies in force).
        if errors := options_errors({key: value for key, value in attrs.items() if value is not None}):
            raise serializers.ValidationError({field: [message] for field, message in errors.items()})
        return attrs


def record_path(record_id: int) -> str:
    """Where one execution record lives (also the ``Location`` of a trigger's answer): reversed by
    the route's name, so that the serializers need not import the URL module that imports them."""
    return reverse("scheduler-api:record-detail", kwargs={"pk": record_id}).rstrip("/?")


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


_DATETIME = serializers.DateTimeField()
_RENDER: dict[str, Any] = {WHOLE: int, SECONDS: float, CHOICE: str, DATETIME: None}
# How each schedule option renders (OptionsSerializer's field types), for the fast task rendering.
_OPTION_TYPES: dict[str, Any] = {option.name: _RENDER[option.kind] for option in OPTIONS}


def _options_representation(options: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for key, kind in _OPTION_TYPES.items():
        value = options.get(key)
        if value is None:
            shown[key] = None
        elif kind is None:
            shown[key] = _DATETIME.to_representation(value)
        else:
            shown[key] = kind(value)
    return shown


def effective_options(config: TaskConfig) -> dict[str, Any]:
    """The policies in force, as the admin shows them: an unset overlap or catch-up window is what
    the task gets (overlap from ``allow_concurrent``, the window from the settings), not null."""
    return {
        **config.options,
        "overlap": config.overlap_policy.value,
        "catch_up_window_seconds": config.catch_up_window_seconds,
    }


class EffectiveOptionsSerializer(OptionsSerializer):
    def to_representation(self, config: TaskConfig) -> dict[str, Any]:
        return _options_representation(effective_options(config))


def waiting_counts(*statuses: str) -> dict[tuple[str, str], int]:
    """Runs waiting to start in ``statuses`` (``pending``, ``queued``), by task and status: one query."""
    rows = TaskExecutionRecord.objects.filter(status__in=statuses).values_list("task_id", "status")
    return {(task, status): n for task, status, n in rows.annotate(n=Count("pk")).order_by()}


def queued_counts(waiting: dict[tuple[str, str], int] | None = None) -> dict[str, int]:
    """Runs ``queued`` on a backend by task (from ``waiting`` when the caller has read it)."""
    waiting = waiting_counts(TaskStatus.QUEUED) if waiting is None else waiting
    return {task: n for (task, status), n in waiting.items() if status == TaskStatus.QUEUED}


class TaskSerializer(serializers.Serializer):
    """One registered task: configuration (code defaults + overrides) and runtime state."""

    # The seed's fields, in the seed's order.
    name = serializers.CharField(read_only=True)
    description = serializers.CharField(read_only=True)
    enabled = serializers.BooleanField(read_only=True)
    schedule_type = serializers.ChoiceField(choices=SCHEDULE_TYPES, read_only=True)
    cron_expression = serializers.CharField(read_only=True, allow_null=True)
    interval_seconds = serializers.IntegerField(read_only=True, allow_null=True)
    allow_concurrent = serializers.BooleanField(read_only=True)
    status = serializers.ChoiceField(choices=TASK_STATUSES, source="state.status", read_only=True)
    next_run_at = serializers.DateTimeField(source="state.next_run_at", read_only=True, allow_null=True)
    last_run_at = serializers.DateTimeField(source="state.last_run_at", read_only=True, allow_null=True)
    last_result = BlankAsNullChoiceField(
        choices=RECORD_STATUSES, source="state.last_result", read_only=True, allow_null=True
    )
    run_count = serializers.IntegerField(source="state.run_count", read_only=True)
    fail_count = serializers.IntegerField(source="state.fail_count", read_only=True)

    # What an operator needs besides.
    timezone = serializers.CharField(read_only=True, help_text="IANA zone the cron expression is read in.")
    schedule_description = serializers.SerializerMethodField()
    schedule_source = serializers.ChoiceField(
        choices=SOURCES, read_only=True, help_text="`override` after a reschedule through the API/admin."
    )
    default_schedule = DefaultScheduleSerializer(source="*", read_only=True)
    enabled_source = serializers.ChoiceField(
        choices=SOURCES, read_only=True, help_text="`override` after enable/disable."
    )
    disabled_reason = serializers.CharField(read_only=True)
    config_error = serializers.SerializerMethodField(
        help_text="Why the scheduler left the task out of the schedule (a stored value it cannot use); "
        "null while it is scheduled."
    )
    options = EffectiveOptionsSerializer(
        source="*",
        read_only=True,
        help_text="The schedule policies in force: overrides, else the code's, else the defaults "
        "(`overlap` from `allow_concurrent`, `catch_up_window_seconds` from SCHEDULER['MISFIRE_GRACE_SECONDS']).",
    )
    options_override = serializers.JSONField(
        read_only=True, help_text="The policies operators set (PATCH .../options)."
    )
    timeout_seconds = serializers.FloatField(read_only=True)
    timeout_source = serializers.ChoiceField(choices=["code", "override", "settings"], read_only=True)
    running_count = serializers.IntegerField(source="state.running_count", read_only=True)
    queued_runs = serializers.SerializerMethodField(
        help_text="Runs handed to a django.tasks backend that no worker has taken yet (README: Scaling out); "
        "they count in running_count too (the task's slot is held)."
    )
    last_finished_at = serializers.DateTimeField(source="state.last_finished_at", read_only=True, allow_null=True)
    last_success_at = serializers.DateTimeField(source="state.last_success_at", read_only=True, allow_null=True)
    consecutive_failures = serializers.IntegerField(source="state.consecutive_failures", read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    updated_by = serializers.SerializerMethodField()
    next_run_at_local = serializers.SerializerMethodField(
        help_text="next_run_at in the task's own time zone, with its UTC offset (daylight saving shows here)."
    )

    def to_representation(self, config: TaskConfig) -> dict[str, Any]:
        """The fields declared above, built directly.

        DRF's generic walk over ~50 fields (three nested serializers) took three quarters of
        /scheduler/status with 1,000 tasks. The declarations stay the schema; tests/test_api.py
        checks that this and ``generic_representation`` agree field by field.
        """
        state = config.state
        dt = _DATETIME.to_representation
        defaults_cron = config.default_schedule_type == ScheduleType.CRON
        return {
            "name": config.name,
            "description": config.description,
            "enabled": config.enabled,
            "schedule_type": str(config.schedule_type),
            "cron_expression": config.cron_expression,
            "interval_seconds": config.interval_seconds,
            "allow_concurrent": config.allow_concurrent,
            "status": state.status,
            "next_run_at": dt(state.next_run_at) if state.next_run_at else None,
            "last_run_at": dt(state.last_run_at) if state.last_run_at else None,
            "last_result": state.last_result or None,
            "run_count": state.run_count,
            "fail_count": state.fail_count,
            "timezone": config.timezone,
            "schedule_description": self.get_schedule_description(config),
            "schedule_source": config.schedule_source,
            "default_schedule": {
                "schedule_type": config.default_schedule_type,
                "cron_expression": (config.default_cron_expression or None) if defaults_cron else None,
                "interval_seconds": None if defaults_cron else config.default_interval_seconds,
                "timezone": config.default_timezone or None,
            },
            "enabled_source": config.enabled_source,
            "disabled_reason": config.disabled_reason,
            "config_error": self.get_config_error(config),
            "options": _options_representation(effective_options(config)),
            "options_override": config.options_override,
            "timeout_seconds": config.timeout_seconds,
            "timeout_source": config.timeout_source,
            "running_count": state.running_count,
            "queued_runs": self.get_queued_runs(config),
            "last_finished_at": dt(state.last_finished_at) if state.last_finished_at else None,
            "last_success_at": dt(state.last_success_at) if state.last_success_at else None,
            "consecutive_failures": state.consecutive_failures,
            "updated_at": dt(config.updated_at) if config.updated_at else None,
            "updated_by": self.get_updated_by(config),
            "next_run_at_local": self.get_next_run_at_local(config),
        }

    def generic_representation(self, config: TaskConfig) -> dict[str, Any]:
        """DRF's own rendering of the declared fields: the reference for ``to_representation``."""
        return dict(super().to_representation(config))

    @extend_schema_field(serializers.CharField())
    def get_schedule_description(self, config: TaskConfig) -> str:
        return describe_schedule(config.schedule_type, config.cron_expression, config.interval_seconds, config.timezone)

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_run_at_local(self, config: TaskConfig) -> str | None:
        next_run = config.state.next_run_at
        if not next_run:
            return None
        try:
            return next_run.astimezone(zone(config.timezone)).isoformat()
        except (ValueError, OSError):  # a zone stored before zones were checked (see config_error)
            return None

    @extend_schema_field(serializers.IntegerField())
    def get_queued_runs(self, config: TaskConfig) -> int:
        # One query for all the tasks a request shows (the context is shared by a list's items).
        counts = self.context.get("queued_runs")
        if counts is None:
            counts = queued_counts()
            if isinstance(self.context, dict):
                self.context["queued_runs"] = counts
        return counts.get(config.name, 0)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_config_error(self, config: TaskConfig) -> str | None:
        return config.config_error or None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_updated_by(self, config: TaskConfig) -> str | None:
        return _username(config.updated_by)


class RecordSerializer(serializers.ModelSerializer):
    """One run of a task (``TaskExecutionRecord``), with the fields of DESIGN.md first."""

    task = serializers.CharField(source="task_id", read_only=True)
    trigger = serializers.ChoiceField(choices=TRIGGERS, read_only=True)
    status = serializers.ChoiceField(choices=RECORD_STATUSES, read_only=True)
    data = serializers.JSONField(read_only=True)
    triggered_by = serializers.SerializerMethodField()
    lateness_seconds = serializers.FloatField(read_only=True, allow_null=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = TaskExecutionRecord
        fields = [
            "id",
            "task",
            "trigger",
            "status",
            "scheduled_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "message",
            "error",
            "data",
            "created_at",
            "lateness_seconds",
            "attempt",
            "retry_of",
            "jitter_seconds",
            "triggered_by",
            "origin",
            "worker_label",
            "url",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_triggered_by(self, record: TaskExecutionRecord) -> str | None:
        return _username(record.triggered_by)

    @extend_schema_field(serializers.CharField())
    def get_url(self, record: TaskExecutionRecord) -> str:
        return record_path(record.pk)


class TriggerResponseSerializer(RecordSerializer):
    """The queued (``pending``) record, and whether a scheduler is alive to run it."""

    scheduler_running = serializers.SerializerMethodField()
    detail = serializers.SerializerMethodField()

    class Meta(RecordSerializer.Meta):
        fields = [*RecordSerializer.Meta.fields, "scheduler_running", "detail"]
        read_only_fields = fields

    @extend_schema_field(serializers.BooleanField())
    def get_scheduler_running(self, record: TaskExecutionRecord) -> bool:
        return bool(self.context.get("scheduler_running"))

    @extend_schema_field(serializers.CharField())
    def get_detail(self, record: TaskExecutionRecord) -> str:
        if self.context.get("scheduler_running"):
            return "Queued; the scheduler process runs it within a few seconds."
        return "Queued, but no scheduler process is alive: the run starts when a scheduler starts."


class ProcessSerializer(serializers.ModelSerializer):
    """A process that runs tasks (a scheduler or a ``trigger_task`` command) and its heartbeat."""

    alive = serializers.SerializerMethodField()
    heartbeat_age_seconds = serializers.SerializerMethodField()
    label = serializers.CharField(read_only=True)

    class Meta:
        model = SchedulerProcess
        fields = [
            "id",
            "kind",
            "role",
            "host",
            "pid",
            "label",
            "started_at",
            "last_heartbeat",
            "heartbeat_age_seconds",
            "alive",
        ]
        read_only_fields = fields

    def _age(self, process: SchedulerProcess) -> float:
        now: datetime = self.context.get("now") or timezone.now()
        return max(0.0, (now - process.last_heartbeat).total_seconds())

    @extend_schema_field(serializers.BooleanField())
    def get_alive(self, process: SchedulerProcess) -> bool:
        return process.is_alive(self.context.get("now"))

    @extend_schema_field(serializers.FloatField())
    def get_heartbeat_age_seconds(self, process: SchedulerProcess) -> float:
        return round(self._age(process), 3)


class StatusSerializer(serializers.Serializer):
    """``GET /scheduler/status``: the seed's shape (``running``, ``task_count``, ``tasks``) and more."""

    running = serializers.BooleanField(help_text="True while a scheduler process has a fresh heartbeat.")
    task_count = serializers.IntegerField()
    tasks = TaskSerializer(many=True)
    process_count = serializers.IntegerField(help_text="Scheduler, command and worker processes alive.")
    processes = ProcessSerializer(
        many=True,
        required=False,
        help_text="Staff only: scheduler, command and worker processes with their heartbeats.",
    )
    leader = serializers.CharField(
        allow_null=True, required=False, help_text="Staff only: host:pid of the active scheduler, if any."
    )
    pending_runs = serializers.IntegerField(help_text="Manual runs and retries waiting for a scheduler to start them.")
    queued_runs = serializers.IntegerField(
        help_text="Runs handed to a django.tasks backend that no worker has taken yet (README: Scaling out)."
    )
    heartbeat_timeout_seconds = serializers.FloatField(
        help_text="A process whose heartbeat is older than this is dead (SCHEDULER['LEASE_SECONDS'])."
    )
    server_time = serializers.DateTimeField()


class DisableSerializer(serializers.Serializer):
    reason = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=DISABLED_REASON_MAX_LENGTH,
        default="",
        help_text="Shown with the task.",
    )

    def validate_reason(self, value: str) -> str:
        if message := disabled_reason_error(value):
            raise serializers.ValidationError(message)
        return value


class ScheduleSerializer(serializers.Serializer):
    """A schedule override, checked by the same rules as the schedules written in code."""

    schedule_type = serializers.ChoiceField(choices=SCHEDULE_TYPES)
    cron_expression = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=CRON_EXPRESSION_MAX_LENGTH,
        help_text="Five fields, for `cron`.",
    )
    interval_seconds = StrictIntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_INTERVAL_SECONDS, help_text="For `interval`."
    )
    timezone = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=TIMEZONE_MAX_LENGTH,
        help_text="IANA zone for cron expressions; empty means settings.TIME_ZONE.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors = schedule_errors(
            schedule_type=attrs.get("schedule_type"),
            cron_expression=attrs.get("cron_expression"),
            interval_seconds=attrs.get("interval_seconds"),
            timezone=attrs.get("timezone") or None,
        )
        if errors:
            raise serializers.ValidationError({field: [message] for field, message in errors.items()})
        return attrs


class TimeoutSerializer(serializers.Serializer):
    timeout_seconds = StrictFloatField(
        min_value=MIN_SECONDS,
        max_value=MAX_TIMEOUT_SECONDS,
        help_text="A run taking longer is stopped as `timeout` (at most 30 days).",
    )

    def validate_timeout_seconds(self, value: float) -> float:
        if message := timeout_error(value):
            raise serializers.ValidationError(message)
        return value


class HistoryFilterSerializer(serializers.Serializer):
    """Query parameters of the history lists; bad values are a 400 naming the parameter.
    (An empty range, ``since`` >= ``until``, is not an error: it holds no records.)"""

    status = serializers.CharField(required=False, help_text="One status or several, comma-separated.")
    trigger = serializers.ChoiceField(choices=TRIGGERS, required=False)
    since = serializers.DateTimeField(required=False, help_text="Records created at or after this time.")
    until = serializers.DateTimeField(required=False, help_text="Records created before this time.")

    def validate_status(self, value: str) -> list[str]:
        statuses = [part.strip() for part in value.split(",") if part.strip()]
        unknown = [s for s in statuses if s not in RECORD_STATUSES]
        if unknown or not statuses:
            raise serializers.ValidationError(
                f"unknown status {', '.join(map(repr, unknown)) or repr(value)}; expected one or more of "
                + ", ".join(RECORD_STATUSES)
            )
        return statuses


class ErrorSerializer(serializers.Serializer):
    """Every error answer: a sentence and a machine-readable code."""

    detail = serializers.CharField()
    code = serializers.CharField()
