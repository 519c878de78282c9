"""The JSON log format: the formatter itself, and the project's LOGGING switched by SCHEDULER_LOG_FORMAT."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from scheduler_app.logging import JSONFormatter
from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule


def format_record(message: str, *args: object, **extra: object) -> dict:
    logger = logging.getLogger("scheduler_app.runner")
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, args, None, extra=extra)
    line = JSONFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_one_json_object_per_line_with_the_context_passed_as_extra() -> None:
    entry = format_record(
        "task %s run %s %s", "tick", 7, "failed", task="tick", run_id=7, trigger="manual", duration=0.25
    )
    assert entry["message"] == "task tick run 7 failed"
    assert entry["level"] == "WARNING" and entry["logger"] == "scheduler_app.runner"
    assert (entry["task"], entry["run_id"], entry["trigger"], entry["duration"]) == ("tick", 7, "manual", 0.25)
    assert entry["time"].endswith("+00:00") and isinstance(entry["process"], int)
    assert "args" not in entry and "msg" not in entry and "levelno" not in entry


def test_exceptions_and_unserializable_values() -> None:
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logger = logging.getLogger("scheduler_app.scheduler")
        record = logger.makeRecord(
            logger.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info(), extra={"thing": object()}
        )
    line = JSONFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert "ValueError: multi\\nline" in json.dumps(entry["exception"]) and entry["thing"].startswith("<object")


class ChattyTask(BaseTask):
    """Logs from its own code, as task authors do."""

    name = "chatty"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=3600)

    def run(self) -> TaskResult:
        logging.getLogger("scheduler_app.tasks.chatty").info("working on it")
        return TaskResult.success("done")


class AsyncChattyTask(BaseTask):
    name = "async_chatty"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=3600)

    async def run(self) -> TaskResult:
        logging.getLogger("scheduler_app.tasks.chatty").info("working on it, asynchronously")
        raise RuntimeError("async chatty gave up")


@pytest.mark.django_db(transaction=True)
def test_lines_logged_during_a_run_carry_its_context() -> None:
    from scheduler_app.registry import task_registry
    from scheduler_app.runner import TaskRunner
    from scheduler_app.services import sync_task_rows

    lines: list[dict] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(self.format(record)))

    handler = Collect()
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("scheduler_app")
    logger.addHandler(handler)
    for task in (ChattyTask, AsyncChattyTask):
        task_registry.register(task)
    try:
        sync_task_rows()
        ok = TaskRunner().run_now("chatty")
        failed = TaskRunner().run_now("async_chatty")
    finally:
        logger.removeHandler(handler)
        for task in (ChattyTask, AsyncChattyTask):
            task_registry.unregister(task.name)
    by_message = {line["message"]: line for line in lines}
    own = by_message["working on it"]
    assert (own["task"], own["run_id"], own["trigger"]) == ("chatty", ok.pk, "manual")
    assert own["thread"] == "task:chatty"
    own_async = by_message["working on it, asynchronously"]
    assert (own_async["task"], own_async["run_id"]) == ("async_chatty", failed.pk)
    finish = next(line for line in lines if line["message"].startswith(f"task async_chatty run {failed.pk} failed"))
    assert finish["level"] == "WARNING" and finish["run_id"] == failed.pk and finish["duration"] >= 0
    # Outside a run, no stale context leaks into other lines.
    outside = JSONFormatter().format(logging.LogRecord("scheduler_app", logging.INFO, __file__, 1, "idle", (), None))
    assert "run_id" not in json.loads(outside)


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_the_project_logs_json_when_asked(processes) -> None:
    """A real `trigger_task` with the project's own settings and SCHEDULER_LOG_FORMAT=json."""
    result = processes.command(
        "trigger_task",
        "prune_history",
        DJANGO_SETTINGS_MODULE="scheduler_project.settings",
        SCHEDULER_LOG_FORMAT="json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    runs = [line for line in lines if line.get("logger") == "scheduler_app.runner" and "run_id" in line]
    assert runs, result.stderr
    run = runs[-1]
    assert run["task"] == "prune_history" and run["trigger"] == "manual" and run["level"] == "INFO"
    assert isinstance(run["run_id"], int) and run["duration"] >= 0

    plain = processes.command("trigger_task", "prune_history", DJANGO_SETTINGS_MODULE="scheduler_project.settings")
    assert plain.returncode == 0 and "INFO scheduler_app.runner task prune_history run" in plain.stderr
