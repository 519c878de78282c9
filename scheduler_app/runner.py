"""``TaskRunner``: runs claimed runs on an executor and records how they ended, the same way for every caller.

A thin facade over three parts: the ledger (``ledger.py``) records and claims runs and writes their
outcomes; the executor (``abc.Executor``, the in-process ``WorkerPool`` by default) runs the code
under the task's timeout; a finisher thread here writes the outcomes of launched runs in batches
(waiting out a database outage), each failure with its retry. The runner knows nothing of
APScheduler: the scheduler process, the ``trigger_task`` command and the tests all call the same
methods. No transaction or lock is held while a task's code runs.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import InterfaceError, OperationalError, close_old_connections
from django.utils import timezone

from scheduler_app import conf, faults
from scheduler_app.abc import Executor, RunHandle, Submission
from scheduler_app.db import close_thread_connections, fresh_connections
from scheduler_app.execution import WorkerPool, thread_ended
from scheduler_app.executors import LOCAL, executor_alias
from scheduler_app.executors.fleet import FleetExecutor
from scheduler_app.ledger import (
    ALREADY_BUFFERED_MESSAGE,
    BUSY_MESSAGE,
    Fire,
    Ledger,
    MissedFire,
    RunOutcome,
    clone_record,
    retry_delay,
)
from scheduler_app.logging import log_context
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord, TaskState
from scheduler_app.notify import announce_pending
from scheduler_app.registry import TaskRegistry, task_registry
from scheduler_app.tasks.base import OverlapPolicy, TaskStatus

__all__ = ["ALREADY_BUFFERED_MESSAGE", "BUSY_MESSAGE", "Fire", "MissedFire", "TaskRunner", "retry_delay"]

logger = logging.getLogger("scheduler_app.runner")

# The finisher gathers outcomes this long after the first one before it writes them together.
# Each write takes the process's write lock, which the dispatcher needs to claim fires: written one
# by one (about a hundred transactions a second with 200 tasks spread over the second) they made
# fires wait for the lock; gathered, the finisher writes about twenty times a second (BENCHMARKS.md).
FINISH_BATCH_SECONDS = 0.05
# While fires are being claimed (``claims_waiting`` says so), the finisher holds the outcomes it
# gathered, for at most this long: claims and outcomes share one core's worth of Python, and in a
# burst of a thousand fires the outcomes' writes, log lines and signals made the later fires start
# late (BENCHMARKS.md). A run's outcome is written at most this much later; its start never waits.
# Well under the shortest interval (1 s): an outcome held a second kept its task's slot taken when
# the task's next fire came, and with fires all over the second (claims never stop) that fire was
# skipped as busy (13-88 of 5,000 fires of 1,000 tasks; BENCHMARKS.md, session 8).
FINISH_MAX_DEFER_SECONDS = 0.25
# How often a deferring finisher looks whether the claims are done.
FINISH_DEFER_POLL_SECONDS = 0.005


@dataclass
class _Run:
    """A claimed run whose code was handed to the executor."""

    config: TaskConfig
    record: TaskExecutionRecord
    execution: RunHandle


class TaskRunner:
    """Starts claimed runs on the executor and records their outcomes.

    ``run_now`` (the ``trigger_task`` command's) runs a manual run and waits for its end, in the
    caller's thread; the ``launch_*`` methods (the scheduler's) claim and record at once, hand the
    code to the executor and return, and the finisher thread records the outcomes in batches.
    """

    def __init__(
        self,
        registry: TaskRegistry | None = None,
        default_timeout: float | None = None,
        process: SchedulerProcess | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.registry = registry or task_registry
        self.default_timeout = default_timeout
        self.worker_label = f"{socket.gethostname()}:{os.getpid()}"
        self.ledger = Ledger(self.registry, process, self.worker_label)
        # Set by a stopping scheduler: runs still going stop waiting and record `interrupted`.
        self.cancel = threading.Event()
        self._executor = executor
        self._executor_lock = threading.Lock()
        # Backends that run tasks elsewhere (SCHEDULER["EXECUTOR"], a task's `executor`), by alias.
        self._backends: dict[str, Executor] = {}
        # Launched runs whose outcome is not written yet, and the finisher that writes them.
        self._settled: deque[_Run] = deque()
        self._unrecorded_runs = 0
        self._finish_cond = threading.Condition()
        self._finisher: threading.Thread | None = None
        self._finisher_stop = False  # pragma: no mutate (only tested for truth: None is as False)
        # Told the names of the tasks whose runs just ended (after their outcomes are written),
        # so that a manual run waiting for one of them starts right after it.
        self.on_runs_ended: Callable[[set[str]], None] | None = None
        # Says whether fires are waiting to be claimed or being claimed (the scheduler's dispatcher):
        # the finisher then holds its outcomes, up to FINISH_MAX_DEFER_SECONDS.
        self.claims_waiting: Callable[[], bool] | None = None

    @property
    def process(self) -> SchedulerProcess | None:
        """The process row that owns our runs (the ledger's), so that a dead process's runs can be found."""
        return self.ledger.process

    @process.setter
    def process(self, row: SchedulerProcess | None) -> None:
        self.ledger.process = row

    @property
    def executor(self) -> Executor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = WorkerPool(int(conf.get("MAX_WORKERS")))
            return self._executor

    # -- the command's entry point -------------------------------------------------------------

    def run_now(self, name: str, *, user: Any = None, origin: str = "command") -> TaskExecutionRecord:
        """Run ``name`` at once (a manual run), under the same rules as a fire; waits for the end.

        A fire that ``buffer_one`` kept behind this run goes next, in this thread.
        """
        with fresh_connections():
            self.registry.get(name)
            config = self.ledger.config(name)
            record = self.ledger.start_manual(config, user=user, origin=origin)
            if record.status != TaskStatus.RUNNING:
                return record
            record = self._execute(config, record)
            self._after_run_here(config)
            return record

    def run_handed_off(self, record_id: int) -> TaskExecutionRecord | None:
        """A worker's entry point: claim a run a scheduler handed to the backend, run it here, record it.

        None when the run is not ``queued`` any more (another delivery of it claimed it, or it was
        settled): it does not run twice. A fire that ``buffer_one`` kept behind it goes next, here.
        """
        with fresh_connections():
            claimed = self.ledger.claim_handed_off(record_id)
            if claimed is None:
                logger.info(
                    "run %s is not queued any more (claimed by another delivery, or settled): skipped", record_id
                )
                return None
            config, record = claimed
            record = self._execute(config, record)
            self._after_run_here(config)
            return record

    def _after_run_here(self, config: TaskConfig) -> None:
        """After a run in this thread: the fire that ``buffer_one`` kept behind it goes next, here;
        then the schedulers are told (a manual run queued meanwhile waits for this end, not a poll)."""
        if config.overlap_policy == OverlapPolicy.BUFFER_ONE:
            while not self.cancel.is_set() and (buffered := self.ledger.claim_buffered(config)) is not None:
                self._execute(config, buffered)
        announce_pending()

    def _execute(self, config: TaskConfig, record: TaskExecutionRecord) -> TaskExecutionRecord:
        execution = self._submit(config, record)
        execution.wait(self.cancel, "the scheduler stopped before the run finished")
        return self._record_outcomes([_Run(config, record, execution)])[0]

    # -- the scheduler's entry points ----------------------------------------------------------

    def launch_fires(self, fires: Sequence[Fire]) -> list[TaskExecutionRecord | None]:
        """Claim and record ``fires`` in one transaction and start the claimed runs; returns at once.

        Returns each fire's record (``running``, ``skipped`` or ``pending`` when buffered), or None
        when another process recorded that fire. A database error propagates with nothing started.
        """
        records = self.ledger.record_fires(fires)
        self._launch_all(
            [
                (fire.config, record)
                for fire, record in zip(fires, records, strict=True)  # pragma: no mutate (strict only asserts)
                if record is not None and record.status == TaskStatus.RUNNING
            ]
        )
        return records

    def launch_pending(self, record_id: int, config: TaskConfig | None = None, *, waited: float | None = None) -> bool:
        """Claim a queued manual run or retry and start it; False if it did not start.

        A manual run whose task is busy (and does not allow overlap) stays ``pending``: it waits
        for the current run to end. ``waited``: seconds it has waited already, once that is past
        ``MANUAL_RUN_MAX_WAIT``; then a busy task makes it ``skipped``, with that reason.
        """
        # pragma: no mutate start (config only saves a read)
        claimed = self.ledger.claim_queued(record_id, config, waited=waited)
        # pragma: no mutate end
        if claimed is None or claimed[1].status != TaskStatus.RUNNING:
            return False
        return self._launch(*claimed)

    def launch_buffered(self, name: str, config: TaskConfig | None = None) -> bool:
        """Start the fire that ``buffer_one`` kept, if the task is free now."""
        config = config or self.ledger.config(name)
        record = self.ledger.claim_buffered(config)
        if record is None:
            return False
        return self._launch(config, record)

    def record_missed_fires(self, fires: Sequence[MissedFire]) -> list[TaskExecutionRecord | None]:
        """Record fires that will not run, in one transaction; None for a fire that already has a record."""
        return self.ledger.record_missed(fires)

    def drop_pending(self, record_id: int, message: str) -> None:
        """Settle a queued run that will not run as ``skipped``, with ``message``."""
        self.ledger.skip_queued(record_id, message)

    def interrupt(self, records: list[TaskExecutionRecord], reason: str) -> int:
        """Mark runs that can no longer finish (their process died or stopped) as ``interrupted``."""
        return self.ledger.interrupt(records, reason)

    def in_flight(self) -> int:
        """Runs handed to the executor whose code has not ended."""
        return len(self._executor.in_flight()) if self._executor is not None else 0

    def dead_threads(self) -> list[str]:
        """The runner's long-lived threads (finisher, the executor's) that should run and do not."""
        finisher = self._finisher
        dead = [finisher.name] if finisher is not None and thread_ended(finisher) else []
        return dead + (self._executor.dead_threads() if self._executor is not None else [])

    def drain(self, timeout: float) -> bool:
        """Wait until every launched run has ended and its outcome is written; False at the timeout."""
        deadline = time.monotonic() + timeout
        with self._finish_cond:
            while self._unrecorded_runs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:  # pragma: no mutate (timing only: when the wait gives up)
                    return False
                self._finish_cond.wait(remaining)
        return True

    def interrupt_launched(self, reason: str) -> int:
        """Settle launched runs still going as interrupted (the finisher records them)."""
        return self._executor.interrupt_all(reason) if self._executor is not None else 0

    def close(self) -> None:
        """Stop the finisher (after it wrote what it holds) and the executor's idle workers."""
        with self._finish_cond:
            self._finisher_stop = True
            self._finish_cond.notify_all()
            finisher, self._finisher = self._finisher, None
        if finisher is not None:
            finisher.join(timeout=30)  # pragma: no mutate (timing only: a bound for a finisher that hangs)
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.close(wait=1.0)  # pragma: no mutate (timing only: how long idle workers get to end)
        # A closed runner may launch runs again (a scheduler leads anew): their finisher must run.
        self._finisher_stop = False  # pragma: no mutate (None is as false)

    # -- seed helpers --------------------------------------------------------------------------

    def get_history(self, name: str, limit: int = 10) -> list[TaskExecutionRecord]:
        return list(TaskExecutionRecord.objects.filter(task_id=name).order_by("-id")[:limit])

    def get_state(self, name: str) -> TaskState:
        self.registry.get(name)
        return TaskState.objects.select_related("task").get(task_id=name)

    # -- running -------------------------------------------------------------------------------

    def _submission(self, config: TaskConfig, record: TaskExecutionRecord) -> Submission:
        # Every log line of this run, the task's own included, carries its task, run id and trigger.
        with log_context(task=config.name, run_id=record.pk, trigger=record.trigger):
            context = contextvars.copy_context()
        task = self.registry.get(config.name)
        return Submission(record.pk, task, config.timeout_with_fallback(self.default_timeout), context)

    def _submit(
        self, config: TaskConfig, record: TaskExecutionRecord, on_settled: Callable[[RunHandle], None] | None = None
    ) -> RunHandle:
        return self.executor.submit(self._submission(config, record), on_settled)

    def _backend_for(self, config: TaskConfig) -> Executor | None:
        """The executor of a task whose runs execute elsewhere; None for a task that runs here."""
        alias = executor_alias(self.registry.get(config.name))
        if alias == LOCAL:
            return None
        with self._executor_lock:
            if alias not in self._backends:
                self._backends[alias] = FleetExecutor(alias)
            return self._backends[alias]

    def _hand_off(self, backend: Executor, config: TaskConfig, record: TaskExecutionRecord) -> None:
        """Give a claimed run to its backend; one that cannot be given ends ``failed`` (and may retry)."""
        alias = getattr(backend, "alias", "?")
        try:
            if not self.ledger.hand_off(record.pk, alias):
                return
            backend.submit(self._submission(config, record))
        except Exception as exc:
            logger.exception("task %s: run %s could not be handed to the backend %r", config.name, record.pk, alias)
            self._fail_unstarted(config, record, exc, "could not hand the run to its backend")
            return
        logger.info("task %s: run %s handed to the backend %r", config.name, record.pk, alias)

    def _launch(self, config: TaskConfig, record: TaskExecutionRecord) -> bool:
        """Hand a claimed run to its executor; False when its code could not be started here (it is
        then recorded ``failed`` with the reason and may retry: a claimed run never stays ``running``)."""
        return not self._launch_all([(config, record)])

    def _launch_all(self, runs: Sequence[tuple[TaskConfig, TaskExecutionRecord]]) -> list[TaskExecutionRecord]:
        """``_launch`` for a burst's chunk: the runs that execute here go to the pool at once (one
        lock, a wake-up per run). Returns the records of the runs whose code could not be started."""
        here: list[tuple[TaskConfig, TaskExecutionRecord, Submission]] = []
        unstartable: list[tuple[TaskConfig, TaskExecutionRecord, Exception]] = []
        for config, record in runs:
            # Each run on its own: one whose code cannot be found fails alone, not its chunk.
            try:
                backend = self._backend_for(config)
                if backend is None:
                    here.append((config, record, self._submission(config, record)))
                    continue
            except Exception as exc:
                unstartable.append((config, record, exc))
                continue
            self._hand_off(backend, config, record)
        if here:
            with self._finish_cond:
                self._unrecorded_runs += len(here)
                if self._finisher is None:
                    self._finisher = threading.Thread(target=self._finisher_loop, name="run-finisher", daemon=True)
                    self._finisher.start()
            # Not in the lock: a run may settle at once (pool closed) and queue itself for the finisher.
            try:
                self.executor.submit_many(
                    [(submission, partial(self._queue_finish, config, record)) for config, record, submission in here]
                )
            except Exception as exc:
                with self._finish_cond:
                    self._unrecorded_runs -= len(here)
                unstartable += [(config, record, exc) for config, record, _ in here]
        for config, record, exc in unstartable:
            self._fail_unstarted_logged(config, record, exc)
        return [record for _, record, _ in unstartable]

    def _fail_unstarted_logged(self, config: TaskConfig, record: TaskExecutionRecord, exc: Exception) -> None:
        logger.error("task %s: run %s could not be started", config.name, record.pk, exc_info=exc)
        self._fail_unstarted(config, record, exc, "its code could not be started")

    def _fail_unstarted(self, config: TaskConfig, record: TaskExecutionRecord, exc: Exception, message: str) -> None:
        """A claimed run that never started ends ``failed`` with ``exc`` as its error, and may retry."""
        failed = clone_record(record)  # the caller's record stays as it began, as for a run that ran
        self.ledger.fail_unstarted(failed, f"{type(exc).__name__}: {exc}", message, config)

    def _queue_finish(self, config: TaskConfig, record: TaskExecutionRecord, execution: RunHandle) -> None:
        with self._finish_cond:
            self._settled.append(_Run(config, record, execution))
            # The first outcome wakes the finisher; later ones join its batch without waking it
            # (in a burst, a wake-up per run took the GIL from the fires still being claimed).
            if len(self._settled) == 1:
                self._finish_cond.notify_all()

    def _finisher_loop(self) -> None:
        """Write the outcomes of launched runs, many per transaction, then what follows them."""
        try:
            self._finish_until_closed()
        finally:
            # A runner closed at a step-down or stop leaves no database session behind.
            close_thread_connections()

    def _finish_until_closed(self) -> None:
        while True:
            with self._finish_cond:
                while not self._settled and not self._finisher_stop:
                    self._finish_cond.wait()
                if not self._settled:
                    return
                # Outcomes that come within the window join this batch (a stop writes at once).
                first = time.monotonic()
                deadline = first + FINISH_BATCH_SECONDS
                # pragma: no mutate start (timing only: how long a batch gathers; batching itself is tested)
                while not self._finisher_stop and (remaining := deadline - time.monotonic()) > 0:
                    # pragma: no mutate end
                    self._finish_cond.wait(remaining)
                # Fires first: while they are claimed, the outcomes wait (and more join the batch).
                latest = first + FINISH_MAX_DEFER_SECONDS
                while not self._finisher_stop and time.monotonic() < latest and self._claims_waiting():
                    self._finish_cond.wait(FINISH_DEFER_POLL_SECONDS)
                # The finisher fills in its own copies: the launcher's records stay as the runs
                # began. Copied here, not at launch, where each copy delayed the rest of a burst.
                batch = [_Run(run.config, clone_record(run.record), run.execution) for run in self._settled]
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

    def _claims_waiting(self) -> bool:
        claims_waiting = self.claims_waiting
        if claims_waiting is None:
            return False
        try:
            return claims_waiting()
        except Exception:
            logger.exception("asking whether fires wait to be claimed failed; writing outcomes now")
            return False

    def _launch_buffered_after(self, runs: list[_Run]) -> None:
        """Start the fire that ``buffer_one`` kept behind each run that just ended."""
        for run in runs:
            if run.config.overlap_policy != OverlapPolicy.BUFFER_ONE or self.cancel.is_set():
                continue
            try:
                # pragma: no mutate start (the name is read only without a config; the config saves a read)
                self.launch_buffered(run.config.name, run.config)
                # pragma: no mutate end
            except Exception:
                # Not lost: a kept fire that could not be claimed stays pending for the scheduler's
                # next look; one claimed whose code could not start was recorded failed by _launch.
                logger.exception("task %s: could not start its buffered fire yet", run.config.name)

    # -- recording outcomes --------------------------------------------------------------------

    def _record_outcomes(self, runs: list[_Run]) -> list[TaskExecutionRecord]:
        """Write how ``runs`` ended and the retries of failures, together (waiting out a database outage)."""
        finished_at = timezone.now()
        pairs = []
        for run in runs:
            execution = run.execution
            outcome = execution.outcome
            assert outcome is not None
            pairs.append(
                (
                    run.record,
                    RunOutcome(
                        record_id=run.record.pk,
                        task_name=run.record.task_id,
                        status=outcome.status,
                        # When the code began (a run may have waited for a free worker after its claim).
                        started_at=execution.started_at or run.record.started_at,
                        finished_at=finished_at,
                        duration_seconds=execution.duration,
                        message=outcome.message,
                        error=outcome.error,
                        data=outcome.data,
                    ),
                )
            )
        self._finish(pairs, [run.config for run in runs])
        return [run.record for run in runs]

    def _finish(self, pairs: list[tuple[TaskExecutionRecord, RunOutcome]], configs: list[TaskConfig]) -> list[bool]:
        delay = 0.5
        while True:
            try:
                # Failures and their retries are written together (Ledger.finish).
                return self.ledger.finish(pairs, configs)
            except (OperationalError, InterfaceError) as exc:
                # The runs happened: unrecorded, they would stay `running` and keep their tasks'
                # slots taken while this process lives. Wait for the database (or for a stop).
                if self.cancel.is_set():
                    raise
                logger.warning(
                    "cannot record the outcome of %d run(s) yet (%s); retrying in %.1fs",
                    len(pairs),
                    str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__,
                    delay,
                )
                close_old_connections()
                self.cancel.wait(delay)
                delay = min(delay * 2, 5.0)
