"""``TaskRunner``: runs one task with the concurrency rule, a timeout and full bookkeeping.

The runner knows nothing of APScheduler: the scheduler process, the ``trigger_task`` command and
the tests all call the same methods. Each run costs two short transactions (begin, finish); no
transaction or lock is held while the task's code runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, InterfaceError, OperationalError, close_old_connections, transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from scheduler_app import conf, signals
from scheduler_app.db import close_thread_connections, fresh_connections, write_transaction
from scheduler_app.logging import log_context
from scheduler_app.models import (
    FAILURE_STATUSES,
    SchedulerProcess,
    TaskConfig,
    TaskExecutionRecord,
    TaskState,
    Trigger,
)
from scheduler_app.registry import TaskRegistry, task_registry
from scheduler_app.tasks.base import BaseTask, OverlapPolicy, RetryBackoff, TaskResult, TaskStatus

logger = logging.getLogger("scheduler_app.runner")

# How long past its timeout an async run may take to honour cancellation before we stop waiting.
CANCEL_GRACE_SECONDS = 1.0
BUSY_MESSAGE = "skipped: the previous run is still running and the task does not allow concurrent runs"
BUFFERED_MESSAGE = "buffered: runs right after the current run ends (overlap policy buffer_one)"
ALREADY_BUFFERED_MESSAGE = "skipped: the previous run is still running and one fire is already buffered"


def retry_delay(options: dict[str, Any], attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1 for the first retry), capped."""
    delay = float(options["retry_delay_seconds"])  # type: ignore[arg-type]
    if options["retry_backoff"] == RetryBackoff.EXPONENTIAL:
        delay *= 2 ** (attempt - 1)
    return min(delay, float(options["retry_max_delay_seconds"]))  # type: ignore[arg-type]


