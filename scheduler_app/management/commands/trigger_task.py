"""``manage.py trigger_task NAME``: run one task now, in this process, through the TaskRunner."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduler_app.coordination import HeartbeatThread, ProcessHandle
from scheduler_app.exceptions import TaskNotFound
from scheduler_app.models import SchedulerProcess
from scheduler_app.registry import task_registry
from scheduler_app.runner import TaskRunner
from scheduler_app.services import sync_task_rows
from scheduler_app.tasks.base import TaskStatus

EXIT_FAILED = 1
EXIT_UNKNOWN_TASK = 2


class Command(BaseCommand):
    help = (
        "Run one task now in this process, with the same rules as a scheduled run: a record in the "
        "history, the task's timeout, and the concurrency rule (a task that is already running "
        "elsewhere and does not allow concurrent runs is recorded as skipped). "
        "Exit status: 0 success or skipped, 1 failed, timed out or interrupted, 2 unknown task."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the task's name, e.g. sync_inventory")
        parser.add_argument("--json", action="store_true", help="print the execution record as JSON")
        parser.add_argument(
            "--timeout", type=float, default=None, help="seconds before the run is stopped (default: the task's)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        if name not in task_registry:
            raise CommandError(str(TaskNotFound(name, task_registry.names())), returncode=EXIT_UNKNOWN_TASK)
        sync_task_rows()
        handle = ProcessHandle(SchedulerProcess.Kind.COMMAND)
        handle.register()
        heartbeat = HeartbeatThread(handle)
        heartbeat.start()
        try:
            runner = TaskRunner(process=handle.row)
            if options["timeout"] is not None:
                runner.default_timeout = options["timeout"]
                from scheduler_app.models import TaskConfig

                config = TaskConfig.objects.get(name=name)
                if config.timeout_override is not None or config.default_timeout_seconds is not None:
                    self.stderr.write("note: --timeout applies only when the task sets no timeout of its own")
            record = runner.run_now(name, origin="command")
        finally:
            heartbeat.stop()
            handle.unregister()
        if options["json"]:
            self.stdout.write(json.dumps(_as_dict(record), indent=2, default=str))
        else:
            line = f"{record.task_id} #{record.pk}: {record.status}"
            if record.duration_seconds is not None:
                line += f" in {record.duration_seconds:.3f}s"
            if record.message:
                line += f" - {record.message}"
            self.stdout.write(line)
            if record.data:
                self.stdout.write(json.dumps(record.data, indent=2, default=str))
            if record.error:
                self.stderr.write(record.error)
        if record.status not in (TaskStatus.SUCCESS, TaskStatus.SKIPPED):
            raise CommandError(f"task {name!r} {record.status}", returncode=EXIT_FAILED)


def _as_dict(record: Any) -> dict[str, Any]:
    return {
        "id": record.pk,
        "task": record.task_id,
        "trigger": record.trigger,
        "status": record.status,
        "scheduled_at": record.scheduled_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "duration_seconds": record.duration_seconds,
        "message": record.message,
        "error": record.error,
        "data": record.data,
    }
