"""The worker side of the fleet: the ``django.tasks`` task that a backend's workers run.

``run_record(record_id)`` is what ``FleetExecutor`` enqueues. In the worker process it claims the
record (only a ``queued`` one: a second delivery finds it taken and runs nothing), runs the task's
code on a local ``WorkerPool`` so that the timeout is enforced here, where the code runs, and writes
the outcome and any retry through the same ``TaskRunner`` and ledger as a scheduler. The record's
``worker_label`` is this process's ``host:pid``.

A worker process registers a ``SchedulerProcess`` row of kind ``worker`` at its first run and keeps
its heartbeat fresh from a thread: when the process dies (kill -9, a lost host), the leading
scheduler's reaper marks its ``running`` records ``interrupted`` once the heartbeat is older than
``LEASE_SECONDS``, and the task's slot is free again.

"""

from __future__ import annotations

import atexit
import logging
import threading

from scheduler_app.coordination import HeartbeatThread, ProcessHandle
from scheduler_app.execution import WorkerPool
from scheduler_app.executors import tasks_framework
from scheduler_app.models import SchedulerProcess
from scheduler_app.runner import TaskRunner

logger = logging.getLogger("scheduler_app.executors")

_framework = tasks_framework()
_lock = threading.Lock()
_runner: TaskRunner | None = None


def _this_worker() -> TaskRunner:
    """This process's runner, registered as a worker process with a heartbeat (once per process)."""
    global _runner
    with _lock:
        if _runner is None:
            handle = ProcessHandle(SchedulerProcess.Kind.WORKER)
            handle.register()
            heartbeat = HeartbeatThread(handle)
            heartbeat.start()

            def unregister() -> None:
                heartbeat.stop()
                handle.unregister()

            atexit.register(unregister)
            # One run at a time per worker process, as the backend hands them; a run that outlives its
            # timeout is abandoned to its thread and the pool starts a fresh one for the next run.
            _runner = TaskRunner(process=handle.row, executor=WorkerPool(1, name="fleet-worker"))
            logger.info("fleet worker %s registered", handle.row.label)
        return _runner


def run_record(record_id: int) -> str:
    """Run the execution record ``record_id`` that a scheduler handed to this backend; its final status."""
    record = _this_worker().run_handed_off(record_id)
    return "not run: no longer queued" if record is None else str(record.status)


# The task that backends enqueue, under this name (workers import it by its path). Without django.tasks
# (Django 5.2 without the backport) it stays a plain function: the system check (scheduler.E060/E061)
# refuses every backend alias there, and a hand-off fails saying what is missing.
if _framework is not None:
    run_record = _framework.task()(run_record)  # type: ignore[assignment]
