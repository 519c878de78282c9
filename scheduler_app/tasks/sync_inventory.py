"""Take an inventory of the database (rows per model) and write it to a JSON file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from asgiref.sync import sync_to_async
from django.apps import apps
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule


def inventory_path() -> Path:
    return Path(getattr(settings, "SCHEDULER_DATA_DIR", Path(settings.BASE_DIR) / "var")) / "inventory.json"


class SyncInventoryTask(BaseTask):
    """Count the rows of every model and write the inventory to var/inventory.json."""

    name = "sync_inventory"
    description = "Count the rows of every model and write the inventory to var/inventory.json"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=3600, allow_concurrent=False)
    enabled = True
    timeout = 120

    async def run(self) -> TaskResult:
        return await sync_to_async(self.take_inventory)()

    def take_inventory(self) -> TaskResult:
        counts: dict[str, int] = {}
        failed: dict[str, str] = {}
        for model in apps.get_models():
            label = model._meta.label_lower
            try:
                counts[label] = model._default_manager.count()
            except DatabaseError as exc:
                failed[label] = str(exc)
        target = inventory_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        payload = {"taken_at": timezone.now().isoformat(), "models": counts}
        # Write-then-rename: a reader never sees half a file.
        with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
        os.replace(handle.name, target)
        if failed:
            return TaskResult.failed(error=f"could not count: {failed}", message="inventory incomplete", **payload)
        return TaskResult.success(
            f"inventory of {len(counts)} models written to {target}",
            synced_count=len(counts),
            failed_count=0,
            total_rows=sum(counts.values()),
            path=str(target),
        )
