"""Dispatch: from fires and queued runs to the runner, in two long-lived threads of the leader.

The *dispatcher* thread takes every fire APScheduler handed over so far (``queue_fires``), applies
the task's missed-run policy (``catch_up.py``) and jitter (``DelayedFires``, one heap and thread for
every delayed fire), and gives the rest to ``TaskRunner.launch_fires`` in chunks that grow through a
burst (``claim_chunks``). A fire whose record cannot be written (database unreachable) is not run; it
waits in a backlog and is recorded ``missed`` once the database answers (``record_unrecorded``, called
by the control loop).

The *pickup* thread starts queued runs (manual runs, due retries, fires kept by ``buffer_one``):
woken by the control loop's poll, by a notification that a run was queued (``notify.py``), and when
a run that a queued manual run waits for ends. ``wake()`` (at a stop) ends both threads at once.
Neither thread writes a run record: the runner does.
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

from django.db import InterfaceError, OperationalError
from django.utils import timezone

from scheduler_app import conf, faults
from scheduler_app.catch_up import split_due_fires
from scheduler_app.db import close_thread_connections, fresh_connections
from scheduler_app.job_sync import JobSync
from scheduler_app.models import TaskConfig, Trigger
from scheduler_app.notify import PendingWatcher
from scheduler_app.records import ready_runs, tasks_with_queued_manual_runs
from scheduler_app.registry import TaskRegistry
from scheduler_app.runner import Fire, MissedFire, TaskRunner

# The scheduler's lines keep the one logger name they had before the scheduler was split.
logger = logging.getLogger("scheduler_app.scheduler")

# Queued runs started per look; a full batch is followed by another look at once.
PENDING_BATCH = 100
# Fires claimed and started by a burst's first transaction: the first runs of a burst start while the
# rest are claimed, instead of all waiting for the whole burst's claim ...
CLAIM_CHUNK = 50
# ... and the later transactions of a burst grow to this many: per fire, a burst claimed in chunks of
# 50 took a quarter more CPU than in chunks of 200 (benches.fire_cpu), and aligned 1,000-task bursts
# were later for it (BENCHMARKS.md, session 6).
CLAIM_CHUNK_MAX = 200
# The control loop's tick waits until the dispatcher has been quiet this long: fires spread over a
# fraction of a second leave it idle for moments between them, and a tick that took such a moment ran
# in the middle of the burst (BENCHMARKS.md: "quiet, not idle"). The finisher does not wait for quiet:
# the outcomes it holds keep their tasks' slots taken, and with fires all over the second it would hold
# them for its whole limit, until an interval task's next fire found its own finished run still busy.
CLAIMS_QUIET_SECONDS = 0.01


def claim_chunks(count: int) -> list[int]:
    """Sizes of the transactions that claim ``count`` fires: ``CLAIM_CHUNK`` first, so that a burst's
    first runs start soon, then twice as many each time up to ``CLAIM_CHUNK_MAX``."""
    sizes: list[int] = []
    size = CLAIM_CHUNK
    while count > 0:
        sizes.append(min(size, count))
        count -= sizes[-1]
        size = min(2 * size, CLAIM_CHUNK_MAX)
    return sizes


class DelayedFires:
    """One thread that hands jittered fires to the pool at their time, instead of a sleeping worker
    per fire (many tasks share a minute: that is what jitter is for)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, datetime, Callable[..., object], tuple[object, ...]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self.thread: threading.Thread | None = None
        self._closed = False

    def call_later(
        self, delay: float, name: str, scheduled_at: datetime, fn: Callable[..., object], *args: object
    ) -> None:
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), name, scheduled_at, fn, args))
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="delayed-fires", daemon=True)
                self.thread.start()
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


