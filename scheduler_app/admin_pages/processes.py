"""The processes: schedulers, commands and fleet workers, which are alive and which one leads (read-only: they
manage their rows)."""

from __future__ import annotations

from django.contrib import admin

from scheduler_app import coordination
from scheduler_app.admin_pages.read_only import ReadOnlyAdmin
from scheduler_app.models import SchedulerProcess


class SchedulerProcessAdmin(ReadOnlyAdmin):
    """Which processes (kind scheduler, command or worker) are alive and which one leads."""

    list_display = ["label", "kind", "role", "alive", "leader", "started_at", "last_heartbeat"]
    list_filter = ["kind", "role"]
    readonly_fields = ["kind", "role", "host", "pid", "started_at", "last_heartbeat"]

    @admin.display(description="host:pid")
    def label(self, obj: SchedulerProcess) -> str:
        return obj.label

    @admin.display(boolean=True, description="alive")
    def alive(self, obj: SchedulerProcess) -> bool:
        return obj.is_alive()

    @admin.display(boolean=True, description="holds the lease")
    def leader(self, obj: SchedulerProcess) -> bool:
        return coordination.leader([obj]) is not None
