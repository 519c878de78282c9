"""``TaskRunner``: runs tasks with the concurrency rule, a timeout and full bookkeeping.

The runner knows nothing of APScheduler: the scheduler process, the ``trigger_task`` command and
the tests all call the same methods. A run costs two short transactions (begin: claim + record;
finish: outcome + state), and simultaneous fires share them: a burst of fires is claimed and
recorded in one transaction (``records.py``), and the outcomes of the scheduler's runs are written
in batches by one finisher thread. No transaction or lock is held while a task's code runs.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, close_old_connections, transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from scheduler_app import conf, faults, signals
from scheduler_app.db import fresh_connections, write_transaction
from scheduler_app.execution import Execution, WorkerPool, interrupted_outcome, thread_ended
from scheduler_app.logging import log_context
from scheduler_app.models import (
    FAILURE_STATUSES,
    SchedulerProcess,
    TaskConfig,
    TaskExecutionRecord,
    TaskState,
    Trigger,
)
from scheduler_app.records import (
    MissedFire,
    NewRun,
    RunOutcome,
    begin_scheduled,
    claim_slots,
    finish_runs,
    record_missed,
)
from scheduler_app.registry import TaskRegistry, task_registry
from scheduler_app.task_rows import sync_task_rows
from scheduler_app.tasks.base import OverlapPolicy, RetryBackoff, TaskStatus
from scheduler_app.validation import MAX_DURATION_SECONDS

logger = logging.getLogger("scheduler_app.runner")

# A finisher defers writing outcomes while runs wait for a worker, at most this long: in a burst
# of simultaneous fires, starting every run on time matters more than recording outcomes at once.
FINISH_DEFER_SECONDS = 0.05
BUSY_MESSAGE = "skipped: the previous run is still running and the task does not allow concurrent runs"
BUFFERED_MESSAGE = "buffered: runs right after the current run ends (overlap policy buffer_one)"
ALREADY_BUFFERED_MESSAGE = "skipped: the previous run is still running and one fire is already buffered"
WAITED_MESSAGE = (
    "skipped: waited {waited:.0f}s for run #{blocking} to end (the task does not allow concurrent runs; "
    "SCHEDULER['MANUAL_RUN_MAX_WAIT'] is {limit:g}s)"
)


def retry_delay(options: dict[str, Any], attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1 for the first retry), capped.

    Also capped at validation's MAX_DURATION_SECONDS, for values stored before that bound existed.
    """
    delay = float(options["retry_delay_seconds"])  # type: ignore[arg-type]
    if options["retry_backoff"] == RetryBackoff.EXPONENTIAL:
        delay *= 2 ** (attempt - 1)
    return min(delay, float(options["retry_max_delay_seconds"]), MAX_DURATION_SECONDS)  # type: ignore[arg-type]


@dataclass
class Fire:
    """A scheduled fire to run: the task's configuration, the time it was meant for, its jitter."""

    config: TaskConfig
    scheduled_at: datetime
    jitter: float | None = None


@dataclass
class _Run:
    """A claimed run whose code was handed to the worker pool."""

    config: TaskConfig
    record: TaskExecutionRecord
    execution: Execution


