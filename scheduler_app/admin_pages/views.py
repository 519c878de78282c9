"""The task page's extra views (its "Run now" and "Revert" buttons, the schedule preview) and the
banner that says whether a scheduler process is alive to act on what is done in the admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils import timezone

from scheduler_app import coordination, services
from scheduler_app.admin_pages.actions import revert_overrides, warn_without_scheduler
from scheduler_app.admin_pages.display import describe_schedule, preview_times, render_times
from scheduler_app.exceptions import TaskBusy
from scheduler_app.forms import SCHEDULE_FIELDS
from scheduler_app.models import SchedulerProcess, TaskConfig
from scheduler_app.validation import schedule_errors


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


class TaskViews(admin.ModelAdmin):
    """TaskConfigAdmin's URLs beside Django's: run, revert (POST, operators only) and preview (GET)."""

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
        if not self.has_operate_permission(request, obj):  # TaskConfigAdmin's: the actions' rule too
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
            warn_without_scheduler(self, request, "The run waits until one starts.")
        return self._back(obj)

    def revert_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self._operable(request, object_id)
        if isinstance(obj, HttpResponse):
            return obj
        if revert_overrides(request, obj.pk):
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
