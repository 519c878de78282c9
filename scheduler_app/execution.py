"""``WorkerPool``: the threads that run task code, a fixed number at once, each run bounded in time.

This module knows nothing of the database or of schedules: it turns "run this task's code within
this many seconds" into an ``Outcome``. Workers are long-lived threads, so starting a run costs a
queue hand-off instead of a new thread (a burst of hundreds of simultaneous fires starts within
milliseconds). A thread cannot be killed: a run that outlives its timeout is settled as ``timeout``
by the watchdog, its worker is abandoned to the hung code and replaced, so a hung task never
shrinks the pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import inspect
import itertools
import json
import logging
import math
import selectors
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any

from asgiref.sync import ThreadSensitiveContext, async_to_sync
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from scheduler_app import faults
from scheduler_app.abc import Executor, Outcome, Submission
from scheduler_app.db import close_thread_connections
from scheduler_app.tasks.base import BaseTask, TaskResult, TaskStatus

logger = logging.getLogger("scheduler_app.execution")

# How long past its timeout an async run may take to honour cancellation before we stop waiting.
CANCEL_GRACE_SECONDS = 1.0
# The watchdog looks again at least this often: a wait of any length (a huge timeout stored before
# timeouts were bounded) never reaches Condition.wait, which refuses waits beyond threading.TIMEOUT_MAX.
LONGEST_WATCHDOG_WAIT = 3600.0
# With no run left to watch, the watchdog still sleeps this long before it waits for a notification:
# a run whose deadline comes later does not wake it. Woken as soon as the deadlines ran out, it was
# woken by every run that began after the one before had ended (a context switch per run, a tenth
# of the runs' CPU when fires come one at a time; BENCHMARKS.md).
WATCHDOG_IDLE_SECONDS = 1.0
# The watchdog's deadlines of runs that ended leave the heap lazily; once they are this many and half
# of it, the heap is rebuilt without them (else a busy pool kept every run of the last timeout's
# length, and its objects, alive: 60,000 runs at 1,000 runs/s and a 60 s timeout).
COMPACT_DEADLINES_AFTER = 256


def interrupted_outcome(reason: str) -> Outcome:
    return Outcome(TaskStatus.INTERRUPTED, message="interrupted", error=reason)


def timeout_outcome(task_name: str, timeout: float) -> Outcome:
    return Outcome(
        TaskStatus.TIMEOUT,
        message=f"timed out after {timeout:g}s",
        error=f"TimeoutError: task {task_name!r} did not finish within {timeout:g} seconds",
    )


def thread_ended(thread: threading.Thread | None) -> bool:
    """True for a thread that was started and is gone (one being started is not: its ident is unset)."""
    return thread is not None and thread.ident is not None and not thread.is_alive()


# Whether a task's ``run`` is ``async def``, by its function: asked twice per run, and
# ``inspect.iscoroutinefunction`` is slow enough to show in a burst of no-op runs.
_ASYNC_RUN: dict[Callable[..., Any], bool] = {}


def runs_async(task: BaseTask) -> bool:
    """Whether ``task.run`` is a coroutine function."""
    run = task.run
    function = getattr(run, "__func__", None)
    if function is None:
        return inspect.iscoroutinefunction(run)
    known = _ASYNC_RUN.get(function)
    if known is None:
        known = _ASYNC_RUN[function] = inspect.iscoroutinefunction(run)
    return known


class Execution:
    """One run of a task's code: queued, then started by a worker, then settled exactly once.

    Whoever settles first wins: the worker with the code's outcome, the watchdog with ``timeout``,
    or a stopping scheduler with ``interrupted``. ``on_settled`` is called once, in the settling thread,
    before ``settled`` is set.
    """

    def __init__(
        self,
        task: BaseTask,
        timeout: float,
        on_settled: Callable[[Execution], None] | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        self.task = task
        self.timeout = timeout
        self.on_settled = on_settled
        # The starter's context (its log_context) follows the run into the worker thread.
        self.context = context if context is not None else contextvars.copy_context()
        self.started_at: datetime | None = None
        self.started_monotonic: float | None = None
        self.duration: float = 0.0
        self.outcome: Outcome | None = None
        self._lock = threading.Lock()
        # ``settled``'s event, made only when someone asks for it (most runs are never waited for,
        # and an Event per run was a measurable share of a burst); ``_handled``: on_settled is done.
        self._settled: threading.Event | None = None
        self._handled = False
        self._worker: _Worker | None = None

    @property
    def deadline_seconds(self) -> float:
        # An async run is cancelled by asyncio at its timeout; give it a moment to unwind.
        return self.timeout + CANCEL_GRACE_SECONDS if runs_async(self.task) else self.timeout

    def settle(self, outcome: Outcome) -> bool:
        """Record how the run ended; False when it had already been settled."""
        with self._lock:
            if self.outcome is not None:
                return False
            self.outcome = outcome
            if self.started_monotonic is not None:
                self.duration = time.monotonic() - self.started_monotonic
        # The handler first, so that whoever waits for ``settled`` finds its effects done.
        if self.on_settled is not None:
            try:
                self.on_settled(self)
            except Exception:
                logger.exception("handling the end of a run of %s failed", self.task.name)
        with self._lock:
            self._handled = True
            event = self._settled
        if event is not None:
            event.set()
        return True

    @property
    def settled(self) -> threading.Event:
        """Set once the run is settled and ``on_settled`` has returned."""
        with self._lock:
            if self._settled is None:
                self._settled = threading.Event()
                if self._handled:
                    self._settled.set()
            return self._settled

    def wait(self, cancel: threading.Event | None = None, reason: str = "") -> Outcome:
        """Block until settled; a set ``cancel`` settles the run as interrupted (for synchronous callers)."""
        settled = self.settled
        while not settled.wait(0.05 if cancel is not None else None):
            if cancel is not None and cancel.is_set():
                self.settle(interrupted_outcome(reason or "the run was cancelled"))
        assert self.outcome is not None
        return self.outcome


class _SensitiveExecutor(ThreadPoolExecutor):
    """One thread for the thread-sensitive calls (the ORM) of a worker's async runs; notes its use."""

    used = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        self.used = True
        return super().submit(fn, *args, **kwargs)