class Dispatcher:
    """The fire queue and its dispatcher thread, the pickup thread of queued runs, and the backlog
    of fires that could not be recorded.

    ``stopping`` is the scheduler's stop flag; ``may_pick_up()`` says whether this process leads
    with a lease it can trust (queued runs are started only then).
    """

    def __init__(
        self,
        registry: TaskRegistry,
        runner: TaskRunner,
        jobs: JobSync,
        stopping: threading.Event,
        may_pick_up: Callable[[], bool],
    ) -> None:
        self.registry = registry
        self.runner = runner
        self.jobs = jobs
        self.stopping = stopping
        self.may_pick_up = may_pick_up
        # Fires handed over by APScheduler (task, fire times, jitter already applied), for the dispatcher.
        self._fires: deque[tuple[str, list[datetime], float | None]] = deque()
        self._fires_cond = threading.Condition()
        self._dispatcher: threading.Thread | None = None
        self._delayed = DelayedFires()
        # Since when the dispatcher is busy with one batch (health: a stuck batch is no progress).
        self.busy_since: float | None = None
        # When the dispatcher last finished a batch (monotonic; -inf: never).
        self.idle_since = float("-inf")
        # Fires whose record could not be written (database unreachable): recorded `missed` once
        # it answers again. (task, fire time, why), guarded by the lock.
        self._unrecorded: list[tuple[str, datetime, str]] = []
        self._unrecorded_lock = threading.Lock()
        # Queued runs (manual, retries, buffered fires) are started by the pickup thread, woken by
        # the control loop's poll, by a notification that a run was queued (PendingWatcher), and
        # when a run of a task with a queued manual run ends (it waits for that moment).
        self._pickup_wake = threading.Event()
        self._pickup: threading.Thread | None = None
        self._watcher: PendingWatcher | None = None
        # When this process began to lead (a run queued while no scheduler led waits from then).
        self.leading_since: datetime | None = None
        self._waiting_lock = threading.Lock()
        self._waiting_tasks: set[str] = set()
        self._ended_since_pickup: set[str] = set()

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the dispatcher, the pickup thread and the watcher of queued runs."""
        self._delayed = DelayedFires()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="fire-dispatcher", daemon=True)
        self._dispatcher.start()
        self.runner.on_runs_ended = self._runs_ended
        self.runner.claims_waiting = self.claims_waiting
        self._pickup_wake.clear()
        self._pickup = threading.Thread(target=self._pickup_loop, name="run-pickup", daemon=True)
        self._pickup.start()
        self._watcher = PendingWatcher(self.wake_pickup, self._manual_runs_wait)
        self._watcher.start()

    def wake(self) -> None:
        """Make both threads look at ``stopping`` now (they sleep until there is work otherwise)."""
        self._pickup_wake.set()
        with self._fires_cond:
            self._fires_cond.notify_all()

    def stop(self) -> list[tuple[str, datetime]]:
        """End the threads (``stopping`` is set, APScheduler shut down); returns the jittered fires
        that were still waiting. Fires already handed over are recorded as missed (we are stopping)."""
        delayed = self._delayed.close()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self.wake()
        if self._pickup is not None:
            self._pickup.join(timeout=30)
            self._pickup = None
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=30)
            self._dispatcher = None
        # Handed over after the dispatcher saw the stop (APScheduler fires until it is shut down).
        with self._fires_cond:
            leftovers = list(self._fires)
            self._fires.clear()
        if leftovers:
            self.run_fires(leftovers)
        return delayed

    def threads(self) -> list[threading.Thread | None]:
        """The long-lived threads that should be running."""
        threads = [self._dispatcher, self._delayed.thread, self._pickup]
        if self._watcher is not None:
            threads.append(self._watcher.thread)
        return threads

    # -- fires ---------------------------------------------------------------------------------

    def claims_waiting(self) -> bool:
        """Whether fires are handed over and not claimed yet, or being claimed (the runner's
        finisher holds outcomes meanwhile: a burst's fires start first)."""
        return self.busy_since is not None or bool(self._fires)

    def claimed_lately(self) -> bool:
        """Whether claims are waiting or ended less than ``CLAIMS_QUIET_SECONDS`` ago (the control
        loop's tick and the job store's flush wait meanwhile)."""
        return self.claims_waiting() or time.monotonic() - self.idle_since < CLAIMS_QUIET_SECONDS

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
                    while not self._fires and not self.stopping.is_set():
                        self._fires_cond.wait()
                    if not self._fires:
                        return
                    batch = list(self._fires)
                    self._fires.clear()
                    # Busy before the lock is let go: no one may see neither fires waiting nor a claim.
                    self.busy_since = time.monotonic()
                faults.maybe_die("dispatcher")
                try:
                    self.run_fires(batch)
                except Exception:
                    names = sorted({name for name, _, _ in batch})
                    logger.exception("dispatching %d fire(s) of %s failed; going on", len(batch), ", ".join(names))
                finally:
                    self.idle_since = time.monotonic()
                    self.busy_since = None
        finally:
            close_thread_connections()

    def run_fires(self, batch: list[tuple[str, list[datetime], float | None]]) -> None:
        """Apply the missed-run policy to due fires, then claim, record and start the rest, in
        transactions of ``claim_chunks`` fires.

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
            start = 0
            for size in claim_chunks(len(fires)):
                try:
                    self.runner.launch_fires(fires[start : start + size])
                except (OperationalError, InterfaceError) as exc:
                    for fire in fires[start:]:
                        self._unrecordable(fire.config.name, [fire.scheduled_at], exc)
                    return
                start += size

    def _fires_to_run(
        self, name: str, run_times: list[datetime], jitter: float | None, missed: list[MissedFire]
    ) -> list[Fire]:
        """The fires of one task to start now; those that will not run go to ``missed``; jitter delays."""
        config = self.jobs.config(name)
        if config is None or not config.enabled or name not in self.registry:
            return []
        if self.stopping.is_set():
            missed += [MissedFire(name, scheduled_at, "the scheduler was stopping") for scheduled_at in run_times]
            return []
        if jitter is not None:
            # Back from its jitter delay: the missed-run policy was applied when it was due.
            return [Fire(config, scheduled_at, jitter) for scheduled_at in run_times]
        to_run = self._apply_missed_policy(config, run_times, missed)
        max_jitter = int(config.option("jitter_seconds") or 0)  # type: ignore[call-overload]
        if not max_jitter:
            return [Fire(config, scheduled_at) for scheduled_at in to_run]
        for scheduled_at in to_run:
            delay = random.uniform(0, max_jitter)
            self._delayed.call_later(delay, name, scheduled_at, self._queue_jittered, delay)
        return []

    def _queue_jittered(self, name: str, scheduled_at: datetime, delay: float) -> None:
        self.queue_fires(name, [scheduled_at], delay)

    @staticmethod
    def _apply_missed_policy(config: TaskConfig, run_times: list[datetime], missed: list[MissedFire]) -> list[datetime]:
        """Split due fires into those to run and those to record as missed, by the task's catch-up rules."""
        verdict = split_due_fires(
            run_times, datetime.now(UTC), config.catch_up_window_seconds, str(config.option("catch_up"))
        )
        missed += [MissedFire(config.name, scheduled_at, reason) for scheduled_at, reason in verdict.missed]
        return verdict.run

    # -- fires the database did not take -------------------------------------------------------

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

    def record_unrecorded(self) -> None:
        """Record as missed the fires whose record could not be written (the database answers again)."""
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

    # -- queued runs ---------------------------------------------------------------------------

    def wake_pickup(self) -> None:
        self._pickup_wake.set()

    def _pickup_loop(self) -> None:
        """Start queued runs whenever woken (the control loop wakes it every poll), while this process leads."""
        interval = float(conf.get("POLL_INTERVAL"))
        try:
            while not self.stopping.is_set():
                # No timeout: every poll, queued run and stop (``wake``) sets it.
                self._pickup_wake.wait()
                self._pickup_wake.clear()
                if self.stopping.is_set():
                    return
                if not self.may_pick_up():
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
                    self.stopping.wait(interval)
                except Exception:
                    logger.exception("picking up queued runs failed; going on")
                    self.stopping.wait(interval)
        finally:
            close_thread_connections()

    def _manual_runs_wait(self) -> bool:
        """Whether a queued manual run waits for a run of its task to end (as of the last pickup)."""
        with self._waiting_lock:
            return bool(self._waiting_tasks)

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
        since = self.leading_since or now
        max_wait = timedelta(seconds=float(conf.get("MANUAL_RUN_MAX_WAIT")))
        # A run queued while no scheduler led has waited only since this one began to.
        expired_before = now - max_wait if since <= now - max_wait else None
        ready = ready_runs(
            now=now, limit=PENDING_BATCH, allow_overlap=self.jobs.allow_overlap, expired_before=expired_before
        )
        for record_id, name, trigger, created_at in ready:
            if self.stopping.is_set():
                return  # each start is a transaction: a stop must not wait for a batch of them
            if name not in self.registry:
                self.runner.drop_pending(record_id, f"task {name!r} is not registered in this scheduler")
                continue
            try:
                if trigger == Trigger.SCHEDULED:
                    # Normally the run it waits for starts it; this covers a run whose process died.
                    self.runner.launch_buffered(name, self.jobs.config(name))
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
