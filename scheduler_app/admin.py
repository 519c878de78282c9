"""Admin pages: the operators' place to see and steer every task.

Every change goes through ``scheduler_app.services`` (the same functions the API and the commands
call), which validate, bump the revision the scheduler watches, and write the admin log. The admin
never saves a ``TaskConfig`` itself and never runs a task inside a request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.contrib.admin.templatetags.admin_list import _boolean_icon
from django.contrib.admin.utils import quote, unquote
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
from django.utils.timesince import timesince, timeuntil

from scheduler_app import coordination, describe, palette, services
from scheduler_app.describe import describe_duration
from scheduler_app.exceptions import SchedulerError, TaskBusy
from scheduler_app.forms import OPTION_FIELDS, SCHEDULE_FIELDS, TaskConfigForm
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord, TaskState
from scheduler_app.permissions import can_operate
from scheduler_app.registry import task_registry
from scheduler_app.scheduler import build_trigger
from scheduler_app.tasks.base import OPTION_DEFAULTS, ScheduleType, TaskStatus
from scheduler_app.trends import render_trend, task_trend
from scheduler_app.triggers import next_fire_times
from scheduler_app.validation import disabled_reason_error, schedule_errors

# django-apscheduler's own pages edit and delete APScheduler jobs behind the scheduler's back; the
# task pages below are where jobs are steered. Import its admin first so that it cannot register
# after we unregister.
try:
    from django_apscheduler import admin as _apscheduler_admin  # noqa: F401
    from django_apscheduler.models import DjangoJob, DjangoJobExecution

    for _model in (DjangoJob, DjangoJobExecution):
        if admin.site.is_registered(_model):
            admin.site.unregister(_model)
except ImportError:  # pragma: no cover - django_apscheduler is a requirement
    pass

PREVIEW_COUNT = 5
LATEST_RUNS = 10
RECENT_CHANGES = 10
EMPTY = "—"


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
    if schedule_type == ScheduleType.CRON:
        return format_html('<code>{}</code><br><span class="sched-prose">{}</span>', cron or "", prose)
    if prose:
        return format_html('<span class="sched-prose">{}</span>', prose)
    return format_html("{}", EMPTY)


def badge(text: str, colour: str) -> SafeString:
    return format_html(
        '<span class="sched-badge" style="background:{};color:#fff;padding:1px 7px;border-radius:9px;'
        'font-size:11px;white-space:nowrap">{}</span>',
        colour,
        text,
    )


def result_badge(result: str | None) -> SafeString:
    if not result:
        return mark_safe('<span class="sched-never">never run</span>')
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
    # Date and time in their own spans: a narrow list column puts them on two lines.
    return format_html(
        '<span class="sched-date">{}</span> <span class="sched-clock">{}</span><br><small class="sched-rel">{}</small>',
        local.strftime("%Y-%m-%d"),
        local.strftime("%H:%M:%S %Z"),
        words,
    )


def state_of(config: TaskConfig) -> TaskState | None:
    try:
        return config.state
    except ObjectDoesNotExist:
        return None


def preview_times(config: TaskConfig, count: int = PREVIEW_COUNT) -> list[datetime]:
    return next_fire_times(build_trigger(config), timezone.now(), count)


def render_times(times: Iterable[datetime], zone: str) -> SafeString:
    tz = ZoneInfo(zone)
    items = format_html_join(
        "", "<li>{}</li>", ((t.astimezone(tz).strftime("%a %Y-%m-%d %H:%M:%S %Z"),) for t in times)
    )
    return format_html('<ol class="sched-times">{}</ol>', items) if items else format_html("{}", EMPTY)


# -- list filters --------------------------------------------------------------------------------


class RegisteredFilter(admin.SimpleListFilter):
    """Tasks removed from the code keep their row (and history) but are hidden unless asked for."""

    title = "defined in code"
    parameter_name = "registered"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("all", "All, with removed tasks"), ("no", "Removed from code")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "all":
            return queryset
        return queryset.filter(registered=self.value() != "no")

    def choices(self, changelist: Any) -> Iterable[dict[str, Any]]:
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Registered tasks",
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }


class EnabledFilter(admin.SimpleListFilter):
    title = "enabled"
    parameter_name = "enabled"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.enabled()
        if self.value() == "no":
            return queryset.disabled()
        return queryset


class StoredWordFilter(admin.SimpleListFilter):
    """A filter on a choices field that offers the stored words (``success``, ``manual``), as the
    badges, the API and the other filters show them, instead of Django's capitalised labels. The
    parameter keeps Django's own name (``status__exact``), so links made before stay valid."""

    field_name = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(value, value) for value, _ in model_admin.model._meta.get_field(self.field_name).choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.field_name: value}) if value else queryset


