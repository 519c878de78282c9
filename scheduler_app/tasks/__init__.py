"""Task API and the example tasks shipped with the app."""

from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule, TaskStatus
from scheduler_app.tasks.crawl_site import CrawlSiteTask
from scheduler_app.tasks.prune_history import PruneHistoryTask
from scheduler_app.tasks.sync_inventory import SyncInventoryTask

__all__ = [
    "BaseTask",
    "CrawlSiteTask",
    "PruneHistoryTask",
    "ScheduleType",
    "SyncInventoryTask",
    "TaskResult",
    "TaskSchedule",
    "TaskStatus",
]
