"""The task list's actions: enable, disable, run now, revert; each a thin shell over the services.

Who may use them is one rule, ``scheduler_app.permissions.can_operate`` (the API's too), asked
through ``TaskConfigAdmin.has_operate_permission`` (``permissions=["operate"]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from scheduler_app import coordination, services
from scheduler_app.exceptions import SchedulerError
from scheduler_app.registry import task_registry
from scheduler_app.validation import disabled_reason_error


def revert_overrides(request: HttpRequest, name: str) -> bool:
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


def warn_without_scheduler(model_admin: admin.ModelAdmin, request: HttpRequest, consequence: str) -> None:
    if not coordination.alive():
        model_admin.message_user(request, f"No scheduler process is running. {consequence}", messages.WARNING)


class TaskActions(admin.ModelAdmin):
    """TaskConfigAdmin's actions."""

    actions = ["enable_selected", "disable_selected", "run_selected", "revert_selected"]

    def response_action(self, request: HttpRequest, queryset: QuerySet, **kwargs: Any) -> HttpResponse | None:
        # A selected name with a NUL byte names no task, and PostgreSQL refuses it in the query that
        # would find out (a 500): it is left out, as a name that matches nothing would be.
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if any("\x00" in name for name in selected):
            request.POST = request.POST.copy()
            request.POST.setlist(ACTION_CHECKBOX_NAME, [name for name in selected if "\x00" not in name])
        return super().response_action(request, queryset, **kwargs)

    def _each(self, request: HttpRequest, queryset: QuerySet, operation: Callable[[str], Any]) -> list[str]:
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
            warn_without_scheduler(self, request, "Queued runs wait until a scheduler process starts.")

    @admin.action(
        description="Revert selected tasks to the code's schedule, timeout and policies", permissions=["operate"]
    )
    def revert_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = self._each(request, queryset, lambda name: revert_overrides(request, name))
        if done:
            self.message_user(request, f"Reverted to the code's defaults: {', '.join(done)}.", messages.SUCCESS)
        else:
            self.message_user(request, "Nothing to revert: no override on the selected tasks.", messages.INFO)
