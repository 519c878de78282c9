"""``TaskScheduler``: APScheduler 3 with ``DjangoJobStore``, run by ``manage.py runscheduler``.

The composition of three parts, each in its own module:

* ``leadership.py``: this process's row, heartbeat and leader lease;
* ``job_sync.py``: the leader's configuration cache and APScheduler over the cached job store;
* ``dispatch.py``: the dispatcher thread (fires, missed-run policy from ``catch_up.py``, jitter)
  and the pickup thread of queued runs; the runner (``runner.py``) records and runs them.

One control loop per process (``run_forever``, every ``POLL_INTERVAL``) renews the heartbeat and
competes for the lease. The leader runs APScheduler, applies configuration changes made by other
processes, reaps the runs of dead processes, flushes the job store and wakes the pickup. Standbys
only heartbeat until the lease is free. ``request_stop()`` ends every thread at once; ``stop``
then gives running tasks ``SHUTDOWN_GRACE``. The scheduler writes no run record itself and knows
nothing of HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from django.db import InterfaceError, OperationalError
from django.utils import timezone

from scheduler_app import conf
from scheduler_app.db import (
    checkpoint_wal,
    close_thread_connections,
    fresh_connections,
    leave_wal_checkpoints_to_the_control_loop,
)
from scheduler_app.dispatch import Dispatcher
from scheduler_app.execution import thread_ended
from scheduler_app.job_sync import JOB_FUNC as JOB_FUNC
from scheduler_app.job_sync import JobSync
from scheduler_app.leadership import Leadership
from scheduler_app.models import TaskExecutionRecord
from scheduler_app.records import MissedFire
from scheduler_app.registry import TaskRegistry, task_registry
from scheduler_app.runner import TaskRunner
from scheduler_app.tasks.base import TaskStatus

# admin.py still imports it from here; its home is triggers.py.

logger = logging.getLogger("scheduler_app.scheduler")

REAP_EVERY_TICKS = 3
# A tick (lease renewal, job sync, the job store's flush: write transactions) waits while fires are
# being claimed, at most this long. The tick's period and the fires' are both whole seconds, so a tick
# that fell inside a burst once fell inside it every second (BENCHMARKS.md: "the tick's phase").
TICK_MAX_YIELD_SECONDS = 0.25
TICK_YIELD_POLL_SECONDS = 0.005
# Exit status of `runscheduler` when a long-lived thread died: its supervisor should restart it.
EXIT_THREAD_DIED = 70


def fire(**_: object) -> None:
    """The target stored with each job (``JOB_FUNC``), so that jobs serialize. ``TaskExecutor``
    never calls it: it hands each fire to the dispatcher with the time the fire was meant for."""
    raise RuntimeError("scheduler jobs are run by scheduler_app.job_sync.TaskExecutor")


class TaskScheduler:
    def __init__(self, registry: TaskRegistry | None = None, runner: TaskRunner | None = None) -> None:
        self.registry = registry or task_registry
        self.runner = runner or TaskRunner(self.registry)
        self._stopping = threading.Event()
        self.leadership = Leadership()
        self.jobs = JobSync(self.registry)
        self.dispatch = Dispatcher(self.registry, self.runner, self.jobs, self._stopping, self._may_pick_up)
        self._ticks = 0
        # Health: when the control loop last finished a round with every thread working (sent with
        # the next heartbeat), and why this process cannot go on (a thread died: it stops and exits
        # with EXIT_THREAD_DIED).
        self._progress_at: datetime | None = None
        self.problem = ""

    # -- life cycle ----------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Run the control loop in this thread until ``request_stop()``, then stop cleanly."""
        self._prepare()
        try:
            self._loop()
        finally:
            self.stop()

    def request_stop(self) -> None:
        """Stop soon (safe from a signal handler or any thread): every thread of ours sees it at once."""
        self._stopping.set()
        self.dispatch.wake()

    def stop(self, grace: float | None = None) -> None:
        """Stop firing, give running tasks ``SHUTDOWN_GRACE`` seconds, interrupt the rest, clean up."""
        process = self.leadership.process
        if process is None:
            return
        self.request_stop()
        grace = float(conf.get("SHUTDOWN_GRACE")) if grace is None else grace
        self.jobs.shutdown()
        delayed = self.dispatch.stop()
        in_flight = self.runner.in_flight()
        if in_flight:
            logger.info("waiting up to %.0fs for %d running task(s)", grace, in_flight)
        drained = self.runner.drain(grace)
        self.runner.cancel.set()
        if not drained:
            # Runs still going are settled as interrupted, and recorded so by the runner's finisher.
            self.runner.interrupt_launched("the scheduler stopped before the run finished")
            self.runner.drain(5.0)
        self.runner.close()
        with fresh_connections():
            # Filtered here, not in SQL: the running-record index serves `status` alone.
            running = TaskExecutionRecord.objects.filter(status=TaskStatus.RUNNING)
            leftovers = [record for record in running if record.worker_id == process.id]
            self.runner.interrupt(leftovers, "the scheduler stopped before the run finished")
            self.runner.record_missed_fires(
                [
                    MissedFire(name, scheduled_at, "the scheduler stopped during the fire's jitter delay")
                    for name, scheduled_at in delayed
                ]
            )
            if self.leadership.lease_valid():
                self.jobs.flush()
            self.leadership.resign()
        logger.info("scheduler stopped")
        self.jobs.drop()
        close_thread_connections()
        self._stopping.clear()

    def _prepare(self) -> None:
        from scheduler_app.services import sync_task_rows

        # `_stopping` is not cleared here: a stop asked for during start-up (a Ctrl-C before the loop
        # began) must still stop it. `stop()` clears it once stopped, so that the object can run again.
        self.problem = ""
        self._progress_at = None
        self.jobs.forget_judgements()
        self.runner.cancel.clear()
        leave_wal_checkpoints_to_the_control_loop()
        with fresh_connections():
            sync_task_rows(self.registry)
            process = self.leadership.register()
        self.runner.process = process.row
        self.dispatch.start()
        logger.info(
            "scheduler process %s started with %d task(s): %s",
            process.row.label,
            len(self.registry),
            ", ".join(self.registry.names()),
        )

    def _loop(self) -> None:
        interval = float(conf.get("POLL_INTERVAL"))
        try:
            while not self._stopping.is_set():
                self._yield_to_claims()
                # From here: the next tick comes an interval after this one, out of this burst's way.
                started = time.monotonic()
                self.tick()
                self._stopping.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            close_thread_connections()

    def _yield_to_claims(self) -> None:
        """Let the fires being claimed go first, for at most ``TICK_MAX_YIELD_SECONDS``."""
        deadline = time.monotonic() + TICK_MAX_YIELD_SECONDS
        while self.dispatch.claimed_lately() and time.monotonic() < deadline and not self._stopping.is_set():
            self._stopping.wait(TICK_YIELD_POLL_SECONDS)

    def tick(self) -> None:
        """One round of the control loop; a database outage is logged and survived."""
        self._ticks += 1
        try:
            with fresh_connections():
                leader = self.leadership.renew(progress_at=self._progress_at, problem=self.problem)
                # Before a new leadership term reloads the job store, so these keep their reason.
                self.dispatch.record_unrecorded()
                if leader:
                    if not self.jobs.leading:
                        self._become_leader()
                    self._lead()
                elif self.jobs.leading:
                    self._step_down("another scheduler holds the lease")
                self.leadership.note_standby(leader)
                self._check_threads()
        except (OperationalError, InterfaceError) as exc:
            logger.warning("database unreachable (%s); retrying", str(exc).strip().splitlines()[0] if str(exc) else exc)
            if self.jobs.leading and not self.leadership.lease_valid():
                self._step_down("cannot renew the lease")
        except Exception:
            logger.exception("scheduler control loop failed; retrying")
            if self.jobs.leading and not self.leadership.lease_valid():
                self._step_down("cannot renew the lease")

    def _may_pick_up(self) -> bool:
        """Queued runs are started only by a leader whose lease can still be trusted."""
        return self.jobs.leading and self.leadership.lease_valid()

    def _check_threads(self) -> None:
        """Note progress when every long-lived thread works; when one died, say so and stop.

        A dead thread is not restarted in place (its state may be half-updated): the process
        marks itself unhealthy, stops cleanly and exits with EXIT_THREAD_DIED, so that its
        supervisor starts a fresh one (meanwhile a standby takes the lease).
        """
        dead = self.dead_threads()
        if dead:
            self.problem = f"thread(s) died: {', '.join(dead)}; the scheduler stops (exit status {EXIT_THREAD_DIED})"
            logger.critical("%s", self.problem)
            self.leadership.report_problem(self.problem)
            self.request_stop()
            return
        busy = self.dispatch.busy_since
        if busy is not None and time.monotonic() - busy > float(conf.get("LEASE_SECONDS")):
            return  # the dispatcher is stuck in one batch: fires are not being processed
        self._progress_at = timezone.now()

    def dead_threads(self) -> list[str]:
        """Names of the long-lived threads that should be running and are not."""
        if self._stopping.is_set():
            return []
        threads = [*self.dispatch.threads(), self.jobs.thread()]
        dead = [thread.name for thread in threads if thread is not None and thread_ended(thread)]
        return dead + self.runner.dead_threads()

    def _become_leader(self) -> None:
        logger.info("this process is now the active scheduler")
        self.leadership.reap(self.runner.interrupt)
        self.jobs.start(self.dispatch.queue_fires)
        self.dispatch.leading_since = timezone.now()
        self.dispatch.wake_pickup()

    def _step_down(self, reason: str) -> None:
        logger.warning("stepping down as active scheduler: %s", reason)
        self.jobs.drop()
        self.dispatch.leading_since = None

    def _lead(self) -> None:
        if self.jobs.load():
            self.jobs.sync()
        self.jobs.leave_out_failed_triggers()
        self.dispatch.wake_pickup()  # the poll: retries that came due, and anything a notification missed
        claiming = self.dispatch.claimed_lately()
        self.jobs.flush_if_due(busy=claiming)
        if not claiming:
            checkpoint_wal()  # off the dispatcher's commits (db.WAL_AUTOCHECKPOINT_PAGES)
        if self._ticks % REAP_EVERY_TICKS == 0:
            self.leadership.reap(self.runner.interrupt)


task_scheduler = TaskScheduler()