class TaskRunner:
    """Claims, runs and records task runs, the same way for every caller.

    Two ways in: the synchronous methods (``run_scheduled``, ``run_now``, ``run_pending``,
    ``run_buffered``) return the finished record and do their bookkeeping in the caller's thread;
    the ``launch_*`` methods (the scheduler's) claim and record at once, hand the code to the worker
    pool and return, and a finisher thread records the outcomes in batches. Task code always runs
    on the worker pool, under the task's timeout.
    """

    def __init__(
        self,
        registry: TaskRegistry | None = None,
        default_timeout: float | None = None,
        process: SchedulerProcess | None = None,
    ) -> None:
        self.registry = registry or task_registry
        self.default_timeout = default_timeout
        # The process row that owns our runs, so that a dead process's runs can be found.
        self.process = process
        self.worker_label = f"{socket.gethostname()}:{os.getpid()}"
        # Set by a stopping scheduler: runs still going stop waiting and record `interrupted`.
        self.cancel = threading.Event()
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()
        # Launched runs whose outcome is not written yet, and the finisher that writes them.
        self._settled: deque[_Run] = deque()
        self._unrecorded_runs = 0
        self._finish_cond = threading.Condition()
        self._finisher: threading.Thread | None = None
        self._finisher_stop = False
        # Told the names of the tasks whose runs just ended (after their outcomes are written),
        # so that a manual run waiting for one of them starts right after it.
        self.on_runs_ended: Callable[[set[str]], None] | None = None

    @property
    def pool(self) -> WorkerPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = WorkerPool(int(conf.get("MAX_WORKERS")))
            return self._pool

    # -- synchronous entry points --------------------------------------------------------------

    def run_scheduled(
        self, name: str, scheduled_at: datetime, config: TaskConfig | None = None, jitter: float | None = None
    ) -> TaskExecutionRecord | None:
        """Run the fire of ``name`` meant for ``scheduled_at``; None if another process already has it."""
        with fresh_connections():
            config = config or self._config(name)
            record = self._begin_fires([Fire(config, scheduled_at, jitter)])[0]
            if record is None:
                return None
            return self._complete(config, record)

    def run_now(self, name: str, *, user: Any = None, origin: str = "command") -> TaskExecutionRecord:
        """Run ``name`` at once (a manual run), under the same rules as a fire; waits for the end."""
        with fresh_connections():
            self.registry.get(name)
            config = self._config(name)
            record = self._begin(config, trigger=Trigger.MANUAL, user=user, origin=origin)
            assert record is not None
            return self._complete(config, record)

    def run_pending(self, record_id: int, config: TaskConfig | None = None) -> TaskExecutionRecord | None:
        """Claim and run a manual run or a retry queued as ``pending``; None if another process claimed it."""
        with fresh_connections():
            claimed = self._begin_pending(record_id, config)  # pragma: no mutate (config only saves a read)
            return None if claimed is None else self._complete(*claimed)

    def run_buffered(self, name: str, config: TaskConfig | None = None) -> TaskExecutionRecord | None:
        """Run the fire that overlap policy ``buffer_one`` kept, if the task is free now."""
        with fresh_connections():
            config = config or self._config(name)
            record = self._claim_buffered(config)
            return self._complete(config, record) if record is not None else None

    # -- asynchronous entry points (the scheduler's) -------------------------------------------

    def launch_fires(self, fires: Sequence[Fire]) -> list[TaskExecutionRecord | None]:
        """Claim and record ``fires`` in one transaction and start the claimed runs; returns at once.

        Returns each fire's record (``running``, ``skipped`` or ``pending`` when buffered), or None
        when another process recorded that fire. A database error propagates with nothing started.
        """
        records = self._begin_fires(fires)
        for fire, record in zip(fires, records, strict=True):  # pragma: no mutate (strict only asserts)
            if record is not None and record.status == TaskStatus.RUNNING:
                self._launch(fire.config, record)
        return records

    def launch_pending(self, record_id: int, config: TaskConfig | None = None, *, waited: float | None = None) -> bool:
        """Claim a queued manual run or retry and start it; False if it did not start.

        A manual run whose task is busy (and does not allow overlap) stays ``pending``: it waits
        for the current run to end. ``waited``: seconds it has waited already, once that is past
        ``MANUAL_RUN_MAX_WAIT``; then a busy task makes it ``skipped``, with that reason.
        """
        claimed = self._begin_pending(record_id, config, waited)  # pragma: no mutate (config only saves a read)
        if claimed is None or claimed[1].status != TaskStatus.RUNNING:
            return False
        self._launch(*claimed)
        return True

    def launch_buffered(self, name: str, config: TaskConfig | None = None) -> bool:
        config = config or self._config(name)
        record = self._claim_buffered(config)
        if record is None:
            return False
        self._launch(config, record)
        return True

    def dead_threads(self) -> list[str]:
        """The runner's long-lived threads (finisher, watchdog) that should run and do not."""
        finisher = self._finisher
        dead = [finisher.name] if finisher is not None and thread_ended(finisher) else []
        return dead + (self._pool.dead_threads() if self._pool is not None else [])

    def in_flight(self) -> int:
        return len(self._pool.in_flight()) if self._pool is not None else 0

    def drain(self, timeout: float) -> bool:
        """Wait until every launched run has ended and its outcome is written; False at the timeout."""
        deadline = time.monotonic() + timeout
        with self._finish_cond:
            while self._unrecorded_runs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._finish_cond.wait(remaining)
        return True

    def interrupt_launched(self, reason: str) -> int:
        """Settle launched runs still going as interrupted (the finisher records them)."""
        return self._pool.interrupt_all(reason) if self._pool is not None else 0

    def close(self) -> None:
        """Stop the finisher (after it wrote what it holds) and the worker pool's idle threads."""
        with self._finish_cond:
            self._finisher_stop = True
            self._finish_cond.notify_all()
            finisher, self._finisher = self._finisher, None
        if finisher is not None:
            finisher.join(timeout=30)
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(wait=1.0)
        self._finisher_stop = False

    # -- records of runs that do not run -------------------------------------------------------

    def record_missed(self, name: str, scheduled_at: datetime, reason: str) -> TaskExecutionRecord | None:
        """Record a fire that will not run (outside the grace window, or coalesced)."""
        return self.record_missed_fires([MissedFire(name, scheduled_at, reason)])[0]

    def record_missed_fires(self, fires: Sequence[MissedFire]) -> list[TaskExecutionRecord | None]:
        """Record fires that will not run, in one transaction; None for a fire that already has a record."""
        if not fires:
            return []
        now = timezone.now()
        with write_transaction():
            ids = record_missed(fires, now=now, worker=self.process, worker_label=self.worker_label)
        records: list[TaskExecutionRecord | None] = []
        for fire, record_id in zip(fires, ids, strict=True):  # pragma: no mutate (strict only asserts)
            if record_id is None:
                records.append(None)
                continue
            record = self._fire_record(
                record_id,
                fire.task_name,
                fire.scheduled_at,
                now,
                status=TaskStatus.MISSED,
                finished_at=now,
                message=fire.reason,
            )
            logger.warning("task %s: fire at %s missed: %s", fire.task_name, fire.scheduled_at.isoformat(), fire.reason)
            self._send_finished(record)
            records.append(record)
        return records

    def interrupt(self, records: list[TaskExecutionRecord], reason: str) -> int:
        """Mark runs that can no longer finish (their process died or stopped) as ``interrupted``."""
        if not records:
            return 0
        now = timezone.now()
        outcome = interrupted_outcome(reason)
        outcomes = [
            RunOutcome(
                record_id=record.pk,
                task_name=record.task_id,
                status=outcome.status,
                started_at=record.started_at,
                finished_at=now,
                duration_seconds=(now - record.started_at).total_seconds() if record.started_at else None,
                message=outcome.message,
                error=outcome.error,
                data=record.data or {},
            )
            for record in records
        ]
        # Written only where the record is still `running`: a run that ended meanwhile keeps its outcome.
        with write_transaction():
            written = finish_runs(outcomes)
        for record, changed in zip(records, written, strict=True):  # pragma: no mutate (strict only asserts)
            if changed:
                record.refresh_from_db()
                self._send_finished(record)
        return sum(written)

    # -- seed helpers --------------------------------------------------------------------------

    def get_history(self, name: str, limit: int = 10) -> list[TaskExecutionRecord]:
        return list(TaskExecutionRecord.objects.filter(task_id=name).order_by("-id")[:limit])

    def get_state(self, name: str) -> TaskState:
        self.registry.get(name)
        return TaskState.objects.select_related("task").get(task_id=name)

    # -- claiming ------------------------------------------------------------------------------

    def _config(self, name: str) -> TaskConfig:
        config = TaskConfig.objects.filter(name=name).first()
        if config is None:
            sync_task_rows(self.registry)
            config = TaskConfig.objects.get(name=name)
        return config

    def timeout_for(self, config: TaskConfig) -> float:
        return config.timeout_with_fallback(self.default_timeout)

    def _claim(self, config: TaskConfig) -> bool:
        exclusive = config.overlap_policy != OverlapPolicy.ALLOW
        return config.name in claim_slots([config.name], exclusive=exclusive)

    def _begin_fires(self, fires: Sequence[Fire]) -> list[TaskExecutionRecord | None]:
        """Record scheduled fires and claim their slots: one transaction for all of them."""
        now = timezone.now()
        records: list[TaskExecutionRecord | None] = [None] * len(fires)
        # Read once per fire: each read merges the task's option layers.
        policies = [fire.config.overlap_policy for fire in fires]
        # buffer_one reads and writes the task's state row per fire: the ORM path, below. For the
        # rest, a statement claims each task once: a task's n-th fire in this batch goes in round n.
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for i, fire in enumerate(fires):
            if policies[i] != OverlapPolicy.BUFFER_ONE:
                n = seen[fire.config.name] = seen.get(fire.config.name, -1) + 1
                if n == len(rounds):
                    rounds.append([])
                rounds[n].append(i)
        if rounds:
            with write_transaction():
                for round_ in rounds:
                    result = begin_scheduled(
                        [
                            NewRun(
                                fires[i].config.name,
                                fires[i].scheduled_at,
                                policies[i] == OverlapPolicy.ALLOW,
                                fires[i].jitter,
                            )
                            for i in round_
                        ],
                        now=now,
                        worker=self.process,
                        worker_label=self.worker_label,
                        busy_message=BUSY_MESSAGE,
                    )
                    for i in round_:
                        if fires[i].config.name in result:
                            record_id, claimed = result[fires[i].config.name]
                            records[i] = self._scheduled_record(fires[i], record_id, claimed, now)
        for i, fire in enumerate(fires):
            if policies[i] != OverlapPolicy.BUFFER_ONE:
                continue
            try:
                # _begin announces the record itself (after its own commit).
                records[i] = self._begin(
                    fire.config, trigger=Trigger.SCHEDULED, scheduled_at=fire.scheduled_at, jitter=fire.jitter
                )
            except IntegrityError:
                records[i] = None
        for i, (fire, record) in enumerate(zip(fires, records, strict=True)):
            if record is None:
                logger.info("fire of %s at %s already recorded by another process", fire.config.name, fire.scheduled_at)
            elif policies[i] != OverlapPolicy.BUFFER_ONE:
                self._announce(fire.config, record)
        return records

    def _fire_record(
        self, record_id: int, task_name: str, scheduled_at: datetime, now: datetime, **fields: Any
    ) -> TaskExecutionRecord:
        """A scheduled fire's record as ``records.py`` wrote it, as a model instance (not read back)."""
        return TaskExecutionRecord(
            id=record_id,
            task_id=task_name,
            trigger=Trigger.SCHEDULED,
            scheduled_at=scheduled_at,
            created_at=now,
            origin="scheduler",
            worker=self.process,
            worker_label=self.worker_label,
            **fields,
        )

    def _scheduled_record(self, fire: Fire, record_id: int, claimed: bool, now: datetime) -> TaskExecutionRecord:
        fields: dict[str, Any] = {"status": TaskStatus.RUNNING, "started_at": now, "jitter_seconds": fire.jitter}
        if not claimed:
            fields.update(status=TaskStatus.SKIPPED, finished_at=now, duration_seconds=0.0, message=BUSY_MESSAGE)
        return self._fire_record(record_id, fire.config.name, fire.scheduled_at, now, **fields)

    def _announce(self, config: TaskConfig, record: TaskExecutionRecord) -> None:
        """After the commit: a claimed run has started; a skipped one has ended."""
        if record.status == TaskStatus.RUNNING:
            signals.run_started.send(sender=type(self), record=record, task=self.registry.get(config.name))
        elif record.status == TaskStatus.SKIPPED:
            logger.info("task %s: %s", config.name, record.message)
            self._send_finished(record)

    def _begin(
        self,
        config: TaskConfig,
        *,
        trigger: Trigger,
        scheduled_at: datetime | None = None,
        pending_id: int | None = None,
        user: Any = None,
        origin: str = "scheduler",
        jitter: float | None = None,
        waited: float | None = None,
    ) -> TaskExecutionRecord | None:
        now = timezone.now()
        buffered = False
        with write_transaction():
            claimed = self._claim(config)
            if not claimed and pending_id is not None and trigger == Trigger.MANUAL:
                # An accepted manual run is not dropped for a collision: it waits for the current run.
                if waited is None:
                    return TaskExecutionRecord.objects.filter(pk=pending_id, status=TaskStatus.PENDING).first()
                busy_message = WAITED_MESSAGE.format(
                    waited=waited, blocking=self._running_run(config.name), limit=float(conf.get("MANUAL_RUN_MAX_WAIT"))
                )
            else:
                busy_message = BUSY_MESSAGE
            status = TaskStatus.RUNNING if claimed else TaskStatus.SKIPPED
            fields: dict[str, Any] = {
                "status": status,
                "started_at": now,
                "worker": self.process,
                "worker_label": self.worker_label,
            }
            if jitter is not None:
                fields["jitter_seconds"] = jitter
            if not claimed:
                fields.update(finished_at=now, duration_seconds=0.0, message=busy_message)
                if trigger == Trigger.SCHEDULED and config.overlap_policy == OverlapPolicy.BUFFER_ONE:
                    fields.update(
                        status=TaskStatus.PENDING,
                        started_at=None,
                        finished_at=None,
                        duration_seconds=None,
                        message=BUFFERED_MESSAGE,
                    )
                    buffered = True
            if pending_id is not None:
                taken = TaskExecutionRecord.objects.filter(pk=pending_id, status=TaskStatus.PENDING).update(**fields)
                if not taken:
                    transaction.set_rollback(True)
                    return None
                record = TaskExecutionRecord.objects.get(pk=pending_id)
            else:
                record = TaskExecutionRecord.objects.create(
                    task_id=config.name,
                    trigger=trigger,
                    scheduled_at=scheduled_at,
                    triggered_by=user if getattr(user, "is_authenticated", False) else None,
                    origin=origin,
                    **fields,
                )
            if buffered:
                kept = TaskState.objects.filter(task_id=config.name, buffered_record_id__isnull=True).update(
                    buffered_record_id=record.pk
                )
                if not kept:
                    buffered = False
                    record.status, record.started_at, record.finished_at = TaskStatus.SKIPPED, now, now
                    record.duration_seconds, record.message = 0.0, ALREADY_BUFFERED_MESSAGE
                    record.save(update_fields=["status", "started_at", "finished_at", "duration_seconds", "message"])
        if buffered:
            logger.info("task %s: fire at %s buffered behind the current run", config.name, scheduled_at)
        else:
            self._announce(config, record)
        return record

    def _begin_pending(
        self, record_id: int, config: TaskConfig | None, waited: float | None = None
    ) -> tuple[TaskConfig, TaskExecutionRecord] | None:
        # pragma: no mutate start (only() saves reading columns, deferred ones load on use)
        record = TaskExecutionRecord.objects.filter(pk=record_id).only("task_id", "trigger").first()
        # pragma: no mutate end
        if record is None:
            return None
        config = config or self._config(record.task_id)
        if record.trigger == Trigger.RETRY and not config.enabled:
            self.drop_pending(record_id, "skipped: the task was disabled, so its retries stopped")
            return None
        claimed = self._begin(config, trigger=record.trigger, pending_id=record_id, waited=waited)
        return None if claimed is None else (config, claimed)

    @staticmethod
    def _running_run(name: str) -> str:
        """The id of the task's current run (for a message), or "?" when none is recorded."""
        running = TaskExecutionRecord.objects.filter(status=TaskStatus.RUNNING, task_id=name)
        return str(running.order_by("-id").values_list("pk", flat=True).first() or "?")

    def _claim_buffered(self, config: TaskConfig) -> TaskExecutionRecord | None:
        state = TaskState.objects.filter(task_id=config.name)
        with write_transaction():
            record_id = state.values_list("buffered_record_id", flat=True).first()
            if record_id is None:
                return None
            if not state.filter(running_count=0, buffered_record_id=record_id).update(
                running_count=1, buffered_record_id=None
            ):
                return None
            started = TaskExecutionRecord.objects.filter(pk=record_id, status=TaskStatus.PENDING).update(
                status=TaskStatus.RUNNING,
                started_at=timezone.now(),
                worker=self.process,
                worker_label=self.worker_label,
                message="",
            )
            if not started:
                # The kept record is gone (pruned): give the slot back.
                state.update(running_count=Greatest(F("running_count") - 1, Value(0)))
                return None
            record = TaskExecutionRecord.objects.get(pk=record_id)
        signals.run_started.send(sender=type(self), record=record, task=self.registry.get(config.name))
        return record

    def drop_pending(self, record_id: int, message: str) -> None:
        """Settle a queued run that will not run as ``skipped``, with ``message``."""
        now = timezone.now()
        dropped = TaskExecutionRecord.objects.filter(pk=record_id, status=TaskStatus.PENDING).update(
            status=TaskStatus.SKIPPED, started_at=now, finished_at=now, duration_seconds=0.0, message=message
        )
        if dropped:
            self._send_finished(TaskExecutionRecord.objects.get(pk=record_id))

    # -- running -------------------------------------------------------------------------------

    def _start(self, config: TaskConfig, record: TaskExecutionRecord, on_settled: Any = None) -> Execution:
        task = self.registry.get(config.name)
        # Every log line of this run, the task's own included, carries its task, run id and trigger.
        with log_context(task=config.name, run_id=record.pk, trigger=record.trigger):
            return self.pool.start(task, self.timeout_for(config), on_settled)

    def _complete(self, config: TaskConfig, record: TaskExecutionRecord) -> TaskExecutionRecord:
        """Run a claimed record's code and record its outcome, in this thread; then a buffered fire."""
        if record.status != TaskStatus.RUNNING:
            return record
        record = self._execute(config, record)
        if config.overlap_policy == OverlapPolicy.BUFFER_ONE:
            # The fire kept while we ran goes now, in this thread; another may be kept meanwhile.
            while not self.cancel.is_set() and (buffered := self._claim_buffered(config)) is not None:
                self._execute(config, buffered)
        return record

    def _execute(self, config: TaskConfig, record: TaskExecutionRecord) -> TaskExecutionRecord:
        execution = self._start(config, record)
        execution.wait(self.cancel, "the scheduler stopped before the run finished")
        return self._record_outcomes([_Run(config, record, execution)])[0]

    def _launch(self, config: TaskConfig, record: TaskExecutionRecord) -> None:
        with self._finish_cond:
            self._unrecorded_runs += 1
            if self._finisher is None:
                self._finisher = threading.Thread(target=self._finisher_loop, name="run-finisher", daemon=True)
                self._finisher.start()
        # The finisher fills in its own copy: the caller's record stays as the run began.
        finishing = copy.copy(record)
        # Not in the lock: a run may settle at once (pool closed) and queue itself for the finisher.
        try:
            self._start(config, record, lambda execution: self._queue_finish(config, finishing, execution))
        except Exception:
            with self._finish_cond:
                self._unrecorded_runs -= 1
            raise

    def _queue_finish(self, config: TaskConfig, record: TaskExecutionRecord, execution: Execution) -> None:
        with self._finish_cond:
            self._settled.append(_Run(config, record, execution))
            self._finish_cond.notify_all()

    def _finisher_loop(self) -> None:
        """Write the outcomes of launched runs, many per transaction, then what follows them."""
        while True:
            with self._finish_cond:
                while not self._settled and not self._finisher_stop:
                    self._finish_cond.wait()
                if not self._settled:
                    return
            # Runs waiting for a worker go first; their outcomes join this batch a moment later.
            deadline = time.monotonic() + FINISH_DEFER_SECONDS
            while self._pool is not None and self._pool.backlog() and time.monotonic() < deadline:
                time.sleep(0.001)
            with self._finish_cond:
                batch = list(self._settled)
                self._settled.clear()
            faults.maybe_die("finisher")
            try:
                with fresh_connections():
                    self._record_outcomes(batch)
                    self._launch_buffered_after(batch)
            except Exception:
                logger.exception(
                    "could not record the outcome of %d run(s); they stay `running` until reaped", len(batch)
                )
            finally:
                with self._finish_cond:
                    self._unrecorded_runs -= len(batch)
                    self._finish_cond.notify_all()
            if self.on_runs_ended is not None:
                try:
                    self.on_runs_ended({run.config.name for run in batch})
                except Exception:
                    logger.exception("telling the scheduler that %d run(s) ended failed", len(batch))

    def _launch_buffered_after(self, runs: list[_Run]) -> None:
        """Start the fire that ``buffer_one`` kept behind each run that just ended."""
        for run in runs:
            if run.config.overlap_policy != OverlapPolicy.BUFFER_ONE or self.cancel.is_set():
                continue
            try:
                self.launch_buffered(run.config.name, run.config)
            except Exception:
                # Not lost: the scheduler's next look for pending work starts it.
                logger.exception("task %s: could not start its buffered fire yet", run.config.name)

    # -- recording outcomes --------------------------------------------------------------------

    def _record_outcomes(self, runs: list[_Run]) -> list[TaskExecutionRecord]:
        """Write how ``runs`` ended in one transaction (waiting out a database outage), then tell."""
        now = timezone.now()
        outcomes = []
        for run in runs:
            execution = run.execution
            outcome = execution.outcome
            assert outcome is not None
            outcomes.append(
                RunOutcome(
                    record_id=run.record.pk,
                    task_name=run.record.task_id,
                    status=outcome.status,
                    # When the code began (a run may have waited for a free worker after its claim).
                    started_at=execution.started_at or run.record.started_at,
                    finished_at=now,
                    duration_seconds=execution.duration,
                    message=outcome.message,
                    error=outcome.error,
                    data=outcome.data,
                )
            )
        written = self._write_outcomes(outcomes)
        records = []
        for run, outcome, changed in zip(runs, outcomes, written, strict=True):
            record = run.record
            if not changed:
                # Someone decided this run was dead (we missed heartbeats); their verdict stands.
                logger.warning("task %s run %s finished after it was marked interrupted", record.task_id, record.pk)
                record.refresh_from_db()
                records.append(record)
                continue
            record.status, record.started_at, record.finished_at = outcome.status, outcome.started_at, now
            record.duration_seconds, record.message = outcome.duration_seconds, outcome.message
            record.error, record.data = outcome.error, outcome.data
            self._log_outcome(record)
            self._send_finished(record)
            if record.status in FAILURE_STATUSES:
                try:
                    self._schedule_retry(run.config, record)
                except Exception:
                    # The outcome is recorded; only the retry is lost, and the log says just that.
                    logger.exception(
                        "task %s: run %s %s; its retry could not be queued", record.task_id, record.pk, record.status
                    )
            records.append(record)
        return records

    def _write_outcomes(self, outcomes: list[RunOutcome]) -> list[bool]:
        delay = 0.5
        while True:
            try:
                with write_transaction():
                    return finish_runs(outcomes)
            except (OperationalError, InterfaceError) as exc:
                # The runs happened: unrecorded, they would stay `running` and keep their tasks'
                # slots taken while this process lives. Wait for the database (or for a stop).
                if self.cancel.is_set():
                    raise
                logger.warning(
                    "cannot record the outcome of %d run(s) yet (%s); retrying in %.1fs",
                    len(outcomes),
                    str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__,
                    delay,
                )
                close_old_connections()
                self.cancel.wait(delay)
                delay = min(delay * 2, 5.0)

    def _log_outcome(self, record: TaskExecutionRecord) -> None:
        status = record.status
        log = logger.info if status in (TaskStatus.SUCCESS, TaskStatus.SKIPPED) else logger.warning
        with log_context(task=record.task_id, run_id=record.pk, trigger=record.trigger):
            log(
                "task %s run %s %s in %.3fs%s",
                record.task_id,
                record.pk,
                status,
                record.duration_seconds,
                f": {record.message}" if record.message else "",
                extra={"duration": record.duration_seconds},
            )

    def _schedule_retry(self, config: TaskConfig, record: TaskExecutionRecord) -> TaskExecutionRecord | None:
        """Queue the next attempt of a failed run, as its own record linked to the first attempt."""
        options = config.options
        if record.attempt > int(options["max_retries"] or 0) or not config.enabled:  # type: ignore[arg-type]
            return None
        delay = retry_delay(options, record.attempt)
        retry = TaskExecutionRecord.objects.create(
            task_id=record.task_id,
            trigger=Trigger.RETRY,
            status=TaskStatus.PENDING,
            scheduled_at=timezone.now() + timedelta(seconds=delay),
            attempt=record.attempt + 1,
            retry_of_id=record.retry_of_id or record.pk,
            triggered_by_id=record.triggered_by_id,
            origin="retry",
            message=f"retry {record.attempt} of {options['max_retries']} after run {record.pk} {record.status}",
        )
        logger.info("task %s: run %s %s; retry %s in %.1fs", record.task_id, record.pk, record.status, retry.pk, delay)
        return retry

    def _send_finished(self, record: TaskExecutionRecord) -> None:
        try:
            signals.run_finished.send(sender=type(self), record=record)
        except Exception:
            logger.exception("a run_finished receiver failed for record %s", record.pk)
