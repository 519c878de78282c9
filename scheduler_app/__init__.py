"""A Django task scheduler: code-defined cron and interval tasks, state and history in the database.

``from scheduler_app import task_registry, task_scheduler`` works as in the seed design. Both are
imported lazily, because the scheduler needs Django's models and so a ready app registry.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler_app.registry import task_registry
    from scheduler_app.scheduler import task_scheduler

__all__ = ["task_registry", "task_scheduler"]


def __getattr__(name: str) -> Any:
    if name == "task_registry":
        from scheduler_app.registry import task_registry

        return task_registry
    if name == "task_scheduler":
        from scheduler_app.scheduler import task_scheduler

        return task_scheduler
    raise AttributeError(f"module 'scheduler_app' has no attribute {name!r}")