class RecordStatusFilter(StoredWordFilter):
    title = "status"
    field_name = "status"
    parameter_name = "status__exact"


class RecordTriggerFilter(StoredWordFilter):
    title = "trigger"
    field_name = "trigger"
    parameter_name = "trigger__exact"


class ScheduleTypeFilter(admin.SimpleListFilter):
    title = "schedule type"
    parameter_name = "schedule_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(t.value, t.value) for t in ScheduleType] + [("override", "overridden in admin/API")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "override":
            return queryset.exclude(schedule_type_override="")
        if value in {t.value for t in ScheduleType}:
            return queryset.of_schedule_type(value)
        return queryset


class LastResultFilter(admin.SimpleListFilter):
    title = "last result"
    parameter_name = "last_result"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        terminal = [s for s in TaskStatus if s not in (TaskStatus.PENDING, TaskStatus.RUNNING)]
        return [(s.value, s.value) for s in terminal] + [("never", "never run")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "never":
            return queryset.filter(Q(state__isnull=True) | Q(state__last_result=""))
        if value:
            return queryset.filter(state__last_result=value)
        return queryset


# -- tasks ---------------------------------------------------------------------------------------


@admin.register(TaskConfig)
class TaskConfigAdmin(admin.ModelAdmin):
    form = TaskConfigForm
    list_display = [
        "name",
        "short_description",
        "enabled_display",
        "schedule_display",
        "status_display",
        "next_run",
        "last_run",
        "last_result_display",
        "run_count",
        "fail_count",
    ]
    list_filter = [RegisteredFilter, EnabledFilter, LastResultFilter, ScheduleTypeFilter]
    search_fields = ["name", "description"]
    actions = ["enable_selected", "disable_selected", "run_selected", "revert_selected"]
    readonly_fields = [
        "name",
        "description",
        "registered",
        "config_error_display",
        "effective_schedule",
        "next_fire_times",
        "code_default_schedule",
        "enabled_in_code",
        "allow_concurrent",
        "effective_timeout",
        "default_timeout",
        "effective_policies",
        "status_display",
        "next_run",
        "last_run",
        "last_result_display",
        "run_count",
        "fail_count",
        "consecutive_failures",
        "last_success",
        "trend",
        "latest_runs",
        "updated",
        "updated_by",
        "recent_changes",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "description",
                    "registered",
                    "config_error_display",
                    "enabled",
                    "disabled_reason",
                    "enabled_in_code",
                ]
            },
        ),
        (
            "Schedule",
            {
                "fields": [
                    "effective_schedule",
                    "next_fire_times",
                    "schedule_type_override",
                    "cron_expression_override",
                    "interval_seconds_override",
                    "timezone_override",
                    "code_default_schedule",
                    "allow_concurrent",
                ],
                "description": "Overrides win over the schedule in code and survive restarts; the running "
                "scheduler picks a change up within a second or two.",
            },
        ),
        ("Timeout", {"fields": ["effective_timeout", "timeout_override", "default_timeout"]}),
        ("Policies", {"fields": ["effective_policies"]}),
        (
            "Policy overrides",
            {
                "fields": [*OPTION_FIELDS],
                "description": "Jitter, overlap, catch-up, retries and the active period. An empty field "
                "keeps the code's value.",
            },
        ),
        (
            "State",
            {
                "fields": [
                    "status_display",
                    "next_run",
                    "last_run",
                    "last_result_display",
                    "run_count",
                    "fail_count",
                    "consecutive_failures",
                    "last_success",
                ]
            },
        ),
        ("Latest runs", {"fields": ["trend", "latest_runs"]}),
        ("Changes", {"fields": ["updated", "updated_by", "recent_changes"]}),
    ]

    class Media:
        css = {"all": ["scheduler_app/admin.css"]}
        js = ["scheduler_app/task_preview.js"]

    def get_fieldsets(self, request: HttpRequest, obj: TaskConfig | None = None) -> list[Any]:
        """Policy overrides fold away while a task has none; a form error opens them (Django)."""
        fieldsets = []
        for name, options in super().get_fieldsets(request, obj):
            if name == "Policy overrides" and not (obj is not None and obj.options_override):
                options = {**options, "classes": ["collapse"]}
            fieldsets.append((name, options))
        return fieldsets

    # -- permissions: tasks come from code; operating them is its own permission ------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskConfig]:
        return super().get_queryset(request).select_related("state", "updated_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: TaskConfig | None = None) -> bool:
        # The row is the task's configuration and the owner of its history: it goes with the code.
        return False

    # Every change on a task page (the form's save, the actions, the buttons) is operating the task:
    # one rule, scheduler_app.permissions.can_operate, the API's too. The model's own "change"
    # permission grants nothing here; "view" shows the pages read-only.

    def has_view_permission(self, request: HttpRequest, obj: TaskConfig | None = None) -> bool:
        return super().has_view_permission(request, obj) or can_operate(request.user)

    def has_change_permission(self, request: HttpRequest, obj: TaskConfig | None = None) -> bool:
        return self.has_operate_permission(request, obj)

    def has_operate_permission(self, request: HttpRequest, obj: TaskConfig | None = None) -> bool:
        """Enable, disable, run now, revert, edit the schedule, policies or timeout."""
        if obj is not None and obj.name not in task_registry:
            return False  # a task that left the code has nothing left to steer
        return can_operate(request.user)  # admin_site.admin_view has already asked for staff status

    # -- columns and read-only fields ---------------------------------------------------------------

    @admin.display(description="description")
    def short_description(self, obj: TaskConfig) -> str:
        return Truncator(obj.description).chars(80) or EMPTY

    @admin.display(description="enabled")
    def enabled_display(self, obj: TaskConfig) -> SafeString:
        extra = ""
        if obj.enabled_override is not None:
            extra = mark_safe(' <small title="set in admin/API">(override)</small>')
        if not obj.enabled and obj.disabled_reason:
            extra = format_html('{}<br><small class="sched-reason">{}</small>', extra, obj.disabled_reason)
        return format_html("{}{}", _boolean_icon(obj.enabled), extra)

    @admin.display(description="enabled in code", boolean=True)
    def enabled_in_code(self, obj: TaskConfig) -> bool:
        return obj.default_enabled

    @admin.display(description="schedule")
    def schedule_display(self, obj: TaskConfig) -> SafeString:
        shown = describe_schedule(obj.schedule_type, obj.cron_expression, obj.interval_seconds, obj.timezone)
        flag = badge("not scheduled: configuration error", palette.ERROR) if obj.config_error else ""
        return format_html("{}<br>{} {}", shown, source_badge(obj.schedule_source), flag)

    @admin.display(description="configuration error")
    def config_error_display(self, obj: TaskConfig) -> SafeString | str:
        if not obj.config_error:
            return "none: the scheduler can schedule it"
        return format_html(
            '<span class="errornote">{}</span><br><small>The scheduler leaves this task out (the others go on) '
            "until the value is corrected below.</small>",
            obj.config_error,
        )

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
        url = reverse("admin:scheduler_app_taskconfig_preview", args=[quote(obj.pk)])
        try:
            shown = render_times(preview_times(obj), obj.timezone)
        except Exception as exc:  # a schedule the scheduler itself could not use either
            shown = format_html('<span class="errornote">cannot compute: {}</span>', exc)
        note = "" if obj.enabled else mark_safe(" <small>(the task is disabled: it does not fire)</small>")
        return format_html(
            '<div id="schedule-preview" data-url="{}"><div class="sched-preview-title">Of the saved schedule{}'
            '</div><div class="sched-preview-body">{}</div></div>',
            url,
            note,
            shown,
        )

    @admin.display(description="effective timeout")
    def effective_timeout(self, obj: TaskConfig) -> SafeString:
        return format_html("{} {}", describe_duration(obj.timeout_seconds), source_badge(obj.timeout_source))

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
            rows.append((key, EMPTY if value is None else value, source))
        body = format_html_join("", "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>", rows)
        return format_html('<table class="sched-policies"><tbody>{}</tbody></table>', body)

    def status_summary(self, obj: TaskConfig) -> SafeString:
        """The line at the top of the task's page: what it is doing, how it went, when it fires."""
        state = state_of(obj)
        failures = state.consecutive_failures if state else 0
        next_run = self.next_run(obj) if obj.enabled else "not scheduled: the task is disabled"
        items = [
            ("status", self.status_display(obj)),
            ("last result", format_html("{} {}", self.last_result_display(obj), self.last_run(obj))),
            ("next run", next_run),
            (
                "runs",
                format_html(
                    "{} ({} failed{})",
                    self.run_count(obj),
                    self.fail_count(obj),
                    f", {failures} in a row" if failures else "",
                ),
            ),
        ]
        return format_html_join("", '<div class="sched-status-item"><span>{}</span> {}</div>', items)

    @admin.display(description="status")
    def status_display(self, obj: TaskConfig) -> SafeString:
        state = state_of(obj)
        if state is None:
            return format_html("{}", EMPTY)
        if state.status == "running":
            return badge(f"running ({state.running_count})" if state.running_count > 1 else "running", palette.ACTIVE)
        return mark_safe('<span class="sched-idle">idle</span>')

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
        records = list(TaskExecutionRecord.objects.filter(task_id=obj.pk).select_related("triggered_by")[:LATEST_RUNS])
        history = reverse("admin:scheduler_app_taskexecutionrecord_changelist") + f"?task__name__exact={obj.pk}"
        if not records:
            return mark_safe('<p class="sched-no-runs">No runs yet.</p>')
        rows = format_html_join(
            "",
            '<tr class="sched-run"><td><a href="{}">#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:scheduler_app_taskexecutionrecord_change", args=[r.pk]),
                    r.pk,
                    r.trigger,
                    result_badge(r.status),
                    show_time(r.scheduled_at, relative=False),
                    show_time(r.started_at, relative=False),
                    describe_run_time(r.duration_seconds),
                    requested_by(r),
                    Truncator(r.error.splitlines()[-1] if r.error else r.message).chars(80),
                )
                for r in records
            ),
        )
        return format_html(
            '<table class="sched-runs"><thead><tr><th>record</th><th>trigger</th><th>status</th><th>scheduled</th>'
            "<th>started</th><th>duration</th><th>by</th><th>message / error</th></tr></thead><tbody>{}</tbody>"
            '</table><p><a href="{}">All runs of this task</a></p>',
            rows,
            history,
        )

    @admin.display(description="updated at")
    def updated(self, obj: TaskConfig) -> SafeString | str:
        return show_time(obj.updated_at)

    @admin.display(description="recent changes")
    def recent_changes(self, obj: TaskConfig) -> SafeString:
        entries = LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(TaskConfig), object_id=str(obj.pk)
        ).select_related("user")[:RECENT_CHANGES]
        history = reverse("admin:scheduler_app_taskconfig_history", args=[quote(obj.pk)])
        if not entries:
            return format_html('No changes by people yet. <a href="{}">History</a>', history)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((show_time(e.action_time, relative=False), e.user, e.get_change_message()) for e in entries),
        )
        return format_html(
            '<table class="sched-changes"><thead><tr><th>when</th><th>who</th><th>what</th></tr></thead>'
            '<tbody>{}</tbody></table><p><a href="{}">Full history</a></p>',
            rows,
            history,
        )

    # -- saving: through the services, never obj.save() ---------------------------------------------

    def save_model(self, request: HttpRequest, obj: TaskConfig, form: TaskConfigForm, change: bool) -> None:
        """Apply what changed with the services; the form has already checked it with their rules.

        ``obj.save()`` would write a stale revision and skip the admin log entries that say what
        changed, so it is never called.
        """
        data = form.cleaned_data
        name, user = obj.pk, request.user
        changed = set(form.changed_data)
        enabled_changed = "enabled" in changed or ("disabled_reason" in changed and not data["enabled"])
        if enabled_changed and not data["enabled"]:
            services.disable_task(name, user=user, reason=(data.get("disabled_reason") or "").strip())
        if form.schedule_changed():
            if data.get("schedule_type_override"):
                services.set_schedule(
                    name,
                    schedule_type=data["schedule_type_override"],
                    cron_expression=data.get("cron_expression_override"),
                    interval_seconds=data.get("interval_seconds_override"),
                    timezone_name=data.get("timezone_override") or None,
                    user=user,
                )
            else:
                services.clear_schedule(name, user=user)
        if "timeout_override" in changed:
            services.set_timeout(name, data.get("timeout_override"), user=user)
        if form.options_changed():
            proposed = form.options_override()
            if proposed:
                # Only the changed keys: None sends a key back to the code's value.
                changes = {key: proposed.get(key) for key in OPTION_FIELDS if key in changed}
                services.set_options(name, changes, user=user)
            else:
                services.clear_options(name, user=user)
        if enabled_changed and data["enabled"]:
            services.enable_task(name, user=user)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # no relations are edited here

    def log_change(self, request: HttpRequest, obj: TaskConfig, message: Any) -> None:
        pass  # the services logged each change, in words that say what it was

    def response_change(self, request: HttpRequest, obj: TaskConfig) -> HttpResponse:
        self._warn_without_scheduler(request, "The change applies when a scheduler process starts.")
        return super().response_change(request, obj)

    # -- actions ----------------------------------------------------------------------------------

    def response_action(self, request: HttpRequest, queryset: QuerySet, **kwargs: Any) -> HttpResponse | None:
        # A selected name with a NUL byte names no task, and PostgreSQL refuses it in the query that
        # would find out (a 500): it is left out, as a name that matches nothing would be.
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if any("\x00" in name for name in selected):
            request.POST = request.POST.copy()
            request.POST.setlist(ACTION_CHECKBOX_NAME, [name for name in selected if "\x00" not in name])
        return super().response_action(request, queryset, **kwargs)

    def _each(self, request: HttpRequest, queryset: QuerySet, operation: Any) -> list[str]:
        done: list[str] = []
        for name in queryset.values_list("name", flat=True):
            if name not in task_registry:
                self.message_user(request, f"{name}: not defined in code any more; left alone.", messages.WARNING)
                continue
            try:
                if operation(name) is not False:
                    done.append(name)
            except SchedulerError as exc:
                self.message_user(request, f"{name}: {exc}", messages.WARNING)
        return done

    @admin.action(description="Enable selected tasks", permissions=["operate"])
    def enable_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = self._each(request, queryset, lambda name: services.enable_task(name, user=request.user))
        if done:
            self.message_user(request, f"Enabled {len(done)} task(s): {', '.join(done)}.", messages.SUCCESS)

    @admin.action(description="Disable selected tasks", permissions=["operate"])
    def disable_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """Asks for an optional reason on a confirmation page, then disables."""
        if request.POST.get("apply") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Disable tasks",
                "opts": self.opts,
                "queryset": queryset,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            }
            request.current_app = self.admin_site.name
            return TemplateResponse(request, "admin/scheduler_app/taskconfig/disable_confirmation.html", context)
        reason = request.POST.get("reason", "").strip()
        if error := disabled_reason_error(reason):
            # The same rule as the API's and the task form's; nothing is disabled.
            self.message_user(request, f"Nothing disabled: {error}.", messages.ERROR)
            return None
        done = self._each(request, queryset, lambda name: services.disable_task(name, user=request.user, reason=reason))
        if done:
            why = f" Reason: {reason}" if reason else ""
            self.message_user(request, f"Disabled {len(done)} task(s): {', '.join(done)}.{why}", messages.SUCCESS)
        return None

    @admin.action(description="Run selected tasks now", permissions=["operate"])
    def run_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        queued: list[str] = []

        def run(name: str) -> None:
            record = services.request_run(name, user=request.user, origin="admin")
            queued.append(f"{name} (record #{record.pk})")

        self._each(request, queryset, run)
        if queued:
            self.message_user(request, f"Queued {len(queued)} run(s): {', '.join(queued)}.", messages.SUCCESS)
            self._warn_without_scheduler(request, "Queued runs wait until a scheduler process starts.")

    @admin.action(
        description="Revert selected tasks to the code's schedule, timeout and policies", permissions=["operate"]
    )
    def revert_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = self._each(request, queryset, lambda name: self._revert(request, name))
        if done:
            self.message_user(request, f"Reverted to the code's defaults: {', '.join(done)}.", messages.SUCCESS)
        else:
            self.message_user(request, "Nothing to revert: no override on the selected tasks.", messages.INFO)

    def _revert(self, request: HttpRequest, name: str) -> bool:
        """Drop schedule, timeout and policy overrides; False when there was nothing to drop."""
        config = services.get_task(name)
        reverted = False
        if config.schedule_overridden:
            services.clear_schedule(name, user=request.user)
            reverted = True
        if config.timeout_override is not None:
            services.set_timeout(name, None, user=request.user)
            reverted = True
        if config.options_override:
            services.clear_options(name, user=request.user)
            reverted = True
        return reverted

    def _warn_without_scheduler(self, request: HttpRequest, consequence: str) -> None:
        if not coordination.alive():
            self.message_user(request, f"No scheduler process is running. {consequence}", messages.WARNING)

    # -- the task page's buttons and the schedule preview ----------------------------------------

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/run/", wrap(self.run_view), name="scheduler_app_taskconfig_run"),
            path("<path:object_id>/revert/", wrap(self.revert_view), name="scheduler_app_taskconfig_revert"),
            path("<path:object_id>/preview/", wrap(self.preview_view), name="scheduler_app_taskconfig_preview"),
            *super().get_urls(),
        ]

    def _operable(self, request: HttpRequest, object_id: str) -> TaskConfig | HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_operate_permission(request, obj):
            raise PermissionDenied
        return obj

    def _back(self, obj: TaskConfig) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:scheduler_app_taskconfig_change", args=[quote(obj.pk)]))

    def run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self._operable(request, object_id)
        if isinstance(obj, HttpResponse):
            return obj
        try:
            record = services.request_run(obj.pk, user=request.user, origin="admin")
        except TaskBusy as exc:
            self.message_user(request, f"Not queued: {exc}.", messages.ERROR)
        else:
            self.message_user(
                request,
                f"Run of {obj.pk} queued as record #{record.pk}; the scheduler starts it within a second or two.",
                messages.SUCCESS,
            )
            self._warn_without_scheduler(request, "The run waits until one starts.")
        return self._back(obj)

    def revert_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self._operable(request, object_id)
        if isinstance(obj, HttpResponse):
            return obj
        if self._revert(request, obj.pk):
            self.message_user(
                request, f"{obj.pk}: schedule, timeout and policies are the code's again.", messages.SUCCESS
            )
        else:
            self.message_user(request, f"{obj.pk}: nothing to revert, it uses the code's defaults.", messages.INFO)
        return self._back(obj)

    def preview_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The next fire times of a schedule typed into the form, before it is saved."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_view_permission(request, obj):
            return JsonResponse({"error": "no such task"}, status=404)
        params = request.GET
        kind = params.get("schedule_type_override", "")
        draft = TaskConfig(**{f.attname: getattr(obj, f.attname) for f in TaskConfig._meta.concrete_fields})
        if kind:
            raw_interval = params.get("interval_seconds_override", "").strip()
            try:
                interval: Any = int(raw_interval) if raw_interval else None
            except ValueError:
                interval = raw_interval
            zone = params.get("timezone_override", "").strip() or None
            cron = params.get("cron_expression_override", "")
            errors = schedule_errors(schedule_type=kind, cron_expression=cron, interval_seconds=interval, timezone=zone)
            if errors:
                return JsonResponse({"valid": False, "errors": {SCHEDULE_FIELDS[k]: v for k, v in errors.items()}})
            draft.schedule_type_override = kind
            draft.cron_expression_override = cron.strip()
            draft.interval_seconds_override = interval
            draft.timezone_override = zone or ""
        else:
            draft.schedule_type_override = ""
        try:
            times = preview_times(draft)
        except Exception as exc:  # a stored value the scheduler cannot use either (see config_error)
            return JsonResponse({"valid": False, "errors": {"__all__": f"cannot compute the fire times: {exc}"}})
        zone_name = draft.timezone
        return JsonResponse(
            {
                "valid": True,
                "source": draft.schedule_source,
                "description": str(
                    describe_schedule(draft.schedule_type, draft.cron_expression, draft.interval_seconds, zone_name)
                ),
                "times": [t.isoformat() for t in times],
                "html": str(render_times(times, zone_name)),
            }
        )

    # -- page context -------------------------------------------------------------------------------

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # The operators' main screen gets the window's width: with the admin's navigation sidebar,
        # the ten columns needed horizontal scrolling at 1400 px. Breadcrumbs still lead everywhere.
        context = {**(extra_context or {}), **scheduler_banner(), "is_nav_sidebar_enabled": False}
        return super().changelist_view(request, context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: TaskConfig | None = None,
    ) -> HttpResponse:
        form = context["adminform"].form if context.get("adminform") else None
        if obj is not None and form is not None and form.is_bound and form.errors:
            # Cleaning copied the valid fields of the refused input into `obj`; the read-only parts of
            # the page (effective schedule, next fire times, policies) show what is stored instead.
            obj = self.get_queryset(request).get(pk=obj.pk)
            form.instance = obj
            context["original"] = obj
        context.update(scheduler_banner())
        if obj is not None:
            context["task_status"] = self.status_summary(obj)
            form = context["adminform"].form if context.get("adminform") else None
            if form is not None and "timezone_override" in form.fields:
                # An empty zone means the code's (or the settings') zone: say which one.
                zone = obj.default_timezone or settings.TIME_ZONE
                form.fields["timezone_override"].widget.attrs["placeholder"] = zone
        context["can_operate"] = obj is not None and self.has_operate_permission(request, obj)
        context["can_revert"] = context["can_operate"] and (
            obj.schedule_overridden or obj.timeout_override is not None or bool(obj.options_override)
        )
        return super().render_change_form(request, context, add, change, form_url, obj)


