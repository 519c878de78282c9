from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SchedulerAppConfig(AppConfig):
    name = "scheduler_app"
    verbose_name = "Scheduler"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from scheduler_app import (
            alerts,  # noqa: F401 - connects the failure alert receivers
            checks,  # noqa: F401 - registers the system checks
            conf,
        )
        from scheduler_app.registry import task_registry

        # Every process (web, scheduler, commands) sees the same tasks.
        paths = conf.get("TASKS")
        if isinstance(paths, list | tuple):
            task_registry.load([p for p in paths if isinstance(p, str)])
        post_migrate.connect(_create_task_rows, sender=self)


def _create_task_rows(**kwargs: object) -> None:
    from scheduler_app.services import sync_task_rows

    sync_task_rows()
