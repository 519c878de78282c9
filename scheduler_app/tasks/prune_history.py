"""Housekeeping: delete execution records older than ``HISTORY_RETENTION_DAYS``."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from scheduler_app import conf
from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule

BATCH_SIZE = 5000


class PruneHistoryTask(BaseTask):
    """Delete finished execution records older than SCHEDULER['HISTORY_RETENTION_DAYS']."""

    name = "prune_history"
    description = "Delete finished execution records older than SCHEDULER['HISTORY_RETENTION_DAYS'] days"
    schedule = TaskSchedule(schedule_type=ScheduleType.CRON, cron_expression="30 3 * * *")
    timeout = 1800

    def run(self) -> TaskResult:
        from scheduler_app.ledger import Ledger

        days = float(conf.get("HISTORY_RETENTION_DAYS"))
        cutoff = timezone.now() - timedelta(days=days)
        deleted = Ledger.prune(cutoff, BATCH_SIZE)
        return TaskResult.success(
            f"deleted {deleted} record(s) older than {days:g} day(s)", deleted=deleted, cutoff=cutoff.isoformat()
        )