class _PollFreeSelector(selectors.DefaultSelector):
    """A selector that skips the loop's non-blocking polls while only the loop's own wake-up pipe is
    registered: nothing else could be ready, and ``call_soon_threadsafe`` queues its callback before
    it writes to the pipe, so the poll would find nothing to do.

    Each poll is a system call that gives up the GIL; a no-op ``async def run()`` made two per run,
    and getting the GIL back in a busy scheduler (a dispatcher, a finisher, 20 workers) waits for
    another thread's switch interval. A run whose code opened sockets is polled as usual.
    """

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0 and len(self.get_map()) <= 1:
            return []
        return super().select(timeout)


class AsyncRuntime:
    """A worker's own event loop for ``async def run()``, kept from run to run.

    ``async_to_sync`` starts a thread and an event loop for every call (~0.25 ms); a worker runs
    its async runs on one loop instead. Thread-sensitive calls of a run (``sync_to_async``, the
    async ORM) go to one companion thread of the worker, whose connections are closed after each
    run, as they would be with a thread per run.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.SelectorEventLoop(_PollFreeSelector())
        self.sensitive = _SensitiveExecutor(max_workers=1, thread_name_prefix=f"{name}-sync")

    def run(self, awaitable: Awaitable[Any], timeout: float) -> Any:
        async def bounded() -> Any:
            async with ThreadSensitiveContext(executor=self.sensitive):
                return await asyncio.wait_for(awaitable, timeout)

        try:
            return self.loop.run_until_complete(bounded())
        finally:
            self._cancel_leftovers()
            if self.sensitive.used:
                self.sensitive.submit(close_thread_connections).result()
                self.sensitive.used = False

    def _cancel_leftovers(self) -> None:
        """Tasks the run started and left behind end with it, as they did on a loop of its own."""
        leftovers = asyncio.all_tasks(self.loop)
        if not leftovers:
            return
        for task in leftovers:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))

    def close(self) -> None:
        self.loop.close()
        # Idle by now: a worker whose run left a thread-sensitive call hanging was abandoned instead.
        self.sensitive.shutdown(wait=True)


class _Worker:
    def __init__(self, pool: WorkerPool, number: int) -> None:
        self.pool = pool
        # Set by the watchdog when the code outlived its timeout: the thread ends when the code does.
        self.abandoned = False
        self.name = f"{pool.name}-{number}"
        self.runtime: AsyncRuntime | None = None
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _run(self) -> None:
        try:
            first = True
            while not self.abandoned and (execution := self.pool._next(first)) is not None:
                first = False
                try:
                    self._execute(execution)
                except Exception:
                    # Task code cannot get here (call_task turns all it does into an outcome); a
                    # fault of ours ends this run as failed, not the worker.
                    logger.exception("worker %s: running %s failed", self.name, execution.task.name)
                    execution.settle(
                        Outcome(TaskStatus.FAILED, message="the worker failed", error=traceback.format_exc())
                    )
        finally:
            close_thread_connections()
            if self.runtime is not None:
                self.runtime.close()

    def _execute(self, execution: Execution) -> None:
        with execution._lock:
            if execution.outcome is not None:
                return  # settled (interrupted) while it waited for a worker
            execution._worker = self
            execution.started_at = timezone.now()
            execution.started_monotonic = time.monotonic()
        self.pool._watch(execution)
        thread = threading.current_thread()
        idle_name, thread.name = thread.name, f"task:{execution.task.name}"
        try:
            if self.runtime is None and runs_async(execution.task):
                self.runtime = AsyncRuntime(self.name)
            outcome = execution.context.run(call_task, execution.task, execution.timeout, self.runtime)
        finally:
            thread.name = idle_name
            # Connections the code opened are closed with its run, as if it had had a thread of its
            # own: an idle worker holds no connection (PostgreSQL counts them).
            close_thread_connections()
        execution.settle(outcome)


class WorkerPool(Executor):
    """The in-process executor: ``size`` threads running task code; runs beyond that wait in order for a free worker."""

    def __init__(self, size: int, name: str = "task-worker") -> None:
        self.size = max(1, size)
        self.name = name
        self._queue: deque[Execution] = deque()
        self._cond = threading.Condition()
        self._workers: list[_Worker] = []
        self._idle = 0
        # Workers notified or started and not yet at the queue: at most one (``_wake_one``).
        self._waking = 0
        self._numbers = itertools.count(1)
        self._closed = False
        self._unsettled: set[Execution] = set()
        self._deadlines: list[tuple[float, int, Execution]] = []
        self._order = itertools.count()
        self._watch_cond = threading.Condition()
        # When the watchdog looks next (monotonic; inf: when notified): only an earlier deadline wakes it.
        self._watch_until = math.inf
        # Runs settled since the heap was last rebuilt (their deadlines may still be in it).
        self._ended_deadlines = 0
        self._watchdog: threading.Thread | None = None

    # -- public --------------------------------------------------------------------------------

    def start(self, task: BaseTask, timeout: float, on_settled: Callable[[Execution], None] | None = None) -> Execution:
        """Queue a run of ``task``; ``on_settled`` is called (in some thread) once it has ended."""
        return self.submit(Submission(0, task, timeout), on_settled)

    def submit(self, run: Submission, on_settled: Callable[[Execution], None] | None = None) -> Execution:
        return self.submit_many([(run, on_settled)])[0]

    def submit_many(self, runs: Sequence[tuple[Submission, Callable[[Execution], None] | None]]) -> list[Execution]:
        """Queue the runs in one hold of the pool's lock (a burst's chunk handed over run by run took
        the lock each time, against the fires still being claimed), and wake a worker (``_wake_one``)."""
        executions = [
            Execution(run.task, run.timeout, partial(self._settled, on_settled), run.context)
            for run, on_settled in runs
        ]
        with self._cond:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._unsettled.update(executions)
            self._queue.extend(executions)
            self._wake_one()
        return executions

    def _settled(self, on_settled: Callable[[Execution], None] | None, execution: Execution) -> None:
        with self._cond:
            self._unsettled.discard(execution)
        with self._watch_cond:
            self._ended_deadlines += 1
            if self._ended_deadlines >= max(COMPACT_DEADLINES_AFTER, len(self._deadlines) // 2):
                self._deadlines = [entry for entry in self._deadlines if entry[2].outcome is None]
                heapq.heapify(self._deadlines)
                self._ended_deadlines = 0
        if on_settled is not None:
            on_settled(execution)

    def backlog(self) -> int:
        """Runs waiting for a worker."""
        return len(self._queue)

    def in_flight(self) -> list[Execution]:
        """Runs queued or running, not settled yet."""
        with self._cond:
            return list(self._unsettled)

    def interrupt_all(self, reason: str) -> int:
        """Settle every run not ended yet as interrupted (a thread still in task code ends alone)."""
        return sum(execution.settle(interrupted_outcome(reason)) for execution in self.in_flight())

    def dead_threads(self) -> list[str]:
        """The watchdog's name if it died while the pool is open (workers replace themselves)."""
        watchdog = self._watchdog
        return [watchdog.name] if watchdog is not None and thread_ended(watchdog) and not self._closed else []

    def close(self, wait: float = 0.0) -> None:
        """Let idle workers and the watchdog end; a busy worker ends after its current run.

        ``wait``: seconds to wait for the workers' threads to end (those still in task code may not).
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            workers = list(self._workers)
        with self._watch_cond:
            self._watch_cond.notify_all()
        deadline = time.monotonic() + wait
        for worker in workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))

    # -- workers -------------------------------------------------------------------------------

    def _wake_one(self) -> None:
        """Wake an idle worker, or start one (up to the size), unless a worker is waking already.

        Caller holds ``_cond``. Workers wake in a chain: the one woken takes a run and, if more
        wait, wakes the next. Queued runs still find every worker they need (a link costs one
        thread wake-up), but a burst of short runs is taken by the few workers already awake,
        instead of waking a thread per run that all wait for the GIL with the fires still being
        claimed (BENCHMARKS.md, session 7).
        """
        if self._waking:
            return
        if self._idle:
            self._waking += 1
            self._cond.notify()
        elif len(self._workers) < self.size:
            self._spawn()

    def _spawn(self) -> None:
        # Caller holds ``_cond``: a new thread counts as waking until it first looks at the queue.
        worker = _Worker(self, next(self._numbers))
        self._workers.append(worker)
        self._waking += 1
        worker.thread.start()

    def _next(self, first: bool = False) -> Execution | None:
        """The next queued run for a worker (None: the pool closed); ``first``: the worker's first look."""
        with self._cond:
            if first:
                self._waking -= 1
            while not self._queue:
                if self._closed:
                    return None
                self._idle += 1
                try:
                    self._cond.wait()
                finally:
                    self._idle -= 1
                # Woken by ``_wake_one`` (or by ``close``, which wakes all: hence the floor).
                self._waking = max(0, self._waking - 1)
            execution = self._queue.popleft()
            if self._queue:
                self._wake_one()
            return execution

    # -- timeouts ------------------------------------------------------------------------------

    def _watch(self, execution: Execution) -> None:
        deadline = time.monotonic() + execution.deadline_seconds
        with self._watch_cond:
            heapq.heappush(self._deadlines, (deadline, next(self._order), execution))
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch_loop, name=f"{self.name}-watchdog", daemon=True)
                self._watchdog.start()
            elif deadline < self._watch_until:
                self._watch_cond.notify()

    def _watch_loop(self) -> None:
        while (execution := self._next_expired()) is not None:
            faults.maybe_die("watchdog")
            try:
                self._expire(execution)
            except Exception:
                logger.exception("watchdog: giving up run of %s failed; going on", execution.task.name)

    def _next_expired(self) -> Execution | None:
        idle_look_done = False
        with self._watch_cond:
            while True:
                # Runs that ended on their own leave the front lazily.
                while self._deadlines and self._deadlines[0][2].outcome is not None:
                    heapq.heappop(self._deadlines)
                if self._closed and not self._deadlines:
                    return None
                now = time.monotonic()
                if self._deadlines and self._deadlines[0][0] <= now:
                    return heapq.heappop(self._deadlines)[2]
                wait: float | None
                if self._deadlines:
                    wait = min(self._deadlines[0][0] - now, LONGEST_WATCHDOG_WAIT)
                elif not idle_look_done:
                    wait, idle_look_done = WATCHDOG_IDLE_SECONDS, True
                else:
                    wait = None
                self._watch_until = math.inf if wait is None else now + wait
                if self._watch_cond.wait(wait):
                    idle_look_done = False  # woken by a new run: runs still come, look again in a while

    def _expire(self, execution: Execution) -> None:
        if not execution.settle(timeout_outcome(execution.task.name, execution.timeout)):
            return
        with self._cond:
            worker = execution._worker
            if worker is None or worker.abandoned or worker not in self._workers:
                return
            # The code still holds this thread: leave it there and put a fresh worker in its place.
            worker.abandoned = True
            self._workers.remove(worker)
            if self._queue and not self._closed:
                self._spawn()
        logger.warning(
            "task %s: its code is still running after its timeout of %gs; its thread is abandoned",
            execution.task.name,
            execution.timeout,
        )


