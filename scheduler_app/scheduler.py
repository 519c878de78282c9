"""``TaskScheduler``: APScheduler 3 with ``DjangoJobStore``, run by ``manage.py runscheduler``.

One control loop per process (every ``POLL_INTERVAL``) renews the heartbeat and competes for the
leader lease. The leader runs APScheduler over the cached ``DjangoJobStore``, applies configuration
changes made by other processes, reaps the runs of dead processes and flushes the job store.
Standbys only heartbeat until the lease is free. Runs queued as ``pending`` (manual runs, retries,
fires kept by ``buffer_one``) are started by the leader's pickup thread, woken at once when a run
is queued (``notify.py``), when a run that a queued manual run waits for ends, and every poll.

APScheduler's fires go through ``TaskExecutor`` to one dispatcher thread, which applies the
missed-run policy and hands every fire due at once to the ``TaskRunner`` in one call (one
transaction claims and records the whole burst; the code runs on the runner's worker pool). The
scheduler knows nothing of HTTP.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Count, Sum
from django.utils import timezone

from scheduler_app import conf, faults
from scheduler_app.catch_up import split_due_fires
from scheduler_app.coordination import (
    ProcessHandle,
    alive,
    reap_dead_processes,
    release_lease,
    try_acquire_lease,
)
from scheduler_app.db import close_thread_connections, fresh_connections
from scheduler_app.execution import thread_ended
from scheduler_app.jobstore import CachedDjangoJobStore
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord, Trigger
from scheduler_app.notify import PendingWatcher
from scheduler_app.records import MissedFire, ready_runs, tasks_with_queued_manual_runs
from scheduler_app.registry import TaskRegistry, task_registry
from scheduler_app.runner import Fire, TaskRunner
from scheduler_app.tasks.base import OverlapPolicy, ScheduleType, TaskStatus
from scheduler_app.triggers import CronTrigger, make_interval_trigger
from scheduler_app.validation import config_errors, parse_datetime_option

logger = logging.getLogger("scheduler_app.scheduler")

JOB_FUNC = "scheduler_app.scheduler:fire"
REAP_EVERY_TICKS = 3
# Queued runs started per look; a full batch is followed by another look at once.
PENDING_BATCH = 100
# Exit status of `runscheduler` when a long-lived thread died: its supervisor should restart it.
EXIT_THREAD_DIED = 70


def fire(**_: object) -> None:
    """The target stored with each job, so that jobs serialize. ``TaskExecutor`` never calls it:
    it runs each fire through the ``TaskRunner`` together with the time the fire was meant for."""
    raise RuntimeError("scheduler jobs are run by scheduler_app.scheduler.TaskExecutor")


def build_trigger(config: TaskConfig) -> BaseTrigger:
    options = config.options
    start = parse_datetime_option(options.get("start_date"))
    end = parse_datetime_option(options.get("end_date"))
    if config.schedule_type == ScheduleType.CRON:
        return CronTrigger(config.cron_expression or "", config.timezone, start_date=start, end_date=end)
    return make_interval_trigger(int(config.interval_seconds or 0), config.timezone, start_date=start, end_date=end)


# Tasks whose trigger raised in APScheduler's thread (task -> why), for the control loop to mark.
_trigger_failures: dict[str, str] = {}
_trigger_failures_lock = threading.Lock()


class IsolatedTrigger(BaseTrigger):
    """A task's trigger, whose failure ends only that task's job.

    APScheduler asks triggers for the next fire time in its one scheduling thread, unguarded: a
    trigger that raised there (a bug, a value no rule foresaw) would end that thread and the firing
    of every task. Here the error is logged and the job ends (None); the control loop then marks
    the task's ``config_error`` and leaves it out until its configuration changes.
    """

    __slots__ = ("inner", "task")

    def __init__(self, inner: BaseTrigger, task: str) -> None:
        self.inner = inner
        self.task = task

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        try:
            return self.inner.get_next_fire_time(previous_fire_time, now)
        except Exception as exc:
            logger.exception("task %s: its trigger %s failed; the task is left out", self.task, self.inner)
            with _trigger_failures_lock:
                _trigger_failures[self.task] = f"its trigger failed: {type(exc).__name__}: {exc}"
            return None

    def __getstate__(self) -> dict[str, object]:
        return {"version": 1, "inner": self.inner, "task": self.task}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.inner = state["inner"]  # type: ignore[assignment]
        self.task = str(state["task"])

    def __str__(self) -> str:
        return str(self.inner)

    def __repr__(self) -> str:
        return f"<IsolatedTrigger {self.inner!r}>"


def take_trigger_failures() -> dict[str, str]:
    with _trigger_failures_lock:
        failures = dict(_trigger_failures)
        _trigger_failures.clear()
    return failures


class DelayedFires:
    """One thread that hands jittered fires to the pool at their time, instead of a sleeping worker
    per fire (many tasks share a minute: that is what jitter is for)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, datetime, Callable[..., object], tuple[object, ...]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_later(
        self, delay: float, name: str, scheduled_at: datetime, fn: Callable[..., object], *args: object
    ) -> None:
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), name, scheduled_at, fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="delayed-fires", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._wake.wait(timeout=self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._closed:
                    return
                _, _, name, scheduled_at, fn, args = heapq.heappop(self._heap)
            try:
                fn(name, scheduled_at, *args)
            except Exception:
                logger.exception("could not start the jittered fire of %s at %s", name, scheduled_at)

    def close(self) -> list[tuple[str, datetime]]:
        """Stop; returns the (task, fire time) pairs that were still waiting."""
        with self._wake:
            self._closed = True
            waiting = [(name, scheduled_at) for _, _, name, scheduled_at, _, _ in self._heap]
            self._heap.clear()
            self._wake.notify()
        return waiting


class TaskExecutor(BaseExecutor):
    """Hands APScheduler's fires, with their scheduled times, to the scheduler's dispatcher."""

    def __init__(self, owner: TaskScheduler) -> None:
        super().__init__()
        self.owner = owner

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        self.owner.queue_fires(job.id, list(run_times))
        # Whatever happens to the fires is ours to record; for APScheduler the job is done.
        self._run_job_success(job.id, [])


class TaskScheduler:
    def __init__(self, registry: TaskRegistry | None = None, runner: TaskRunner | None = None) -> None:
        self.registry = registry or task_registry
        self.runner = runner or TaskRunner(self.registry)
        self.process: ProcessHandle | None = None
        self._aps: BackgroundScheduler | None = None
        self._jobstore: CachedDjangoJobStore | None = None
        self._stopping = threading.Event()
        self._configs: dict[str, TaskConfig] = {}
        self._config_key: tuple[object, object] | None = None
        # Fires handed over by APScheduler (task, fire times, jitter already applied), for the dispatcher.
        self._fires: deque[tuple[str, list[datetime], float | None]] = deque()
        self._fires_cond = threading.Condition()
        self._dispatcher: threading.Thread | None = None
        self._lease_valid_until = 0.0
        self._last_flush = 0.0
        self._ticks = 0
        self._standing_by = False  # said once per standby term, not each poll
        self._thread: threading.Thread | None = None
        self._delayed = DelayedFires()
        # Fires whose record could not be written (database unreachable): recorded `missed` once
        # it answers again. (task, fire time, why), guarded by the lock.
        self._unrecorded: list[tuple[str, datetime, str]] = []
        self._unrecorded_lock = threading.Lock()
        # Health: when the control loop last finished a round with every thread working (sent with
        # the next heartbeat), since when the dispatcher is busy with one batch, and why this
        # process cannot go on (a thread died: it stops and exits with EXIT_THREAD_DIED).
        self._progress_at: datetime | None = None
        self._dispatching_since: float | None = None
        self.problem = ""
        # Per task: (revision judged, why it cannot be scheduled or "").
        self._judged: dict[str, tuple[int, str]] = {}
        # Queued runs (manual, retries, buffered fires) are started by the pickup thread, woken by
        # the control loop's poll, by a notification that a run was queued (PendingWatcher), and
        # when a run of a task with a queued manual run ends (it waits for that moment).
        self._pickup_wake = threading.Event()
        self._pickup: threading.Thread | None = None
        self._watcher: PendingWatcher | None = None
        self._leading_since: datetime | None = None
        self._allow_overlap: list[str] = []
        self._waiting_lock = threading.Lock()
        self._waiting_tasks: set[str] = set()
        self._ended_since_pickup: set[str] = set()

    # -- state ---------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._aps is not None

    @property
    def running(self) -> bool:
        """True while this object's loop runs in this process (see ``is_alive`` for any process)."""
        return self.process is not None and not self._stopping.is_set()

    @staticmethod
    def is_alive() -> bool:
        """True while any scheduler process, anywhere, has a fresh heartbeat."""
        return alive()

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start in background threads (for embedding); ``run_forever`` is the foreground form."""
        self._prepare()
        self._thread = threading.Thread(target=self._loop, name="scheduler-control", daemon=True)
        self._thread.start()

    def run_forever(self) -> None:
        """Run the control loop in this thread until ``request_stop()``, then stop cleanly."""
        self._prepare()
        try:
            self._loop()
        finally:
            self.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    def stop(self, grace: float | None = None) -> None:
        """Stop firing, give running tasks ``SHUTDOWN_GRACE`` seconds, interrupt the rest, clean up."""
        if self.process is None:
            return
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        grace = float(conf.get("SHUTDOWN_GRACE")) if grace is None else grace
        if self._aps is not None:
            self._aps.shutdown(wait=False)
        delayed = self._delayed.close()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._pickup_wake.set()
        if self._pickup is not None:
            self._pickup.join(timeout=30)
            self._pickup = None
        # Fires already handed over are recorded as missed (we are stopping), then the dispatcher ends.
        with self._fires_cond:
            self._fires_cond.notify_all()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=30)
            self._dispatcher = None
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
            leftovers = [record for record in running if record.worker_id == self.process.id]
            self.runner.interrupt(leftovers, "the scheduler stopped before the run finished")
            self.runner.record_missed_fires(
                [
                    MissedFire(name, scheduled_at, "the scheduler stopped during the fire's jitter delay")
                    for name, scheduled_at in delayed
                ]
            )
            if self._jobstore is not None and time.monotonic() < self._lease_valid_until:
                self._jobstore.flush()
            release_lease(self.process.id)
            self.process.unregister()
        logger.info("scheduler stopped")
        self._aps = None
        self._jobstore = None
        self.process = None
        close_thread_connections()

    def _prepare(self) -> None:
        from scheduler_app.services import sync_task_rows

        self._stopping.clear()
        self.problem = ""
        self._progress_at = None
        self._judged = {}
        self.runner.cancel.clear()
        self._delayed = DelayedFires()
        with fresh_connections():
            sync_task_rows(self.registry)
            self.process = ProcessHandle(SchedulerProcess.Kind.SCHEDULER)
            self.process.register()
        self.runner.process = self.process.row
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="fire-dispatcher", daemon=True)
        self._dispatcher.start()
        self.runner.on_runs_ended = self._runs_ended
        self._pickup_wake.clear()
        self._pickup = threading.Thread(target=self._pickup_loop, name="run-pickup", daemon=True)
        self._pickup.start()
        self._watcher = PendingWatcher(self._pickup_wake.set)
        self._watcher.start()
        logger.info(
            "scheduler process %s started with %d task(s): %s",
            self.process.row.label,
            len(self.registry),
            ", ".join(self.registry.names()),
        )

    def _loop(self) -> None:
        interval = float(conf.get("POLL_INTERVAL"))
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                self.tick()
                self._stopping.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            close_thread_connections()

    def tick(self) -> None:
        """One round of the control loop; a database outage is logged and survived."""
        assert self.process is not None
        self._ticks += 1
        try:
            with fresh_connections():
                leader = try_acquire_lease(self.process.id)
                self.process.heartbeat(
                    role=SchedulerProcess.Role.ACTIVE if leader else SchedulerProcess.Role.STANDBY,
                    progress_at=self._progress_at,
                    problem=self.problem,
                )
                # Before a new leadership term reloads the job store, so these keep their reason.
                self._record_unrecorded()
                if leader:
                    # Renewed now: trust it for a little less than its length.
                    self._lease_valid_until = time.monotonic() + float(conf.get("LEASE_SECONDS")) * 0.8
                    if self._aps is None:
                        self._become_leader()
                    self._lead()
                elif self._aps is not None:
                    self._step_down("another scheduler holds the lease")
                if not leader and not self._standing_by:
                    logger.info("standing by: another scheduler holds the lease; this one takes over if it stops")
                self._standing_by = not leader
                self._check_threads()
        except (OperationalError, InterfaceError) as exc:
            logger.warning("database unreachable (%s); retrying", str(exc).strip().splitlines()[0] if str(exc) else exc)
            if self._aps is not None and time.monotonic() >= self._lease_valid_until:
                self._step_down("cannot renew the lease")
        except Exception:
            logger.exception("scheduler control loop failed; retrying")
            if self._aps is not None and time.monotonic() >= self._lease_valid_until:
                self._step_down("cannot renew the lease")

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
            if self.process is not None:
                self.process.heartbeat(problem=self.problem)
            self.request_stop()
            return
        busy = self._dispatching_since
        if busy is not None and time.monotonic() - busy > float(conf.get("LEASE_SECONDS")):
            return  # the dispatcher is stuck in one batch: fires are not being processed
        self._progress_at = timezone.now()

    def dead_threads(self) -> list[str]:
        """Names of the long-lived threads that should be running and are not."""
        if self._stopping.is_set():
            return []
        threads = [self._dispatcher, self._delayed._thread, self._pickup]
        if self._watcher is not None:
            threads.append(self._watcher.thread)
        if self._aps is not None:
            threads.append(getattr(self._aps, "_thread", None))
        dead = [thread.name for thread in threads if thread is not None and thread_ended(thread)]
        return dead + self.runner.dead_threads()

    def _become_leader(self) -> None:
        logger.info("this process is now the active scheduler")
        reap_dead_processes(self.runner.interrupt, me=self.process.id if self.process else None)
        self._load_configs()
        self._jobstore = CachedDjangoJobStore()
        self._aps = BackgroundScheduler(
            timezone=ZoneInfo(settings.TIME_ZONE),
            jobstores={"default": self._jobstore},
            executors={"default": TaskExecutor(self)},
            # The misfire and overlap policies are ours (run_fires and the runner), so that every
            # fire APScheduler would drop quietly is recorded instead.
            job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1_000_000},
        )
        self._aps.start(paused=True)
        self._sync_jobs()
        self._jobstore.flush()
        self._leading_since = timezone.now()
        self._aps.resume()
        self._pickup_wake.set()

    def _step_down(self, reason: str) -> None:
        logger.warning("stepping down as active scheduler: %s", reason)
        if self._aps is not None:
            self._aps.shutdown(wait=False)
        self._aps = None
        self._jobstore = None
        self._leading_since = None

    def _lead(self) -> None:
        if self._load_configs():
            self._sync_jobs()
        self._leave_out_failed_triggers()
        self._pickup_wake.set()  # the poll: retries that came due, and anything a notification missed
        now = time.monotonic()
        if self._jobstore is not None and now - self._last_flush >= float(conf.get("JOBSTORE_FLUSH_INTERVAL")):
            self._jobstore.flush()
            self._last_flush = now
        if self._ticks % REAP_EVERY_TICKS == 0:
            reap_dead_processes(self.runner.interrupt, me=self.process.id if self.process else None)

    # -- configuration and jobs ----------------------------------------------------------------

    def _load_configs(self) -> bool:
        """Reload task configuration when any row changed; True when it did."""
        totals = TaskConfig.objects.aggregate(revision=Sum("revision"), count=Count("pk"))
        key = (totals["revision"], totals["count"])
        if key == self._config_key:
            return False
        self._configs = {config.name: config for config in TaskConfig.objects.all()}
        self._config_key = key
        self._allow_overlap = sorted(name for name, config in self._configs.items() if _allows_overlap(config))
        return True

    def _sync_jobs(self) -> None:
        """Make the job store match the registry and the configuration: add, replace, remove."""
        assert self._aps is not None
        jobs = {job.id: job for job in self._aps.get_jobs()}
        for name in self.registry.names():
            config = self._configs.get(name)
            job = jobs.pop(name, None)
            if config is None:
                continue
            # One task's configuration that cannot be scheduled leaves that task out, never the others.
            problem = self._judge(config)
            if config.enabled and not problem:
                try:
                    self._schedule(config, job)
                except Exception as exc:
                    logger.exception("task %s: its trigger cannot be built", name)
                    problem = f"its trigger cannot be built: {type(exc).__name__}: {exc}"
                    self._judged[name] = (config.revision, problem)
            self._note_config_error(config, problem)
            if job is not None and (problem or not config.enabled):
                self._aps.remove_job(name)
                logger.info("task %s %s: job removed", name, "disabled" if not config.enabled else "left out")
        for stale in jobs:
            self._aps.remove_job(stale)
            logger.info("job %s removed: no such task is registered", stale)

    def _schedule(self, config: TaskConfig, job: Job | None) -> None:
        fingerprint = config.schedule_fingerprint()
        if job is not None and job.kwargs.get("fingerprint") == fingerprint:
            return
        assert self._aps is not None
        self._aps.add_job(
            JOB_FUNC,
            trigger=IsolatedTrigger(build_trigger(config), config.name),
            id=config.name,
            name=config.name,
            kwargs={"fingerprint": fingerprint},
            replace_existing=True,
        )
        logger.info("task %s scheduled: %s", config.name, fingerprint)

    def _leave_out_failed_triggers(self) -> None:
        for name, problem in take_trigger_failures().items():
            config = self._configs.get(name)
            if config is None:
                continue
            self._judged[name] = (config.revision, problem)
            self._note_config_error(config, problem)
            if self._aps is not None and self._aps.get_job(name) is not None:
                self._aps.remove_job(name)

    def _judge(self, config: TaskConfig) -> str:
        """Why the task's stored configuration cannot be scheduled ("" if it can); judged once per revision."""
        judged = self._judged.get(config.name)
        if judged is not None and judged[0] == config.revision:
            return judged[1]
        try:
            errors = config_errors(config)
        except Exception as exc:  # e.g. options stored as something other than a JSON object
            errors = {"configuration": f"cannot be read: {type(exc).__name__}: {exc}"}
        problem = "; ".join(f"{field}: {message}" for field, message in errors.items())
        self._judged[config.name] = (config.revision, problem)
        return problem

    def _note_config_error(self, config: TaskConfig, problem: str) -> None:
        """Show on the task why it is left out (admin, API, metrics), or that it is fine again."""
        if problem == config.config_error:
            return
        if problem:
            logger.error("task %s left out of the schedule (the other tasks go on): %s", config.name, problem)
        else:
            logger.info("task %s: its configuration error is resolved", config.name)
        # No revision bump: that would make every scheduler reload the configuration for nothing.
        TaskConfig.objects.filter(name=config.name).update(config_error=problem)
        config.config_error = problem

    # -- running -------------------------------------------------------------------------------

    def queue_fires(self, name: str, run_times: list[datetime], jitter: float | None = None) -> None:
        """Hand due fires of one task to the dispatcher (called by APScheduler's thread: returns at once)."""
        with self._fires_cond:
            self._fires.append((name, run_times, jitter))
            self._fires_cond.notify()

    def _dispatch_loop(self) -> None:
        """Take every fire handed over so far and start them together, until the scheduler stops."""
        try:
            while True:
                with self._fires_cond:
                    while not self._fires and not self._stopping.is_set():
                        self._fires_cond.wait()
                    if not self._fires:
                        return
                    batch = list(self._fires)
                    self._fires.clear()
                faults.maybe_die("dispatcher")
                self._dispatching_since = time.monotonic()
                try:
                    self.run_fires(batch)
                except Exception:
                    names = sorted({name for name, _, _ in batch})
                    logger.exception("dispatching %d fire(s) of %s failed; going on", len(batch), ", ".join(names))
                finally:
                    self._dispatching_since = None
        finally:
            close_thread_connections()

    def run_fires(self, batch: list[tuple[str, list[datetime], float | None]]) -> None:
        """Apply the missed-run policy to due fires, then claim, record and start the rest at once.

        Fires that will not run are recorded ``missed`` together, in one transaction. A fire whose
        record cannot be written is not run (without its record nothing stops another process from
        running it too); it is logged now and recorded ``missed`` when the database is back.
        """
        fires: list[Fire] = []
        missed: list[MissedFire] = []
        for name, run_times, jitter in batch:
            try:
                fires += self._fires_to_run(name, run_times, jitter, missed)
            except Exception as exc:
                # One task's bad value (e.g. stored before it was bounded) costs only its own fires.
                logger.exception("task %s: its fires could not be dispatched; recorded as missed", name)
                why = f"could not be dispatched: {type(exc).__name__}: {exc}"
                missed += [MissedFire(name, scheduled_at, why) for scheduled_at in run_times]
        with fresh_connections():
            try:
                self.runner.record_missed_fires(missed)
            except (OperationalError, InterfaceError) as exc:
                for fire in missed:
                    self._unrecordable(fire.task_name, [fire.scheduled_at], exc)
            if not fires:
                return
            try:
                self.runner.launch_fires(fires)
            except (OperationalError, InterfaceError) as exc:
                for fire in fires:
                    self._unrecordable(fire.config.name, [fire.scheduled_at], exc)

    def _unrecordable(self, name: str, run_times: list[datetime], exc: Exception) -> None:
        why = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
        for scheduled_at in run_times:
            logger.error(
                "task %s: fire at %s could not be recorded (database unreachable: %s); not run, "
                "it will be recorded as missed when the database is back",
                name,
                scheduled_at.isoformat(),
                why,
            )
        with self._unrecorded_lock:
            self._unrecorded.extend((name, scheduled_at, why) for scheduled_at in run_times)

    def _record_unrecorded(self) -> None:
        with self._unrecorded_lock:
            backlog, self._unrecorded = self._unrecorded, []
        if not backlog:
            return
        try:
            # A fire that did get its record (the connection broke later) keeps it: no duplicate.
            self.runner.record_missed_fires(
                [
                    MissedFire(name, scheduled_at, f"the database was unreachable when it was due ({why})")
                    for name, scheduled_at, why in backlog
                ]
            )
        except BaseException:
            with self._unrecorded_lock:
                self._unrecorded[:0] = backlog
            raise

    def _fires_to_run(
        self, name: str, run_times: list[datetime], jitter: float | None, missed: list[MissedFire]
    ) -> list[Fire]:
        """The fires of one task to start now; those that will not run go to ``missed``; jitter delays."""
        config = self._configs.get(name)
        if config is None or not config.enabled or name not in self.registry:
            return []
        if self._stopping.is_set():
            missed += [MissedFire(name, scheduled_at, "the scheduler was stopping") for scheduled_at in run_times]
            return []
        if jitter is not None:
            # Back from its jitter delay: the missed-run policy was applied when it was due.
            return [Fire(config, scheduled_at, jitter) for scheduled_at in run_times]
        to_run = self._apply_missed_policy(config, run_times, missed)
        max_jitter = int(config.options.get("jitter_seconds") or 0)  # type: ignore[call-overload]
        if not max_jitter:
            return [Fire(config, scheduled_at) for scheduled_at in to_run]
        for scheduled_at in to_run:
            delay = random.uniform(0, max_jitter)
            self._delayed.call_later(delay, name, scheduled_at, self._queue_jittered, delay)
        return []

    def _queue_jittered(self, name: str, scheduled_at: datetime, delay: float) -> None:
        self.queue_fires(name, [scheduled_at], delay)

    def _apply_missed_policy(
        self, config: TaskConfig, run_times: list[datetime], missed: list[MissedFire]
    ) -> list[datetime]:
        """Split due fires into those to run and those to record as missed, by the task's catch-up rules."""
        verdict = split_due_fires(
            run_times, datetime.now(UTC), config.catch_up_window_seconds, str(config.options.get("catch_up"))
        )
        missed += [MissedFire(config.name, scheduled_at, reason) for scheduled_at, reason in verdict.missed]
        return verdict.run

    def _pickup_loop(self) -> None:
        """Start queued runs whenever woken (the control loop wakes it every poll), while this process leads."""
        interval = float(conf.get("POLL_INTERVAL"))
        try:
            while not self._stopping.is_set():
                if not self._pickup_wake.wait(5.0):
                    continue  # only to see `_stopping`; `stop()` wakes it too
                self._pickup_wake.clear()
                if self._stopping.is_set():
                    return
                if self._aps is None or time.monotonic() >= self._lease_valid_until:
                    continue
                faults.maybe_die("pickup")
                try:
                    with fresh_connections():
                        self._dispatch_pending()
                except (OperationalError, InterfaceError) as exc:
                    logger.warning(
                        "cannot pick up queued runs yet (%s)",
                        (str(exc).strip().splitlines() or [type(exc).__name__])[0],
                    )
                    self._stopping.wait(interval)
                except Exception:
                    logger.exception("picking up queued runs failed; going on")
                    self._stopping.wait(interval)
        finally:
            close_thread_connections()

    def _runs_ended(self, names: set[str]) -> None:
        """Called by the runner's finisher: a manual run waiting for one of these tasks can start."""
        with self._waiting_lock:
            self._ended_since_pickup |= names
            waiting = bool(self._waiting_tasks & names)
        if waiting:
            self._pickup_wake.set()

    def _dispatch_pending(self) -> None:
        """Start queued work that can start now: manual runs, due retries, fires kept by ``buffer_one``.

        "What can start" is one query (``records.ready_runs``): work that cannot start yet is left
        out in SQL, so it never holds back what can. A manual run whose task is busy waits (see
        ``TaskRunner.launch_pending``) until that run ends, or at most ``MANUAL_RUN_MAX_WAIT``.
        """
        with self._waiting_lock:
            self._ended_since_pickup = set()
        now = timezone.now()
        since = self._leading_since or now
        max_wait = timedelta(seconds=float(conf.get("MANUAL_RUN_MAX_WAIT")))
        # A run queued while no scheduler led has waited only since this one began to.
        expired_before = now - max_wait if since <= now - max_wait else None
        ready = ready_runs(
            now=now, limit=PENDING_BATCH, allow_overlap=self._allow_overlap, expired_before=expired_before
        )
        for record_id, name, trigger, created_at in ready:
            if name not in self.registry:
                self.runner.drop_pending(record_id, f"skipped: task {name!r} is not registered in this scheduler")
                continue
            try:
                if trigger == Trigger.SCHEDULED:
                    # Normally the run it waits for starts it; this covers a run whose process died.
                    self.runner.launch_buffered(name, self._configs.get(name))
                    continue
                waited = None
                if trigger == Trigger.MANUAL and expired_before is not None and created_at <= expired_before:
                    waited = (now - max(created_at, since)).total_seconds()
                # The configuration is read afresh, not taken from this scheduler's cache: a pickup
                # woken at once can come before the next reload, and a timeout or policy changed just
                # before the trigger must apply to the run.
                self.runner.launch_pending(record_id, None, waited=waited)
            except (OperationalError, InterfaceError):
                raise
            except Exception as exc:
                # Dropped, so that one record that cannot start does not hold up every other one.
                logger.exception("task %s: queued run %s could not be started", name, record_id)
                self.runner.drop_pending(record_id, f"skipped: could not be started: {type(exc).__name__}: {exc}")
        waiting = tasks_with_queued_manual_runs()
        with self._waiting_lock:
            self._waiting_tasks = waiting
            # A run of one of these ended while we looked: look again rather than wait for the poll.
            again = bool(waiting & self._ended_since_pickup)
        if again or len(ready) == PENDING_BATCH:
            self._pickup_wake.set()


def _allows_overlap(config: TaskConfig) -> bool:
    try:
        return config.overlap_policy == OverlapPolicy.ALLOW
    except ValueError:  # a stored value no rule allows: the task is left out anyway (config_error)
        return False


task_scheduler = TaskScheduler()