def requested_by(record: TaskExecutionRecord) -> str:
    if record.triggered_by_id:
        return f"{record.triggered_by} ({record.origin or record.trigger})"
    return record.origin or ("scheduler" if record.trigger == "scheduled" else EMPTY)


def scheduler_banner() -> dict[str, Any]:
    """Context for the line that says whether a scheduler process is alive to act on changes."""
    alive = list(SchedulerProcess.objects.alive().filter(kind=SchedulerProcess.Kind.SCHEDULER))
    active = coordination.leader(alive)
    return {
        "scheduler_alive": bool(alive),
        "scheduler_active": active,
        "scheduler_processes": alive,
        "scheduler_heartbeat_age": (
            f"{(timezone.now() - active.last_heartbeat).total_seconds():.1f}" if active else None
        ),
    }


# -- execution history ---------------------------------------------------------------------------


@admin.register(TaskExecutionRecord)
class TaskExecutionRecordAdmin(admin.ModelAdmin):
    """Read-only for everyone: history is the audit trail.

    Nobody deletes records here either, not even superusers: retention is the ``prune_history``
    task's job (SCHEDULER['HISTORY_RETENTION_DAYS']), and deleting a pending or running record
    from under a scheduler would leave the task's counters and the runner's bookkeeping wrong.
    """

    list_display = [
        "id",
        "task_link",
        "trigger_word",
        "status_display",
        "scheduled",
        "started",
        "finished",
        "duration",
        "requested",
        "worker_label",
    ]
    list_display_links = ["id"]
    list_filter = ["task", RecordStatusFilter, RecordTriggerFilter, ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "message"]
    list_select_related = ["triggered_by"]
    show_full_result_count = False
    list_per_page = 50
    fieldsets = [
        (None, {"fields": ["task_link", "trigger", "status_display", "requested", "worker_label", "attempt_display"]}),
        (
            "Times",
            {
                "fields": [
                    "scheduled",
                    "created",
                    "started",
                    "finished",
                    "duration",
                    "lateness",
                    "jitter_seconds",
                ]
            },
        ),
        ("Outcome", {"fields": ["message", "error_display", "data_display"]}),
    ]
    readonly_fields = [
        "task_link",
        "trigger",
        "status_display",
        "requested",
        "worker_label",
        "scheduled",
        "created",
        "started",
        "finished",
        "duration",
        "lateness",
        "jitter_seconds",
        "attempt_display",
        "message",
        "error_display",
        "data_display",
    ]

    class Media:
        css = {"all": ["scheduler_app/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TaskExecutionRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: TaskExecutionRecord | None = None) -> bool:
        return False

    @admin.display(description="task", ordering="task")
    def task_link(self, obj: TaskExecutionRecord) -> SafeString:
        url = reverse("admin:scheduler_app_taskconfig_change", args=[quote(obj.task_id)])
        return format_html('<a href="{}">{}</a>', url, obj.task_id)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: TaskExecutionRecord) -> SafeString:
        return result_badge(obj.status)

    @admin.display(description="trigger", ordering="trigger")
    def trigger_word(self, obj: TaskExecutionRecord) -> str:
        return obj.trigger

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Ten columns, as on the task list: the window's width, without the navigation sidebar.
        context = {**(extra_context or {}), "is_nav_sidebar_enabled": False}
        return super().changelist_view(request, context)

    @admin.display(description="duration", ordering="duration_seconds")
    def duration(self, obj: TaskExecutionRecord) -> str:
        return describe_run_time(obj.duration_seconds)

    # Seconds matter in a scheduler's history: the admin's default date format drops them.
    @admin.display(description="scheduled at", ordering="scheduled_at")
    def scheduled(self, obj: TaskExecutionRecord) -> SafeString | str:
        return show_time(obj.scheduled_at, relative=False)

    @admin.display(description="created at", ordering="created_at")
    def created(self, obj: TaskExecutionRecord) -> SafeString | str:
        return show_time(obj.created_at, relative=False)

    @admin.display(description="started at", ordering="started_at")
    def started(self, obj: TaskExecutionRecord) -> SafeString | str:
        return show_time(obj.started_at, relative=False)

    @admin.display(description="finished at", ordering="finished_at")
    def finished(self, obj: TaskExecutionRecord) -> SafeString | str:
        return show_time(obj.finished_at, relative=False)

    @admin.display(description="started late by")
    def lateness(self, obj: TaskExecutionRecord) -> str:
        value = obj.lateness_seconds
        return EMPTY if value is None else f"{value:.3f} seconds"

    @admin.display(description="attempt")
    def attempt_display(self, obj: TaskExecutionRecord) -> SafeString | str:
        if not obj.retry_of_id:
            return str(obj.attempt)
        url = reverse("admin:scheduler_app_taskexecutionrecord_change", args=[obj.retry_of_id])
        return format_html('{} (a retry of <a href="{}">#{}</a>)', obj.attempt, url, obj.retry_of_id)

    @admin.display(description="requested by")
    def requested(self, obj: TaskExecutionRecord) -> str:
        return requested_by(obj)

    @admin.display(description="error")
    def error_display(self, obj: TaskExecutionRecord) -> SafeString:
        if not obj.error:
            return format_html("{}", EMPTY)
        return format_html('<pre class="sched-traceback">{}</pre>', obj.error)

    @admin.display(description="data")
    def data_display(self, obj: TaskExecutionRecord) -> SafeString:
        if not obj.data:
            return format_html("{}", EMPTY)
        return format_html('<pre class="sched-data">{}</pre>', json.dumps(obj.data, indent=2, sort_keys=True))


@admin.register(SchedulerProcess)
class SchedulerProcessAdmin(admin.ModelAdmin):
    """Which scheduler processes are alive and which one leads: read-only, they manage their rows."""

    list_display = ["label", "kind", "role", "alive", "leader", "started_at", "last_heartbeat"]
    list_filter = ["kind", "role"]
    readonly_fields = ["kind", "role", "host", "pid", "started_at", "last_heartbeat"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SchedulerProcess | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SchedulerProcess | None = None) -> bool:
        return False

    @admin.display(description="host:pid")
    def label(self, obj: SchedulerProcess) -> str:
        return obj.label

    @admin.display(boolean=True, description="alive")
    def alive(self, obj: SchedulerProcess) -> bool:
        return obj.is_alive()

    @admin.display(boolean=True, description="holds the lease")
    def leader(self, obj: SchedulerProcess) -> bool:
        return coordination.leader([obj]) is not None
