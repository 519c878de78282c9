"""How tasks and runs read in the admin: the list columns, badges and read-only fields.

The words are chosen here; the markup is in templates/admin/scheduler_app/display/, where Django's
template engine escapes every value (a task's message or error is user data).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.admin.templatetags.admin_list import _boolean_icon
from django.contrib.admin.utils import quote
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
from django.utils.timesince import timesince, timeuntil

from scheduler_app import describe, palette
from scheduler_app.describe import describe_duration
from scheduler_app.models import TaskConfig, TaskExecutionRecord, TaskState
from scheduler_app.tasks.base import OPTION_DEFAULTS, ScheduleType, TaskStatus
from scheduler_app.trends import Trend, chart, task_trend
from scheduler_app.triggers import build_trigger, next_fire_times

PREVIEW_COUNT = 5
LATEST_RUNS = 10
RECENT_CHANGES = 10
EMPTY = "—"


def render(snippet: str, **context: Any) -> SafeString:
    """A snippet of templates/admin/scheduler_app/display/, without the file's closing newline.

    The template escaped every value it placed, so its output is safe as a whole.
    """
    html = render_to_string(f"admin/scheduler_app/display/{snippet}.html", context)
    return mark_safe(html.removesuffix("\n"))


# -- how things read -----------------------------------------------------------------------------


def describe_run_time(seconds: float | None) -> str:
    """How long a run took: "12.3 ms", "2.50 s", "1 minute 3 seconds"."""
    if seconds is None:
        return EMPTY
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    return describe_duration(seconds)


def describe_schedule(schedule_type: str, cron: str | None, interval: int | None, zone: str | None) -> SafeString:
    """The schedule's words (describe.describe_schedule, as the API gives them), under a cron's code."""
    prose = describe.describe_schedule(schedule_type, cron, interval, zone or settings.TIME_ZONE)
    return render("schedule", cron=cron or "", is_cron=schedule_type == ScheduleType.CRON, prose=prose, empty=EMPTY)


def badge(text: str, colour: str) -> SafeString:
    return render("badge", text=text, colour=colour)


def quiet(text: str, css_class: str) -> SafeString:
    """A word that stands for no value, in grey: "never run", "idle"."""
    return render("quiet", text=text, css_class=css_class)


def result_badge(result: str | None) -> SafeString:
    if not result:
        return quiet("never run", "sched-never")
    return badge(result, palette.status_colour(result))


def source_badge(source: str) -> SafeString:
    colour = palette.OVERRIDE if source == "override" else palette.NEUTRAL
    return badge(source if source != "code" else "code default", colour)


def show_time(value: datetime | None, relative: bool = True) -> SafeString | str:
    """One format everywhere, with its zone: "2026-11-30 17:04:10 UTC"; ``relative`` adds "in 5 minutes"."""
    if value is None:
        return EMPTY
    local = timezone.localtime(value)
    if not relative:
        return local.strftime("%Y-%m-%d %H:%M:%S %Z")
    now = timezone.now()
    seconds = (value - now).total_seconds()
    if abs(seconds) < 60:  # timesince() would say "0 minutes" for anything under a minute
        words = f"in {seconds:.0f} s" if seconds > 0 else f"{-seconds:.0f} s ago"
    else:
        words = f"in {timeuntil(value, now)}" if value > now else f"{timesince(value, now)} ago"
    return render("time", date=local.strftime("%Y-%m-%d"), clock=local.strftime("%H:%M:%S %Z"), words=words)


def state_of(config: TaskConfig) -> TaskState | None:
    try:
        return config.state
    except ObjectDoesNotExist:
        return None


def preview_times(config: TaskConfig, count: int = PREVIEW_COUNT) -> list[datetime]:
    return next_fire_times(build_trigger(config), timezone.now(), count)


def render_times(times: Iterable[datetime], zone: str) -> SafeString:
    tz = ZoneInfo(zone)
    shown = [t.astimezone(tz).strftime("%a %Y-%m-%d %H:%M:%S %Z") for t in times]
    return render("times", times=shown, empty=EMPTY)


def render_trend(trend: Trend) -> SafeString:
    return render("trend", **chart(trend))


def requested_by(record: TaskExecutionRecord) -> str:
    if record.triggered_by_id:
        return f"{record.triggered_by} ({record.origin or record.trigger})"
    return record.origin or ("scheduler" if record.trigger == "scheduled" else EMPTY)


def record_url(pk: int) -> str:
    return reverse("admin:scheduler_app_taskexecutionrecord_change", args=[pk])


# -- a task's columns and read-only fields ------------------------------------------------------


class TaskColumns(admin.ModelAdmin):
    """The task list's columns and the task page's read-only fields (TaskConfigAdmin's)."""

    @admin.display(description="description")
    def short_description(self, obj: TaskConfig) -> str:
        return Truncator(obj.description).chars(80) or EMPTY

    @admin.display(description="enabled")
    def enabled_display(self, obj: TaskConfig) -> SafeString:
        return render(
            "enabled",
            icon=_boolean_icon(obj.enabled),
            overridden=obj.enabled_override is not None,
            reason=obj.disabled_reason if not obj.enabled else "",
        )

    @admin.display(description="enabled in code", boolean=True)
    def enabled_in_code(self, obj: TaskConfig) -> bool:
        return obj.default_enabled

    @admin.display(description="schedule")
    def schedule_display(self, obj: TaskConfig) -> SafeString:
        return render(
            "schedule_cell",
            schedule=describe_schedule(obj.schedule_type, obj.cron_expression, obj.interval_seconds, obj.timezone),
            source=source_badge(obj.schedule_source),
            flag=badge("not scheduled: configuration error", palette.ERROR) if obj.config_error else "",
        )

    @admin.display(description="configuration error")
    def config_error_display(self, obj: TaskConfig) -> SafeString | str:
        if not obj.config_error:
            return "none: the scheduler can schedule it"
        return render("config_error", error=obj.config_error)

    @admin.display(description="effective schedule")
    def effective_schedule(self, obj: TaskConfig) -> SafeString:
        return self.schedule_display(obj)

    @admin.display(description="schedule in code")
    def code_default_schedule(self, obj: TaskConfig) -> SafeString:
        return describe_schedule(
            obj.default_schedule_type,
            obj.default_cron_expression,
            obj.default_interval_seconds,
            obj.default_timezone or settings.TIME_ZONE,
        )

    @admin.display(description="next fire times")
    def next_fire_times(self, obj: TaskConfig) -> SafeString:
        try:
            times, error = render_times(preview_times(obj), obj.timezone), None
        except Exception as exc:  # a schedule the scheduler itself could not use either
            times, error = None, exc
        return render(
            "next_fire_times",
            url=reverse("admin:scheduler_app_taskconfig_preview", args=[quote(obj.pk)]),
            enabled=obj.enabled,
            times=times,
            error=error,
        )

    @admin.display(description="effective timeout")
    def effective_timeout(self, obj: TaskConfig) -> SafeString:
        return render("with_badge", text=describe_duration(obj.timeout_seconds), badge=source_badge(obj.timeout_source))

    @admin.display(description="timeout in code")
    def default_timeout(self, obj: TaskConfig) -> str:
        if obj.default_timeout_seconds is None:
            return "not set (SCHEDULER['DEFAULT_TIMEOUT'] applies)"
        return describe_duration(obj.default_timeout_seconds)

    @admin.display(description="effective policies")
    def effective_policies(self, obj: TaskConfig) -> SafeString:
        override = obj.options_override or {}
        code = obj.default_options or {}
        effective = obj.options
        rows = []
        for key in OPTION_DEFAULTS:
            value = effective.get(key)
            if key in override:
                source = source_badge("override")
            elif key in code and code[key] != OPTION_DEFAULTS[key]:
                source = source_badge("code")
            else:
                source = ""
            if key == "overlap" and value is None:
                value = f"{obj.overlap_policy.value} (from allow_concurrent={obj.allow_concurrent})"
            elif key == "catch_up_window_seconds" and value is None:
                value = f"{obj.catch_up_window_seconds:g} (SCHEDULER['MISFIRE_GRACE_SECONDS'])"
            rows.append({"key": key, "value": EMPTY if value is None else value, "source": source})
        return render("policies", rows=rows)

    def status_summary(self, obj: TaskConfig) -> SafeString:
        """The line at the top of the task's page: what it is doing, how it went, when it fires."""
        state = state_of(obj)
        return render(
            "status_summary",
            status=self.status_display(obj),
            last_result=self.last_result_display(obj),
            last_run=self.last_run(obj),
            next_run=self.next_run(obj) if obj.enabled else "not scheduled: the task is disabled",
            runs=self.run_count(obj),
            fails=self.fail_count(obj),
            in_a_row=state.consecutive_failures if state else 0,
        )

    @admin.display(description="status")
    def status_display(self, obj: TaskConfig) -> SafeString | str:
        state = state_of(obj)
        if state is None:
            return EMPTY
        if state.status == "running":
            return badge(f"running ({state.running_count})" if state.running_count > 1 else "running", palette.ACTIVE)
        return quiet("idle", "sched-idle")

    @admin.display(description="next run", ordering="state__next_run_at")
    def next_run(self, obj: TaskConfig) -> SafeString | str:
        state = state_of(obj)
        return show_time(state.next_run_at if state and obj.enabled else None)

    @admin.display(description="last run", ordering="state__last_run_at")
    def last_run(self, obj: TaskConfig) -> SafeString | str:
        state = state_of(obj)
        return show_time(state.last_run_at if state else None)

    @admin.display(description="last result", ordering="state__last_result")
    def last_result_display(self, obj: TaskConfig) -> SafeString:
        state = state_of(obj)
        return result_badge(state.last_result if state else "")

    @admin.display(description="runs", ordering="state__run_count")
    def run_count(self, obj: TaskConfig) -> int:
        state = state_of(obj)
        return state.run_count if state else 0

    @admin.display(description="fails", ordering="state__fail_count")
    def fail_count(self, obj: TaskConfig) -> int:
        state = state_of(obj)
        return state.fail_count if state else 0

    @admin.display(description="failures in a row")
    def consecutive_failures(self, obj: TaskConfig) -> int:
        state = state_of(obj)
        return state.consecutive_failures if state else 0

    @admin.display(description="last success")
    def last_success(self, obj: TaskConfig) -> SafeString | str:
        state = state_of(obj)
        return show_time(state.last_success_at if state else None)

    @admin.display(description="trend")
    def trend(self, obj: TaskConfig) -> SafeString:
        return render_trend(task_trend(obj.pk))

    @admin.display(description="latest runs")
    def latest_runs(self, obj: TaskConfig) -> SafeString:
        records = TaskExecutionRecord.objects.filter(task_id=obj.pk).select_related("triggered_by")[:LATEST_RUNS]
        runs = [
            {
                "url": record_url(r.pk),
                "id": r.pk,
                "trigger": r.trigger,
                "status": result_badge(r.status),
                "scheduled": show_time(r.scheduled_at, relative=False),
                "started": show_time(r.started_at, relative=False),
                "duration": describe_run_time(r.duration_seconds),
                "by": requested_by(r),
                "outcome": Truncator(r.error.splitlines()[-1] if r.error else r.message).chars(80),
            }
            for r in records
        ]
        history = reverse("admin:scheduler_app_taskexecutionrecord_changelist") + f"?task__name__exact={obj.pk}"
        return render("latest_runs", runs=runs, history=history)

    @admin.display(description="updated at")
    def updated(self, obj: TaskConfig) -> SafeString | str:
        return show_time(obj.updated_at)

    @admin.display(description="recent changes")
    def recent_changes(self, obj: TaskConfig) -> SafeString:
        entries = LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(TaskConfig), object_id=str(obj.pk)
        ).select_related("user")[:RECENT_CHANGES]
        changes = [
            {"when": show_time(e.action_time, relative=False), "who": e.user, "what": e.get_change_message()}
            for e in entries
        ]
        history = reverse("admin:scheduler_app_taskconfig_history", args=[quote(obj.pk)])
        return render("recent_changes", changes=changes, history=history)


