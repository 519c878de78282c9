"""The ledger: the one module that changes runs' records and their tasks' state.

Every transition of a run is a method of ``Ledger``: record a burst of fires (claiming their tasks'
running slots), record fires that will not run, queue a manual run, start one, claim a queued run
or a buffered fire, skip a queued run, write outcomes with the retries failures earn, interrupt
runs that can no longer finish, prune old history. Whoever moves a run on (the runner, the scheduler, the services,
the reaper, ``prune_history``) asks the ledger. The statements of the hot path are hand-written SQL
in ``records.py``, which only this module calls for writing.

The ledger announces what it changed, after the commit: ``signals.run_started`` for a run that
started, ``signals.run_finished`` for a record that reached a final status, with a log line each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F, Value
from django.db.models.base import ModelState
from django.db.models.functions import Greatest
from django.db.models.signals import post_init, pre_init
from django.utils import timezone

from scheduler_app import conf, signals
from scheduler_app.db import write_transaction
from scheduler_app.models import FAILURE_STATUSES, SchedulerProcess, TaskConfig, TaskExecutionRecord, TaskState, Trigger
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
from scheduler_app.tasks.base import OPEN_STATUSES, OverlapPolicy, RetryBackoff, TaskStatus
from scheduler_app.validation import MAX_DURATION_SECONDS

__all__ = ["Fire", "Ledger", "MissedFire", "RunOutcome", "retry_delay"]

logger = logging.getLogger("scheduler_app.ledger")
# A run's outcome line keeps the logger name that log filters and the README's Logging section use.
outcome_logger = logging.getLogger("scheduler_app.runner")

BUSY_MESSAGE = "skipped: the previous run is still running and the task does not allow concurrent runs"
BUFFERED_MESSAGE = "buffered: runs right after the current run ends (overlap policy buffer_one)"
ALREADY_BUFFERED_MESSAGE = "skipped: the previous run is still running and one fire is already buffered"
WAITING_MESSAGE = "waiting for run #{blocking} to end (the task does not allow concurrent runs)"
WAITED_MESSAGE = (
    "skipped: waited {waited:.0f}s for run #{blocking} to end (the task does not allow concurrent runs; "
    "SCHEDULER['MANUAL_RUN_MAX_WAIT'] is {limit:g}s)"
)
DISABLED_RETRY_MESSAGE = "skipped: the task was disabled, so its retries stopped"


_RECORD_COLUMNS = [field.attname for field in TaskExecutionRecord._meta.concrete_fields]


def _init_heard() -> bool:
    """Whether a ``pre_init``/``post_init`` receiver listens for records (asked once per batch)."""
    return pre_init.has_listeners(TaskExecutionRecord) or post_init.has_listeners(TaskExecutionRecord)


def _record_from_values(values: dict[str, Any], init_heard: bool | None = None) -> TaskExecutionRecord:
    """A record from the value of each of its columns (by attname), as ``from_db`` builds it.

    Without Model.__init__ (a descriptor call per field: the largest share of a busy
    dispatcher's CPU) while no init signal is heard: the values by attname, and a state that
    says "read from the database". ``init_heard``: ``_init_heard()``, when the caller asked already.
    """
    if _init_heard() if init_heard is None else init_heard:
        # pragma: no mutate start (from_db reads the field names only for a row with some columns left out)
        return TaskExecutionRecord.from_db(None, _RECORD_COLUMNS, [values[name] for name in _RECORD_COLUMNS])
        # pragma: no mutate end
    record = TaskExecutionRecord.__new__(TaskExecutionRecord)
    record.__dict__.update(values)
    record._state = ModelState()
    record._state.adding = False
    return record


def clone_record(record: TaskExecutionRecord) -> TaskExecutionRecord:
    """A copy of ``record`` to change apart from it (what ``copy.copy`` gives, without pickling's path)."""
    clone = TaskExecutionRecord.__new__(TaskExecutionRecord)
    clone.__dict__.update(record.__dict__)
    state = ModelState.__new__(ModelState)
    state.__dict__.update(record._state.__dict__)
    state.__dict__.pop("peers", None)  # weak references to other instances: copy.copy leaves them out too
    state.fields_cache = dict(record._state.fields_cache)
    clone._state = state
    return clone


# What a fire's record holds unless said otherwise, as records.py writes it.
_FIRE_RECORD_DEFAULTS: dict[str, Any] = {
    "trigger": Trigger.SCHEDULED,
    "origin": "scheduler",
    "status": TaskStatus.RUNNING,
    "started_at": None,
    "finished_at": None,
    "duration_seconds": None,
    "message": "",
    "error": "",
    "data": {},
    "triggered_by_id": None,
    "attempt": 1,
    "retry_of_id": None,
    "jitter_seconds": None,
}


@dataclass
class Fire:
    """A scheduled fire to run: the task's configuration, the time it was meant for, its jitter."""

    config: TaskConfig
    scheduled_at: datetime
    jitter: float | None = None


def retry_delay(options: dict[str, Any], attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1 for the first retry), capped.

    Also capped at validation's MAX_DURATION_SECONDS, for values stored before that bound existed.
    """
    delay = float(options["retry_delay_seconds"])  # type: ignore[arg-type]
    if options["retry_backoff"] == RetryBackoff.EXPONENTIAL:
        delay *= 2 ** (attempt - 1)
    return min(delay, float(options["retry_max_delay_seconds"]), MAX_DURATION_SECONDS)  # type: ignore[arg-type]


@dataclass
class _PlannedRetry:
    """A failed run's next attempt, built before the transaction that writes it with the failure."""

    record: TaskExecutionRecord
    delay: float
    after: str  # "task <name>: run <id> <status>", for the log

    def log(self) -> None:
        logger.info("%s; retry %s in %.1fs", self.after, self.record.pk, self.delay)


def _earned(planned: Sequence[_PlannedRetry | None], written: Sequence[bool]) -> list[_PlannedRetry]:
    """The planned retries of the runs whose outcomes were written (a run ended meanwhile earns none)."""
    return [retry for retry, changed in zip(planned, written, strict=True) if retry is not None and changed]


class Ledger:
    """Writes the life of runs: each method is one transition, in one short transaction.

    ``process`` and ``worker_label`` name who runs what this ledger starts (the records' ``worker``
    and ``worker_label``), so that a dead process's runs can be found and reaped.
    """

    def __init__(
        self, registry: TaskRegistry | None = None, process: SchedulerProcess | None = None, worker_label: str = ""
    ) -> None:
        self.registry = registry or task_registry
        self.process = process
        self.worker_label = worker_label

    # -- reading -------------------------------------------------------------------------------

    def config(self, name: str) -> TaskConfig:
        """The task's configuration row, created from the code's defaults if it is not there yet."""
        config = TaskConfig.objects.filter(name=name).first()
        if config is None:
            sync_task_rows(self.registry)
            config = TaskConfig.objects.get(name=name)
        return config

    @staticmethod
    def buffered_record_id(name: str) -> int | None:
        """The record of the fire that ``buffer_one`` keeps for the task, if any."""
        return TaskState.objects.filter(task_id=name).values_list("buffered_record_id", flat=True).first()

    # -- fires ---------------------------------------------------------------------------------

    def record_fires(self, fires: Sequence[Fire]) -> list[TaskExecutionRecord | None]:
        """Record scheduled fires and claim their tasks' slots: one transaction for all of them.

        Returns each fire's record (``running``; ``skipped`` when its task is busy; ``pending`` when
        kept by ``buffer_one``), or None when another process recorded that fire already.
        """
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
        claims: dict[int, tuple[int, bool]] = {}
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
                            claims[i] = result[fires[i].config.name]
        # Built after the commit: the write lock is held for the SQL only.
        init_heard = _init_heard()
        for i, (record_id, claimed) in claims.items():
            records[i] = self._scheduled_record(fires[i], record_id, claimed, now, init_heard)
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
        started_heard = signals.run_started.has_listeners(Ledger)
        for i, (fire, record) in enumerate(zip(fires, records, strict=True)):  # pragma: no mutate (strict only asserts)
            if record is None:
                logger.info("fire of %s at %s already recorded by another process", fire.config.name, fire.scheduled_at)
            elif policies[i] != OverlapPolicy.BUFFER_ONE:
                self._announce(record, started_heard)
        return records

    def record_missed(self, fires: Sequence[MissedFire]) -> list[TaskExecutionRecord | None]:
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

    def _fire_record(
        self,
        record_id: int,
        task_name: str,
        scheduled_at: datetime,
        now: datetime,
        init_heard: bool | None = None,
        **fields: Any,
    ) -> TaskExecutionRecord:
        """A scheduled fire's record as ``records.py`` wrote it, as a model instance (not read back).

        Built the way Django builds rows it read (``from_db``: a third of the keyword constructor's
        cost), since every fire of a burst needs one.
        """
        values = {
            **_FIRE_RECORD_DEFAULTS,
            "id": record_id,
            "task_id": task_name,
            "scheduled_at": scheduled_at,
            "created_at": now,
            "worker_id": self.process.pk if self.process is not None else None,
            "worker_label": self.worker_label,
            **fields,
        }
        record = _record_from_values(values, init_heard)
        if self.process is not None:
            # What assigning ``record.worker`` does once worker_id is set, without its descriptor.
            record._state.fields_cache["worker"] = self.process
        return record

    def _scheduled_record(
        self, fire: Fire, record_id: int, claimed: bool, now: datetime, init_heard: bool
    ) -> TaskExecutionRecord:
        fields: dict[str, Any] = {"status": TaskStatus.RUNNING, "started_at": now, "jitter_seconds": fire.jitter}
        if not claimed:
            fields.update(status=TaskStatus.SKIPPED, finished_at=now, duration_seconds=0.0, message=BUSY_MESSAGE)
        return self._fire_record(record_id, fire.config.name, fire.scheduled_at, now, init_heard, **fields)

    # -- manual runs and queued work -----------------------------------------------------------

    def queue_manual(self, name: str, *, user: Any = None, origin: str) -> TaskExecutionRecord:
        """Queue a manual run as ``pending``, for the active scheduler to start."""
        return TaskExecutionRecord.objects.create(
            task_id=name,
            trigger=Trigger.MANUAL,
            status=TaskStatus.PENDING,
            # A user is None or has is_authenticated: getattr's default is never read.
            triggered_by=user if getattr(user, "is_authenticated", False) else None,  # pragma: no mutate
            origin=origin,
        )

    def start_manual(self, config: TaskConfig, *, user: Any = None, origin: str = "command") -> TaskExecutionRecord:
        """Record a manual run that starts at once here (``running``, or ``skipped`` if its task is busy)."""
        record = self._begin(config, trigger=Trigger.MANUAL, user=user, origin=origin)
        assert record is not None
        return record

    def claim_queued(
        self, record_id: int, config: TaskConfig | None = None, *, waited: float | None = None
    ) -> tuple[TaskConfig, TaskExecutionRecord] | None:
        """Claim a queued manual run or retry; None if another process claimed it or it was dropped.

        The record comes back ``running`` when it starts. A manual run whose task is busy (and does
        not allow overlap) stays ``pending``: it waits for the current run to end. ``waited``: seconds
        it has waited already, once past ``MANUAL_RUN_MAX_WAIT``; then a busy task makes it ``skipped``.
        """
        # pragma: no mutate start (only() saves reading columns, deferred ones load on use)
        record = TaskExecutionRecord.objects.filter(pk=record_id).only("task_id", "trigger").first()
        # pragma: no mutate end
        if record is None:
            return None
        config = config or self.config(record.task_id)
        if record.trigger == Trigger.RETRY and not config.enabled:
            self.skip_queued(record_id, DISABLED_RETRY_MESSAGE)
            return None
        claimed = self._begin(config, trigger=record.trigger, pending_id=record_id, waited=waited)
        return None if claimed is None else (config, claimed)

    def claim_buffered(self, config: TaskConfig) -> TaskExecutionRecord | None:
        """Start the fire that ``buffer_one`` kept, if the task is free now."""
        state = TaskState.objects.filter(task_id=config.name)
        with write_transaction():
            record_id = state.values_list("buffered_record_id", flat=True).first()
            if record_id is None:
                return None
            if not state.filter(running_count=0, buffered_record_id=record_id).update(
                running_count=1, buffered_record_id=None
            ):
                return None
            if not self._start_here(record_id, TaskStatus.PENDING):
                # The kept record is gone (pruned): give the slot back.
                # pragma: no mutate start (set to 1 just above, in this transaction: any decrement floors at 0)
                state.update(running_count=Greatest(F("running_count") - 1, Value(0)))
                # pragma: no mutate end
                return None
            record = TaskExecutionRecord.objects.get(pk=record_id)
        self._announce(record)
        return record

    def _start_here(self, record_id: int, waiting: TaskStatus) -> bool:
        """A record still in status ``waiting`` starts now, here: ``running`` under this ledger's
        process and label, its message cleared. False when it is no longer ``waiting``."""
        return bool(
            TaskExecutionRecord.objects.filter(pk=record_id, status=waiting).update(
                status=TaskStatus.RUNNING,
                started_at=timezone.now(),
                worker=self.process,
                worker_label=self.worker_label,
                message="",
            )
        )

    def skip_queued(self, record_id: int, message: str) -> bool:
        """Settle a queued run that will not run as ``skipped``, with ``message``; False if it was not queued."""
        now = timezone.now()
        dropped = TaskExecutionRecord.objects.filter(pk=record_id, status=TaskStatus.PENDING).update(
            status=TaskStatus.SKIPPED, started_at=now, finished_at=now, duration_seconds=0.0, message=message
        )
        if dropped:
            self._send_finished(TaskExecutionRecord.objects.get(pk=record_id))
        return bool(dropped)

    # -- runs handed to a backend's workers (scheduler_app/executors) ---------------------------

    def hand_off(self, record_id: int, backend: str) -> bool:
        """A run claimed here goes to ``backend``'s workers: ``running`` -> ``queued``, its slot still held.

        False when the record is not ``running`` here any more (someone decided the run was dead, or a
        worker runs it): nothing to hand.
        """
        mine = {"worker": self.process, "worker_label": self.worker_label}
        return bool(
            TaskExecutionRecord.objects.filter(pk=record_id, status=TaskStatus.RUNNING, **mine).update(
                status=TaskStatus.QUEUED, worker=None, worker_label="", message=f"queued on backend {backend!r}"
            )
        )

    def claim_handed_off(self, record_id: int) -> tuple[TaskConfig, TaskExecutionRecord] | None:
        """A worker takes a ``queued`` run: ``running``, under this ledger's process and label.

        One UPDATE conditioned on ``queued``: of two deliveries of one run, one claims it, the other
        gets None (as does a run that was settled meanwhile, e.g. expired in the queue).
        """
        if not self._start_here(record_id, TaskStatus.QUEUED):
            return None
        record = TaskExecutionRecord.objects.get(pk=record_id)
        config = self.config(record.task_id)
        self._announce(record)
        return config, record

    def expire_queued(self, max_wait: float) -> int:
        """Runs handed to a backend that no worker took within ``max_wait`` seconds end ``missed``; how many.

        Their tasks' slots are freed. A worker that gets such a run later finds it settled and runs nothing.
        """
        now = timezone.now()
        max_wait = min(max_wait, MAX_DURATION_SECONDS)  # a huge setting must not overflow the date
        cutoff = now - timedelta(seconds=max_wait)
        stale = list(TaskExecutionRecord.objects.filter(status=TaskStatus.QUEUED, started_at__lt=cutoff))
        expired = 0
        for record in stale:
            # pragma: no mutate start (dead `else`: started_at__lt above never matches a record without started_at)
            queued_for = (now - record.started_at).total_seconds() if record.started_at else max_wait
            # pragma: no mutate end
            outcome = RunOutcome(
                record_id=record.pk,
                task_name=record.task_id,
                status=TaskStatus.MISSED,
                started_at=record.started_at,
                finished_at=now,
                duration_seconds=0.0,
                message=f"missed: {record.message or 'queued'} for {queued_for:.0f}s and no worker took it "
                f"(SCHEDULER['FLEET_QUEUE_MAX_WAIT'] is {max_wait:g}s)",
                error="",
                data={},
            )
            with write_transaction():
                # Only a run still queued (a worker may claim it this instant): then the shape finish_runs writes.
                if not TaskExecutionRecord.objects.filter(pk=record.pk, status=TaskStatus.QUEUED).update(
                    status=TaskStatus.RUNNING
                ):
                    continue
                finish_runs([outcome])
            record.refresh_from_db()
            logger.warning("task %s: run %s %s", record.task_id, record.pk, record.message)
            self._send_finished(record)
            expired += 1
        return expired

    def fail_unstarted(
        self, record: TaskExecutionRecord, reason: str, message: str, config: TaskConfig | None = None
    ) -> bool:
        """A claimed run whose code could not be started here or handed to its backend ends ``failed``
        (its slot freed) instead of staying ``running`` until reaped, with the retry that ``config``
        gives a failure, in one transaction; False if it had ended."""
        now = timezone.now()
        outcome = RunOutcome(
            record_id=record.pk,
            task_name=record.task_id,
            status=TaskStatus.FAILED,
            started_at=record.started_at or now,
            finished_at=now,
            duration_seconds=0.0,
            message=message,
            error=reason,
            data={},
        )
        written = self._write_outcomes([(record, outcome)], [config], reopen_queued=True)[0]
        if written:
            record.refresh_from_db()
            self._log_outcome(record)
            self._send_finished(record)
        return written

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
        """Claim the task's slot and record the run (a new record, or the queued ``pending_id``), then announce it."""
        now = timezone.now()
        buffered = False  # pragma: no mutate (only tested for truth: None is as False)
        with write_transaction():
            exclusive = config.overlap_policy != OverlapPolicy.ALLOW
            claimed = config.name in claim_slots([config.name], exclusive=exclusive)
            if not claimed and pending_id is not None and trigger == Trigger.MANUAL:
                # An accepted manual run is not dropped for a collision: it waits for the current run.
                if waited is None:
                    # It says what it waits for (admin, API), once: the text changes only with the run.
                    waiting = WAITING_MESSAGE.format(blocking=self._running_run(config.name))
                    queued = TaskExecutionRecord.objects.filter(pk=pending_id, status=TaskStatus.PENDING)
                    # pragma: no mutate start (a write of the same text: leaving it out only saves the write)
                    queued.exclude(message=waiting).update(message=waiting)
                    # pragma: no mutate end
                    return queued.first()
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
            if pending_id is not None and trigger == Trigger.MANUAL:
                fields["message"] = ""  # no longer "waiting for run #N"
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
                    # pragma: no mutate start (a user is None or has is_authenticated: the default is never read)
                    triggered_by=user if getattr(user, "is_authenticated", False) else None,
                    # pragma: no mutate end
                    origin=origin,
                    **fields,
                )
            if buffered:
                kept = TaskState.objects.filter(task_id=config.name, buffered_record_id__isnull=True).update(
                    buffered_record_id=record.pk
                )
                if not kept:
                    buffered = False  # pragma: no mutate (only tested for truth: None is as False)
                    record.status, record.started_at, record.finished_at = TaskStatus.SKIPPED, now, now
                    record.duration_seconds, record.message = 0.0, ALREADY_BUFFERED_MESSAGE
                    # pragma: no mutate start (created above in this transaction: its other fields are as stored)
                    record.save(update_fields=["status", "started_at", "finished_at", "duration_seconds", "message"])
                    # pragma: no mutate end
        if buffered:
            logger.info("task %s: fire at %s buffered behind the current run", config.name, scheduled_at)
        else:
            self._announce(record)
        return record

    @staticmethod
    def _running_run(name: str) -> str:
        """The id of the task's current run (for a message), or "?" when none is recorded."""
        running = TaskExecutionRecord.objects.filter(status=TaskStatus.RUNNING, task_id=name)
        # pragma: no mutate start (values_list(flat=True) without a field is the pk too)
        return str(running.order_by("-id").values_list("pk", flat=True).first() or "?")
        # pragma: no mutate end

    # -- outcomes ------------------------------------------------------------------------------

    def finish(
        self,
        runs: Sequence[tuple[TaskExecutionRecord, RunOutcome]],
        configs: Sequence[TaskConfig | None] | None = None,
    ) -> list[bool]:
        """Write how runs ended, and the retries they earn, in one transaction, then announce them;
        per run, whether it was written.

        ``configs``: each run's task configuration, which decides its retry (None: no retries). A
        failure and its retry are committed together: no reader sees the one without the other, and
        a crash between two commits cannot lose the retry. A record that is no longer ``running``
        (someone decided the run was dead) keeps that verdict: it is read back into ``record``, and
        its outcome and retry are dropped. A retry the database refuses for itself costs only that
        retry (``_write_outcomes``). Otherwise raises the database's error with nothing written; the
        caller decides whether to wait and try again.
        """
        written = self._write_outcomes(runs, configs or [None] * len(runs))
        for (record, outcome), changed in zip(runs, written, strict=True):  # pragma: no mutate (strict only asserts)
            if not changed:
                logger.warning("task %s run %s finished after it was marked interrupted", record.task_id, record.pk)
                record.refresh_from_db()
                continue
            record.status, record.started_at, record.finished_at = (
                outcome.status,
                outcome.started_at,
                outcome.finished_at,
            )
            record.duration_seconds, record.message = outcome.duration_seconds, outcome.message
            record.error, record.data = outcome.error, outcome.data
            self._log_outcome(record)
            self._send_finished(record)
        return written

    def _write_outcomes(
        self,
        runs: Sequence[tuple[TaskExecutionRecord, RunOutcome]],
        configs: Sequence[TaskConfig | None],
        reopen_queued: bool = False,
    ) -> list[bool]:
        """Commit outcomes with the retries they earn; per run, whether its outcome was written.

        ``reopen_queued``: turn records still ``queued`` back to ``running`` first, the one shape
        finish_runs writes outcomes (and frees slots) for. A retry the database refuses for itself (a
        reference gone while the run ran: the user who asked, a pruned first attempt) costs that
        retry alone: the outcomes are written again without retries, then each retry on its own.
        """
        planned = [
            self._planned_retry(config, record, outcome.status)
            for (record, outcome), config in zip(runs, configs, strict=True)
        ]
        try:
            written, retries = self._commit_outcomes(runs, planned, reopen_queued)
        except (OperationalError, InterfaceError):
            raise  # the database is away: the caller waits and tries again
        except DatabaseError:
            if not any(planned):
                raise
            logger.warning("the retries of %d run(s) were refused; writing the outcomes first", len(runs))
            written, _ = self._commit_outcomes(runs, [None] * len(runs), reopen_queued)
            retries = [retry for retry in _earned(planned, written) if self._commit_retry_alone(retry)]
        for retry in retries:
            retry.log()
        return written

    @staticmethod
    def _commit_outcomes(
        runs: Sequence[tuple[TaskExecutionRecord, RunOutcome]],
        planned: Sequence[_PlannedRetry | None],
        reopen_queued: bool,
    ) -> tuple[list[bool], list[_PlannedRetry]]:
        with write_transaction():
            if reopen_queued:
                TaskExecutionRecord.objects.filter(
                    pk__in=[record.pk for record, _ in runs], status=TaskStatus.QUEUED
                ).update(status=TaskStatus.RUNNING)
            written = finish_runs([outcome for _, outcome in runs])
            retries = _earned(planned, written)
            if retries:
                TaskExecutionRecord.objects.bulk_create([retry.record for retry in retries])
        return written, retries

    @staticmethod
    def _commit_retry_alone(retry: _PlannedRetry) -> bool:
        retry.record.pk = None  # the refused batch may have numbered it
        retry.record._state.adding = True
        try:
            with write_transaction():
                retry.record.save(force_insert=True)
        except DatabaseError:
            logger.exception("%s; its retry could not be queued", retry.after)
            return False
        return True

    @staticmethod
    def _planned_retry(config: TaskConfig | None, record: TaskExecutionRecord, status: str) -> _PlannedRetry | None:
        """The attempt after ``record`` ended ``status``, not saved yet, if one is due: its own record,
        linked to the first attempt, due after the backoff.

        A value that cannot be read (stored before its bound existed) costs the retry, logged, and
        never the outcome it would be written with.
        """
        if config is None or status not in FAILURE_STATUSES:
            return None
        try:
            options = config.options
            if record.attempt > int(options["max_retries"] or 0) or not config.enabled:  # type: ignore[arg-type]
                return None
            delay = retry_delay(options, record.attempt)
            retry = TaskExecutionRecord(
                task_id=record.task_id,
                trigger=Trigger.RETRY,
                status=TaskStatus.PENDING,
                scheduled_at=timezone.now() + timedelta(seconds=delay),
                attempt=record.attempt + 1,
                retry_of_id=record.retry_of_id or record.pk,
                triggered_by_id=record.triggered_by_id,
                origin="retry",
                message=f"retry {record.attempt} of {options['max_retries']} after run {record.pk} {status}",
            )
            return _PlannedRetry(retry, delay, f"task {record.task_id}: run {record.pk} {status}")
        except Exception:
            logger.exception("task %s: run %s %s; its retry could not be planned", record.task_id, record.pk, status)
            return None

    def interrupt(self, records: Sequence[TaskExecutionRecord], reason: str) -> int:
        """Mark runs that can no longer finish (their process died or stopped) as ``interrupted``."""
        if not records:
            return 0
        now = timezone.now()
        outcomes = [
            RunOutcome(
                record_id=record.pk,
                task_name=record.task_id,
                status=TaskStatus.INTERRUPTED,
                started_at=record.started_at,
                finished_at=now,
                duration_seconds=(now - record.started_at).total_seconds() if record.started_at else None,
                message="interrupted",
                error=reason,
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

    @staticmethod
    def prune(before: datetime, batch_size: int) -> int:
        """Delete finished records created before ``before``, ``batch_size`` rows per transaction."""
        old = TaskExecutionRecord.objects.filter(created_at__lt=before).exclude(status__in=OPEN_STATUSES)
        deleted = 0
        # Small batches keep each write transaction short, so the scheduler never waits long.
        while ids := list(old.values_list("pk", flat=True)[:batch_size]):  # pragma: no mutate (no field: the pk)
            deleted += TaskExecutionRecord.objects.filter(pk__in=ids).delete()[0]
        return deleted

    # -- announcing ----------------------------------------------------------------------------

    def _announce(self, record: TaskExecutionRecord, started_heard: bool | None = None) -> None:
        """After the commit: a claimed run has started; a skipped one has ended.

        ``started_heard``: whether ``run_started`` has receivers, when the caller (a burst) asked once.
        """
        if record.status == TaskStatus.RUNNING:
            # Asked first: a burst announces every fire before its runs start, and nobody may listen.
            if signals.run_started.has_listeners(Ledger) if started_heard is None else started_heard:
                try:
                    signals.run_started.send(sender=Ledger, record=record, task=self.registry.get(record.task_id))
                except Exception:
                    # After the commit: a receiver's fault must not keep the run (or a burst's other
                    # runs) from starting.
                    logger.exception("a run_started receiver failed for record %s", record.pk)
        elif record.status == TaskStatus.SKIPPED:
            logger.info("task %s: %s", record.task_id, record.message)
            self._send_finished(record)

    @staticmethod
    def _log_outcome(record: TaskExecutionRecord) -> None:
        status = record.status
        log = outcome_logger.info if status in (TaskStatus.SUCCESS, TaskStatus.SKIPPED) else outcome_logger.warning
        # The run's fields as `extra`, as log_context() would give them (it costs more, per run).
        log(
            "task %s run %s %s in %.3fs%s",
            record.task_id,
            record.pk,
            status,
            record.duration_seconds,
            f": {record.message}" if record.message else "",
            extra={
                "task": record.task_id,
                "run_id": record.pk,
                "trigger": record.trigger,
                "duration": record.duration_seconds,
            },
        )

    @staticmethod
    def _send_finished(record: TaskExecutionRecord) -> None:
        try:
            signals.run_finished.send(sender=Ledger, record=record)
        except Exception:
            logger.exception("a run_finished receiver failed for record %s", record.pk)
