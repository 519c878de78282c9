"""The database rows of the registered tasks (``TaskConfig`` and ``TaskState``), kept in step with the code.

A module of its own, below ``services`` and the runner, so that both can sync rows without importing
each other.
"""

from __future__ import annotations

from django.db.models import F
from django.utils import timezone

from scheduler_app.models import TaskConfig, TaskState
from scheduler_app.registry import TaskRegistry, task_registry


def sync_task_rows(registry: TaskRegistry | None = None) -> None:
    """One ``TaskConfig`` and ``TaskState`` per registered task, with the code's current defaults.

    Runs after ``migrate`` (and the test flushes), when a scheduler starts and before a command
    runs. Rows of tasks that left the code are kept, marked unregistered, so history stays.
    """
    registry = registry or task_registry
    existing = {config.name: config for config in TaskConfig.objects.all()}
    for task in registry:
        defaults = TaskConfig.code_defaults(task)
        config = existing.get(task.name)
        if config is None:
            TaskConfig.objects.bulk_create([TaskConfig(name=task.name, **defaults)], ignore_conflicts=True)
        elif any(getattr(config, key) != value for key, value in defaults.items()):
            TaskConfig.objects.filter(name=task.name).update(
                **defaults, revision=F("revision") + 1, updated_at=timezone.now()
            )
    gone = [name for name, config in existing.items() if config.registered and name not in registry]
    if gone:
        TaskConfig.objects.filter(name__in=gone).update(registered=False, revision=F("revision") + 1)
    TaskState.objects.bulk_create([TaskState(task_id=name) for name in registry.names()], ignore_conflicts=True)