@dataclass
class Outcome:
    status: TaskStatus
    message: str = ""
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class TaskRunner:
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

    # -- public entry points -------------------------------------------------------------------

    def run_scheduled(
        self, name: str, scheduled_at: datetime, config: TaskConfig | None = None, jitter: float | None = None
    ) -> TaskExecutionRecord | None:
        """Run the fire of ``name`` meant for ``scheduled_at``; None if another process already has it."""
        with fresh_connections():
            config = config or self._config(name)
            try:
                record = self._begin(
                    config, trigger=Trigger.SCHEDULED, scheduled_at=scheduled_at, origin="scheduler", jitter=jitter
                )
            except IntegrityError:
                logger.info("fire of %s at %s already recorded by another process", name, scheduled_at)
                return None
            return self._complete(config, record)

    def run_now(self, name: str, *, user: Any = None, origin: str = "command") -> TaskExecutionRecord:
        """Run ``name`` at once in this process (a manual run), under the same rules as a fire."""
        with fresh_connections():
            self.registry.get(name)
            config = self._config(name)
            record = self._begin(config, trigger=Trigger.MANUAL, user=user, origin=origin)
            return self._complete(config, record)

    def run_pending(self, record_id: int, config: TaskConfig | None = None) -> TaskExecutionRecord | None:
        """Claim and run a manual run or a retry queued as ``pending``; None if another process claimed it."""
        with fresh_connections():
            record = TaskExecutionRecord.objects.filter(pk=record_id).only("task_id", "trigger").first()
            if record is None:
                return None
            config = config or self._config(record.task_id)
            if record.trigger == Trigger.RETRY and not config.enabled:
                self._drop_pending(record_id, "skipped: the task was disabled, so its retries stopped")
                return None
            record = self._begin(config, trigger=record.trigger, pending_id=record_id)
            if record is None:
                return None
            return self._complete(config, record)

    def run_buffered(self, name: str, config: TaskConfig | None = None) -> TaskExecutionRecord | None:
        """Run the fire that overlap policy ``buffer_one`` kept, if the task is free now."""
        with fresh_connections():
            config = config or self._config(name)
            record = self._claim_buffered(config)
            return self._complete(config, record) if record is not None else None

    def record_missed(self, name: str, scheduled_at: datetime, reason: str) -> TaskExecutionRecord | None:
        """Record a fire that will not run (outside the grace window, or coalesced)."""
        now = timezone.now()
        try:
            with write_transaction():
                record = TaskExecutionRecord.objects.create(
                    task_id=name,
                    trigger=Trigger.SCHEDULED,
                    status=TaskStatus.MISSED,
                    scheduled_at=scheduled_at,
                    finished_at=now,
                    message=reason,
                    origin="scheduler",
                    worker=self.process,
                    worker_label=self.worker_label,
                )
        except IntegrityError:
            return None
        logger.warning("task %s: fire at %s missed: %s", name, scheduled_at.isoformat(), reason)
        self._send_finished(record)
        return record

    def interrupt(self, records: list[TaskExecutionRecord], reason: str) -> int:
        """Mark runs that can no longer finish (their process died or stopped) as ``interrupted``."""
        if not records:
            return 0
        now = timezone.now()
        done = 0
        for record in records:
            with write_transaction():
                changed = TaskExecutionRecord.objects.filter(pk=record.pk, status=TaskStatus.RUNNING).update(
                    status=TaskStatus.INTERRUPTED,
                    finished_at=now,
                    duration_seconds=(now - record.started_at).total_seconds() if record.started_at else None,
                    error=reason,
                    message="interrupted",
                )
                if changed:
                    TaskState.objects.filter(task_id=record.task_id).update(
                        running_count=Greatest(F("running_count") - 1, Value(0)),
                        run_count=F("run_count") + 1,
                        last_result=TaskStatus.INTERRUPTED,
                        last_finished_at=now,
                    )
                    done += 1
            if changed:
                record.refresh_from_db()
                self._send_finished(record)
        return done

    # -- seed helpers --------------------------------------------------------------------------

    def get_history(self, name: str, limit: int = 10) -> list[TaskExecutionRecord]:
        return list(TaskExecutionRecord.objects.filter(task_id=name).order_by("-id")[:limit])

    def get_state(self, name: str) -> TaskState:
        self.registry.get(name)
        return TaskState.objects.select_related("task").get(task_id=name)

    # -- internals -----------------------------------------------------------------------------

    def _config(self, name: str) -> TaskConfig:
        config = TaskConfig.objects.filter(name=name).first()
        if config is None:
            from scheduler_app.services import sync_task_rows

            sync_task_rows(self.registry)
            config = TaskConfig.objects.get(name=name)
        return config

    def timeout_for(self, config: TaskConfig) -> float:
        for value in (config.timeout_override, config.default_timeout_seconds, self.default_timeout):
            if value is not None:
                return float(value)
        return float(conf.get("DEFAULT_TIMEOUT"))

    def _claim(self, config: TaskConfig) -> bool:
        """Atomically take a running slot; the database, not this process, is the judge."""
        state = TaskState.objects.filter(task_id=config.name)
        if config.overlap_policy == OverlapPolicy.ALLOW:
            return state.update(running_count=F("running_count") + 1) == 1
        return state.filter(running_count=0).update(running_count=1) == 1

    def _begin(
        self,
        config: TaskConfig,
        *,
        trigger: Trigger,
        scheduled_at: datetime | None = None,
        pending_id: int | None = None,
        user: Any = None,
        origin: str = "",
        jitter: float | None = None,
    ) -> TaskExecutionRecord | None:
        now = timezone.now()
        buffered = False
        with write_transaction():
            claimed = self._claim(config)
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
                fields.update(finished_at=now, duration_seconds=0.0, message=BUSY_MESSAGE)
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
        elif claimed:
            signals.run_started.send(sender=type(self), record=record, task=self.registry.get(config.name))
        else:
            logger.info("task %s: %s", config.name, BUSY_MESSAGE)
            self._send_finished(record)
        return record

    def _complete(self, config: TaskConfig, record: TaskExecutionRecord) -> TaskExecutionRecord:
        if record.status != TaskStatus.RUNNING:
            return record
        record = self._execute(config, record)
        if config.overlap_policy == OverlapPolicy.BUFFER_ONE:
            # The fire kept while we ran goes now, in this thread; another may be kept meanwhile.
            while not self.cancel.is_set() and (buffered := self._claim_buffered(config)) is not None:
                self._execute(config, buffered)
        return record

    def _execute(self, config: TaskConfig, record: TaskExecutionRecord) -> TaskExecutionRecord:
        task = self.registry.get(config.name)
        timeout = self.timeout_for(config)
        # Every log line of this run, the task's own included, carries its task, run id and trigger.
        with log_context(task=config.name, run_id=record.pk, trigger=record.trigger):
            started = time.monotonic()
            outcome = execute(task, timeout, self.cancel)
            duration = time.monotonic() - started
            record = self._finish(record, outcome, duration)
            if record.status in FAILURE_STATUSES:
                self._schedule_retry(config, record)
        return record

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

    def _drop_pending(self, record_id: int, message: str) -> None:
        now = timezone.now()
        dropped = TaskExecutionRecord.objects.filter(pk=record_id, status=TaskStatus.PENDING).update(
            status=TaskStatus.SKIPPED, started_at=now, finished_at=now, duration_seconds=0.0, message=message
        )
        if dropped:
            self._send_finished(TaskExecutionRecord.objects.get(pk=record_id))

    def _finish(self, record: TaskExecutionRecord, outcome: Outcome, duration: float) -> TaskExecutionRecord:
        now = timezone.now()
        status = outcome.status
        state_changes: dict[str, Any] = {
            "running_count": Greatest(F("running_count") - 1, Value(0)),
            "run_count": F("run_count") + 1,
            "last_result": status,
            "last_run_at": record.started_at,
            "last_finished_at": now,
        }
        if status == TaskStatus.SUCCESS:
            state_changes.update(last_success_at=now, consecutive_failures=0)
        elif status in FAILURE_STATUSES:
            state_changes.update(fail_count=F("fail_count") + 1, consecutive_failures=F("consecutive_failures") + 1)
        record_changes = {
            "status": status,
            "finished_at": now,
            "duration_seconds": duration,
            "message": outcome.message,
            "error": outcome.error,
            "data": outcome.data,
        }
        delay = 0.5
        while True:
            try:
                with write_transaction():
                    changed = TaskExecutionRecord.objects.filter(pk=record.pk, status=TaskStatus.RUNNING).update(
                        **record_changes
                    )
                    if changed:
                        TaskState.objects.filter(task_id=record.task_id).update(**state_changes)
                break
            except (OperationalError, InterfaceError) as exc:
                # The run happened: unrecorded, it would stay `running` and keep the task's slot
                # taken while this process lives. Wait for the database (or for a stop).
                if self.cancel.is_set():
                    raise
                logger.warning(
                    "task %s run %s: cannot record its outcome yet (%s); retrying in %.1fs",
                    record.task_id,
                    record.pk,
                    str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__,
                    delay,
                )
                close_old_connections()
                self.cancel.wait(delay)
                delay = min(delay * 2, 5.0)
        if not changed:
            # Someone decided this run was dead (we missed heartbeats); their verdict stands.
            logger.warning("task %s run %s finished after it was marked interrupted", record.task_id, record.pk)
            record.refresh_from_db()
            return record
        for key, value in record_changes.items():
            setattr(record, key, value)
        log = logger.info if status in (TaskStatus.SUCCESS, TaskStatus.SKIPPED) else logger.warning
        log(
            "task %s run %s %s in %.3fs%s",
            record.task_id,
            record.pk,
            status,
            duration,
            f": {outcome.message}" if outcome.message else "",
            extra={"task": record.task_id, "run_id": record.pk, "trigger": record.trigger, "duration": duration},
        )
        self._send_finished(record)
        return record

    def _send_finished(self, record: TaskExecutionRecord) -> None:
        try:
            signals.run_finished.send(sender=type(self), record=record)
        except Exception:
            logger.exception("a run_finished receiver failed for record %s", record.pk)


