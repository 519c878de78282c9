"""The real ``runscheduler`` process against a real database file."""

from __future__ import annotations

import signal

import pytest

from scheduler_app.models import SchedulerProcess, TaskExecutionRecord, TaskState
from tests.processes import wait_for

pytestmark = [pytest.mark.process]


def records(task: str, **filters: object) -> list[TaskExecutionRecord]:
    return list(TaskExecutionRecord.objects.filter(task_id=task, **filters).order_by("id"))


def test_interval_task_fires_on_time_and_sigterm_exits_zero(processes) -> None:
    scheduler = processes.scheduler(["TickTask"])
    wait_for(lambda: len(records("tick", status="success")) >= 3, timeout=10, message="3 tick runs")
    runs = records("tick", status="success")
    for run in runs:
        assert run.trigger == "scheduled"
        assert 0 <= run.lateness_seconds < 0.5, f"run {run.pk} started {run.lateness_seconds}s late"
    gaps = [(b.scheduled_at - a.scheduled_at).total_seconds() for a, b in zip(runs, runs[1:], strict=False)]
    assert all(abs(gap - 1.0) < 1e-3 for gap in gaps), gaps
    state = TaskState.objects.get(task_id="tick")
    assert state.run_count >= 3 and state.last_result == "success" and state.next_run_at is not None
    assert scheduler.stop(signal.SIGTERM) == 0
    assert not SchedulerProcess.objects.filter(pid=scheduler.pid).exists()