# -- a run's columns and read-only fields -------------------------------------------------------


def exact_time_column(field: str, description: str) -> Callable[[Any, TaskExecutionRecord], SafeString | str]:
    """A column (or read-only field) with a record's time to the second, its zone named."""

    @admin.display(description=description, ordering=field)
    def column(model_admin: Any, obj: TaskExecutionRecord) -> SafeString | str:
        return show_time(getattr(obj, field), relative=False)

    return column


class RecordColumns(admin.ModelAdmin):
    """The history list's columns and a run's read-only fields (TaskExecutionRecordAdmin's)."""

    @admin.display(description="task", ordering="task")
    def task_link(self, obj: TaskExecutionRecord) -> SafeString:
        url = reverse("admin:scheduler_app_taskconfig_change", args=[quote(obj.task_id)])
        return render("link", url=url, text=obj.task_id)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: TaskExecutionRecord) -> SafeString:
        return result_badge(obj.status)

    @admin.display(description="trigger", ordering="trigger")
    def trigger_word(self, obj: TaskExecutionRecord) -> str:
        return obj.trigger

    @admin.display(description="duration", ordering="duration_seconds")
    def duration(self, obj: TaskExecutionRecord) -> str:
        return describe_run_time(obj.duration_seconds)

    # Seconds matter in a scheduler's history: the admin's default date format drops them.
    scheduled = exact_time_column("scheduled_at", "scheduled at")
    created = exact_time_column("created_at", "created at")
    started = exact_time_column("started_at", "started at")
    finished = exact_time_column("finished_at", "finished at")

    @admin.display(description="started late by")
    def lateness(self, obj: TaskExecutionRecord) -> str:
        value = obj.lateness_seconds
        return EMPTY if value is None else f"{value:.3f} seconds"

    @admin.display(description="attempt")
    def attempt_display(self, obj: TaskExecutionRecord) -> SafeString | str:
        if not obj.retry_of_id:
            return str(obj.attempt)
        return render("attempt", attempt=obj.attempt, url=record_url(obj.retry_of_id), first=obj.retry_of_id)

    @admin.display(description="worker", ordering="worker_label")
    def worker_display(self, obj: TaskExecutionRecord) -> str:
        # A run handed to a backend has no worker yet: where it waits is what an operator looks for.
        if obj.status == TaskStatus.QUEUED:
            return obj.message or "queued"
        return obj.worker_label or EMPTY

    @admin.display(description="requested by")
    def requested(self, obj: TaskExecutionRecord) -> str:
        return requested_by(obj)

    @admin.display(description="error")
    def error_display(self, obj: TaskExecutionRecord) -> SafeString | str:
        return render("pre", text=obj.error, css_class="sched-traceback") if obj.error else EMPTY

    @admin.display(description="data")
    def data_display(self, obj: TaskExecutionRecord) -> SafeString | str:
        if not obj.data:
            return EMPTY
        return render("pre", text=json.dumps(obj.data, indent=2, sort_keys=True), css_class="sched-data")
