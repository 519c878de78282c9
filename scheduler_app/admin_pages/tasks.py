"""The task pages: the list every operator starts from and each task's page.

Every change goes through ``scheduler_app.services`` (the same functions the API and the commands
call), which validate, bump the revision the scheduler watches, and write the admin log. The admin
never saves a ``TaskConfig`` itself and never runs a task inside a request.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from scheduler_app import services
from scheduler_app.admin_pages.actions import TaskActions, warn_without_scheduler
from scheduler_app.admin_pages.display import TaskColumns
from scheduler_app.admin_pages.filters import EnabledFilter, LastResultFilter, RegisteredFilter, ScheduleTypeFilter
from scheduler_app.admin_pages.views import TaskViews, scheduler_banner
from scheduler_app.forms import OPTION_FIELDS, TaskConfigForm
from scheduler_app.models import TaskConfig
from scheduler_app.permissions import can_operate
from scheduler_app.registry import task_registry


class TaskConfigAdmin(TaskColumns, TaskActions, TaskViews):
    """The page layout, the permissions and the saving; the columns are display.py's, the actions
    actions.py's, the buttons' and the preview's views views.py's."""

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

    # Everything on the page that the form does not edit is shown read-only: one list, the layout's.
    readonly_fields = [name for name in flatten_fieldsets(fieldsets) if name not in TaskConfigForm.base_fields]

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
        warn_without_scheduler(self, request, "The change applies when a scheduler process starts.")
        return super().response_change(request, obj)

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
