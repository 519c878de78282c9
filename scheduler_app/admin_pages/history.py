"""The run history: read-only for everyone, it is the audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.http import HttpRequest, HttpResponse

from scheduler_app.admin_pages.display import RecordColumns
from scheduler_app.admin_pages.filters import RecordStatusFilter, RecordTriggerFilter
from scheduler_app.admin_pages.read_only import ReadOnlyAdmin


class TaskExecutionRecordAdmin(RecordColumns, ReadOnlyAdmin):
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
        "worker_display",
    ]
    list_display_links = ["id"]
    list_filter = ["task", RecordStatusFilter, RecordTriggerFilter, ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "message", "=worker_label"]
    list_select_related = ["triggered_by"]
    show_full_result_count = False
    list_per_page = 50
    fieldsets = [
        (
            None,
            {"fields": ["task_link", "trigger", "status_display", "requested", "worker_display", "attempt_display"]},
        ),
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
    readonly_fields = flatten_fieldsets(fieldsets)

    class Media:
        css = {"all": ["scheduler_app/admin.css"]}

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Ten columns, as on the task list: the window's width, without the navigation sidebar.
        context = {**(extra_context or {}), "is_nav_sidebar_enabled": False}
        return super().changelist_view(request, context)
