"""Runs through the scheduler's own path (``launch_*``, then the finisher), for tests that need the outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import OperationalError

from scheduler_app.models import TaskExecutionRecord
from scheduler_app.records import RunOutcome
from scheduler_app.runner import Fire, TaskRunner


def _outcome(runner: TaskRunner, record_id: int) -> TaskExecutionRecord:
    assert runner.drain(30), "the run's outcome was not written within 30 s"
    return TaskExecutionRecord.objects.get(pk=record_id)


def run_fire(
    runner: TaskRunner, name: str, scheduled_at: datetime, jitter: float | None = None
) -> TaskExecutionRecord | None:
    """The fire of ``name`` meant for ``scheduled_at``, as the scheduler starts it; None if it already has a record."""
    [record] = runner.launch_fires([Fire(runner.ledger.config(name), scheduled_at, jitter)])
    return None if record is None else _outcome(runner, record.pk)


def run_queued(runner: TaskRunner, record_id: int) -> TaskExecutionRecord | None:
    """A queued manual run or retry, as the scheduler's pickup starts it; None if it did not start."""
    return _outcome(runner, record_id) if runner.launch_pending(record_id) else None


def run_buffered(runner: TaskRunner, name: str) -> TaskExecutionRecord | None:
    """The fire that ``buffer_one`` kept, as the pickup starts it; None if the task is busy or nothing is kept."""
    record_id = runner.ledger.buffered_record_id(name)
    return _outcome(runner, record_id) if record_id is not None and runner.launch_buffered(name) else None


def queued_run(name: str, backend: str = "fleet") -> TaskExecutionRecord:
    """A run of ``name`` claimed and handed to ``backend`` (``queued``, its slot held), as the scheduler does
    before it enqueues it; nothing is enqueued, so no worker ever takes it."""
    from scheduler_app.ledger import Ledger

    ledger = Ledger()
    record = ledger.start_manual(ledger.config(name))
    assert ledger.hand_off(record.pk, backend), record.status
    return TaskExecutionRecord.objects.get(pk=record.pk)


def assert_holds_outcome(record: TaskExecutionRecord, outcome: RunOutcome) -> None:
    """``record`` reads as ``outcome`` wrote it: every column an outcome sets."""
    assert (record.status, record.started_at, record.finished_at, record.duration_seconds) == (
        outcome.status,
        outcome.started_at,
        outcome.finished_at,
        outcome.duration_seconds,
    )
    assert (record.message, record.error, record.data) == (outcome.message, outcome.error, outcome.data)


class RetryInsertsRefused:
    """A ``connection.execute_wrapper`` that refuses the first ``times`` inserts of retry records as a
    failing disk would (``OperationalError``); ``refused`` counts those it refused."""

    def __init__(self, times: int = 1) -> None:
        self.times = times
        self.refused = 0
        self.table = TaskExecutionRecord._meta.db_table

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if self.refused < self.times and sql.startswith(f'INSERT INTO "{self.table}"') and "retry" in (params or ()):
            self.refused += 1
            raise OperationalError("disk I/O error")
        return execute(sql, params, many, context)