def call_task(task: BaseTask, timeout: float, runtime: AsyncRuntime | None = None) -> Outcome:
    """Run ``task.run()`` here and turn whatever happens into an ``Outcome``.

    An async run goes on ``runtime``'s loop, or without one on a loop of its own (``async_to_sync``,
    which keeps the run's thread-sensitive ORM calls in this thread).
    """
    try:
        result = task.run()
        # A TaskResult is asked first: isawaitable's ABC check is a measurable share of a no-op run.
        if not isinstance(result, TaskResult) and inspect.isawaitable(result):
            if runtime is not None:
                result = runtime.run(result, timeout)
            else:
                awaitable = result

                async def bounded() -> Any:
                    return await asyncio.wait_for(awaitable, timeout)

                result = async_to_sync(bounded)()
    except TimeoutError:
        return timeout_outcome(task.name, timeout)
    except BaseException as exc:  # a task's failure of any kind is its outcome
        return Outcome(TaskStatus.FAILED, message=f"raised {type(exc).__name__}: {exc}", error=traceback.format_exc())
    return outcome_from_result(task, result)


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
    if data:
        try:
            data = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
        except (TypeError, ValueError) as exc:
            return Outcome(
                TaskStatus.FAILED,
                message=result.message,
                error=f"TypeError: TaskResult data is not JSON serializable: {exc}",
            )
    return Outcome(status, message=str(result.message or ""), error=str(result.error or ""), data=data)
