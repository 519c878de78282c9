"""``manage.py trigger_task`` as a user runs it: a real process against the test database."""

from __future__ import annotations

import json

import pytest

from scheduler_app import services
from scheduler_app.models import SchedulerProcess, TaskExecutionRecord, TaskState
from tests.processes import wait_for

pytestmark = [pytest.mark.process]


def test_success_prints_the_result_and_exits_zero(processes) -> None:
    result = processes.command("trigger_task", "tick", tasks=["TickTask"])
    assert result.returncode == 0, result.stderr
    record = TaskExecutionRecord.objects.get(task_id="tick")
    assert f"tick #{record.pk}: success" in result.stdout
    assert record.trigger == "manual" and record.origin == "command"
    assert TaskState.objects.get(task_id="tick").run_count == 1
    assert not SchedulerProcess.objects.exists(), "the command must remove its process row"


def test_failure_and_timeout_exit_non_zero(processes) -> None:
    failed = processes.command("trigger_task", "boom", tasks=["BoomTask", "HangTask"])
    assert failed.returncode == 1
    assert ": failed in" in failed.stdout and "ValueError: boom" in failed.stderr
    timed_out = processes.command("trigger_task", "hang", tasks=["BoomTask", "HangTask"])
    assert timed_out.returncode == 1 and "hang" in timed_out.stdout and "timeout" in timed_out.stdout
    assert TaskState.objects.get(task_id="hang").fail_count == 1


def test_unknown_name_is_named_and_known_tasks_listed(processes) -> None:
    result = processes.command("trigger_task", "tock", tasks=["TickTask", "BoomTask"])
    assert result.returncode == 2
    assert "unknown task 'tock'; known tasks: boom, tick" in result.stderr
    assert not TaskExecutionRecord.objects.exists()


def test_json_output_and_help(processes) -> None:
    result = processes.command("trigger_task", "tick", "--json", tasks=["TickTask"])
    assert result.returncode == 0
    payload = json.loads(result.stdout)
    assert payload["task"] == "tick" and payload["status"] == "success" and payload["trigger"] == "manual"
    helped = processes.command("trigger_task", "--help", tasks=["TickTask"])
    assert "Exit status: 0 success or skipped" in helped.stdout and "--timeout" in helped.stdout


def test_never_overlaps_a_run_of_the_scheduler_process(processes) -> None:
    processes.scheduler(["LongTask"], TEST_LONG_TASK_SECONDS="20")
    queued = services.request_run("long", origin="api")
    wait_for(lambda: TaskExecutionRecord.objects.get(pk=queued.pk).status == "running", timeout=5, message="run")
    result = processes.command("trigger_task", "long", tasks=["LongTask"])
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stdout and "previous run is still running" in result.stdout
    skipped = TaskExecutionRecord.objects.exclude(pk=queued.pk).get(task_id="long")
    assert skipped.status == "skipped" and skipped.origin == "command"
