"""Housekeeping: delete execution records older than ``HISTORY_RETENTION_DAYS``."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from scheduler_app import conf
from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule, TaskStatus

BATCH_SIZE = 5000


class PruneHistoryTask(BaseTask):
    """Delete finished execution records older than SCHEDULER['HISTORY_RETENTION_DAYS']."""

    name = "prune_history"
    description = "Delete finished execution records older than SCHEDULER['HISTORY_RETENTION_DAYS'] days"
    schedule = TaskSchedule(schedule_type=ScheduleType.CRON, cron_expression="30 3 * * *")
    timeout = 1800

    def run(self) -> TaskResult:
        from scheduler_app.models import TaskExecutionRecord

        days = float(conf.get("HISTORY_RETENTION_DAYS"))
        cutoff = timezone.now() - timedelta(days=days)
        old = TaskExecutionRecord.objects.filter(created_at__lt=cutoff).exclude(
            status__in=[TaskStatus.PENDING, TaskStatus.RUNNING]
        )
        deleted = 0
        # Small batches keep each write transaction short, so the scheduler never waits long.
        while ids := list(old.values_list("pk", flat=True)[:BATCH_SIZE]):
            deleted += TaskExecutionRecord.objects.filter(pk__in=ids).delete()[0]
        return TaskResult.success(
            f"deleted {deleted} record(s) older than {days:g} day(s)", deleted=deleted, cutoff=cutoff.isoformat()
        )