def execute(task: BaseTask, timeout: float, cancel: threading.Event | None = None) -> Outcome:
    """Run ``task.run()`` in its own thread and turn whatever happens into an ``Outcome``.

    A thread of its own lets us stop waiting at the timeout even when the code ignores
    cancellation; an async ``run`` is also cancelled at the limit. The thread's own database
    connections are closed when it ends.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            result = task.run()
            if inspect.isawaitable(result):
                awaitable = result

                async def bounded() -> Any:
                    return await asyncio.wait_for(awaitable, timeout)

                # async_to_sync keeps thread-sensitive ORM calls of the task in this thread.
                result = async_to_sync(bounded)()
            box["result"] = result
        except TimeoutError:
            box["timeout"] = True
        except BaseException as exc:
            box["error"] = exc
            box["traceback"] = traceback.format_exc()
        finally:
            close_thread_connections()

    finished = threading.Event()

    def guarded() -> None:
        try:
            target()
        finally:
            finished.set()

    # The caller's context (log_context) follows the run into its thread.
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(guarded,), name=f"task:{task.name}", daemon=True
    )
    thread.start()
    limit = timeout + CANCEL_GRACE_SECONDS if inspect.iscoroutinefunction(task.run) else timeout
    deadline = time.monotonic() + limit
    while not finished.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if cancel is not None and cancel.is_set():
            return Outcome(
                TaskStatus.INTERRUPTED,
                message="interrupted",
                error="the scheduler stopped before the run finished",
            )
        finished.wait(min(remaining, 0.1))
    if not finished.is_set() or box.get("timeout"):
        return Outcome(
            TaskStatus.TIMEOUT,
            message=f"timed out after {timeout:g}s",
            error=f"TimeoutError: task {task.name!r} did not finish within {timeout:g} seconds",
        )
    if "error" in box:
        exc = box["error"]
        return Outcome(TaskStatus.FAILED, message=f"raised {type(exc).__name__}: {exc}", error=box["traceback"])
    return outcome_from_result(task, box.get("result"))


def outcome_from_result(task: BaseTask, result: Any) -> Outcome:
    if not isinstance(result, TaskResult):
        return Outcome(
            TaskStatus.FAILED,
            message="run() did not return a TaskResult",
            error=(
                f"TypeError: {type(task).__qualname__}.run() must return a TaskResult "
                f"(TaskResult.success/failed/skipped), got {type(result).__name__}: {result!r:.200}"
            ),
        )
    try:
        status = TaskStatus(result.status)
    except ValueError:
        return Outcome(TaskStatus.FAILED, error=f"ValueError: unknown TaskResult status {result.status!r}")
    if status not in (TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.SKIPPED):
        return Outcome(TaskStatus.FAILED, error=f"ValueError: a task cannot report status {status.value!r}")
    data = result.data if isinstance(result.data, dict) else {"value": result.data}
    try:
        data = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    except (TypeError, ValueError) as exc:
        return Outcome(
            TaskStatus.FAILED,
            message=result.message,
            error=f"TypeError: TaskResult data is not JSON serializable: {exc}",
        )
    return Outcome(status, message=str(result.message or ""), error=str(result.error or ""), data=data)
