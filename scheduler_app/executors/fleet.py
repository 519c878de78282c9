"""``FleetExecutor``: hands claimed runs to a ``django.tasks`` backend, whose workers run them.

The run is already recorded and its task's slot claimed by the scheduler (the ledger); the executor
only enqueues ``worker.run_record`` with the record's id. What a backend may do twice (deliver a
job again after a worker restart, a retry of its own) does no harm: the worker claims the record
before running it, and only a ``queued`` record can be claimed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from scheduler_app.abc import Outcome, RemoteExecutor, RunHandle, Submission
from scheduler_app.executors import NEEDS_FRAMEWORK, tasks_framework

# Imported by path when first used: the worker side (it imports the runner, which imports this module).
WORKER_TASK = "scheduler_app.executors.worker.run_record"


class HandedOff:
    """A run the backend holds: settled in its record by the worker, never here."""

    def __init__(self, result_id: str) -> None:
        self.result_id = result_id
        self.started_at: datetime | None = None
        self.duration = 0.0
        self.outcome: Outcome | None = None
        self.settled = threading.Event()

    def wait(self, cancel: threading.Event | None = None, reason: str = "") -> Outcome:
        raise RuntimeError("a run handed to a backend ends on a worker: read its record")


class FleetExecutor(RemoteExecutor):
    """Enqueues runs on the ``django.tasks`` backend ``alias`` (settings.TASKS)."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def submit(self, run: Submission, on_settled: Callable[[RunHandle], None] | None = None) -> HandedOff:
        if tasks_framework() is None:
            raise ImproperlyConfigured(NEEDS_FRAMEWORK)
        result = import_string(WORKER_TASK).using(backend=self.alias).enqueue(run.record_id)
        return HandedOff(str(result.id))
