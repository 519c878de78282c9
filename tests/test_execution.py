"""``WorkerPool``: task code on long-lived threads, a fixed number at once, each run bounded in time."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from asgiref.sync import sync_to_async

from scheduler_app.abc import Submission
from scheduler_app.execution import WorkerPool, call_task, runs_async
from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule, TaskStatus
from tests.processes import wait_for

SCHEDULE = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60)


class Quick(BaseTask):
    name = "quick"
    schedule = SCHEDULE

    def run(self) -> TaskResult:
        return TaskResult.success("quick", thread=threading.get_ident(), name=threading.current_thread().name)


class Gate(BaseTask):
    """Blocks until its event is set (or 30 s), and counts how many run at once."""

    name = "gate"
    schedule = SCHEDULE
    release = threading.Event()
    lock = threading.Lock()
    running = 0
    most = 0

    def run(self) -> TaskResult:
        with Gate.lock:
            Gate.running += 1
            Gate.most = max(Gate.most, Gate.running)
        try:
            Gate.release.wait(30)
        finally:
            with Gate.lock:
                Gate.running -= 1
        return TaskResult.success("released")


class Stuck(BaseTask):
    name = "stuck"
    schedule = SCHEDULE
    release = threading.Event()

    def run(self) -> TaskResult:
        Stuck.release.wait(30)
        return TaskResult.success("too late")


class AsyncSleeper(BaseTask):
    name = "async_sleeper"
    schedule = SCHEDULE

    async def run(self) -> TaskResult:
        await asyncio.sleep(30)
        return TaskResult.success("unreachable")


class AsyncBusyReader(BaseTask):
    """Keeps its loop busy (``sleep(0)``: only non-blocking polls) until a socket is readable, and
    uses the thread-sensitive executor (the async ORM's path) on the way."""

    name = "async_busy_reader"
    schedule = SCHEDULE

    async def run(self) -> TaskResult:
        loop = asyncio.get_running_loop()
        reader, writer = socket.socketpair()
        try:
            readable = asyncio.Event()
            loop.add_reader(reader.fileno(), readable.set)
            writer.send(b"x")
            spins = 0
            while not readable.is_set():
                spins += 1
                await asyncio.sleep(0)
            loop.remove_reader(reader.fileno())
            thread = await sync_to_async(threading.current_thread)()
            return TaskResult.success("read", spins=spins, sensitive=thread.name)
        finally:
            reader.close()
            writer.close()


@pytest.fixture
def pool():
    Gate.most = 0
    pool = WorkerPool(3, name="test-worker")
    yield pool
    Gate.release.set()
    Stuck.release.set()
    pool.close(wait=5)
    # Gate counts across tests (class attributes): a run left blocked here must not count in the next.
    wait_for(lambda: Gate.running == 0, timeout=5, message="the gated runs to end")


def test_runs_on_reused_threads_and_settles_once(pool: WorkerPool) -> None:
    ends: list[str] = []
    executions = [pool.start(Quick(), 5, lambda e: ends.append(e.outcome.status)) for _ in range(20)]
    outcomes = [execution.wait() for execution in executions]
    assert all(outcome.status == TaskStatus.SUCCESS for outcome in outcomes)
    assert ends == [TaskStatus.SUCCESS] * 20
    # At most three threads ran twenty runs, each named after its task while it ran.
    assert len({outcome.data["thread"] for outcome in outcomes}) <= 3
    assert {outcome.data["name"] for outcome in outcomes} == {"task:quick"}
    assert all(e.started_at is not None and e.duration >= 0 for e in executions)
    assert pool.in_flight() == []


def test_never_more_runs_at_once_than_workers(pool: WorkerPool) -> None:
    Gate.release.clear()
    Gate.most = 0
    executions = [pool.start(Gate(), 30) for _ in range(7)]
    wait_for(lambda: Gate.running == 3, timeout=5, message="three runs at once")
    assert pool.backlog() == 4
    assert all(e.started_at is None for e in executions[3:])
    Gate.release.set()
    for execution in executions:
        assert execution.wait().status == TaskStatus.SUCCESS
    assert Gate.most == 3


def _start_every_worker(pool: WorkerPool) -> None:
    """Leave the pool with all its workers started and idle.

    Three runs that end at once are not enough: a worker that ends its run before the one it woke has
    started takes the next run itself, and the pool stays at two threads (CI, under load). Runs that
    hold until all three run at once need three threads.
    """
    Gate.release.clear()
    warm_up = pool.submit_many([(Submission(n, Gate(), 30), None) for n in range(pool.size)])
    wait_for(lambda: Gate.running == pool.size, timeout=5, message="a run on every worker")
    Gate.release.set()
    assert all(execution.wait().status == TaskStatus.SUCCESS for execution in warm_up)
    wait_for(lambda: pool._idle == pool.size, timeout=5, message="every worker idle")


def test_a_chunk_submitted_at_once_runs_every_run_on_as_many_workers_as_it_needs(pool: WorkerPool) -> None:
    _start_every_worker(pool)
    Gate.release.clear()
    Gate.most = 0
    ends: list[int] = []
    executions = pool.submit_many(
        [(Submission(n, Gate(), 30), lambda e, n=n: ends.append(n)) for n in range(5)]
        + [(Submission(5, Quick(), 5), None)]
    )
    # A wake-up per run: the three idle workers all take one at once.
    wait_for(lambda: Gate.running == 3, timeout=5, message="three runs at once")
    assert pool.backlog() == 3 and len(pool.in_flight()) == 6
    Gate.release.set()
    outcomes = [execution.wait() for execution in executions]
    assert [outcome.status for outcome in outcomes] == [TaskStatus.SUCCESS] * 6
    wait_for(lambda: sorted(ends) == [0, 1, 2, 3, 4], timeout=5, message="each run's own on_settled")
    assert pool.in_flight() == []


def test_a_closed_pool_refuses_a_whole_chunk_and_queues_none_of_it(pool: WorkerPool) -> None:
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit_many([(Submission(n, Quick(), 5), None) for n in range(3)])
    assert pool.backlog() == 0 and pool.in_flight() == []


def test_a_hung_run_times_out_and_its_worker_is_replaced(pool: WorkerPool) -> None:
    Stuck.release.clear()
    hung = [pool.start(Stuck(), 0.3) for _ in range(3)]
    started = time.monotonic()
    for execution in hung:
        outcome = execution.wait()
        assert outcome.status == TaskStatus.TIMEOUT and "0.3" in outcome.message
    assert time.monotonic() - started < 3
    # All three workers are still stuck in the code, yet new runs start: fresh workers took over.
    assert pool.start(Quick(), 5).wait().status == TaskStatus.SUCCESS
    Stuck.release.set()
    # The abandoned threads' late results change nothing.
    assert all(execution.outcome.status == TaskStatus.TIMEOUT for execution in hung)


def test_async_run_is_cancelled_at_its_timeout(pool: WorkerPool) -> None:
    started = time.monotonic()
    outcome = pool.start(AsyncSleeper(), 0.3).wait()
    assert outcome.status == TaskStatus.TIMEOUT
    assert time.monotonic() - started < 2


def test_async_runs_see_their_sockets_while_their_loop_is_busy(pool: WorkerPool) -> None:
    # The worker's loop skips its non-blocking polls while nothing but its wake-up pipe is
    # registered; a run's own socket must still be polled, or this run spins until its timeout.
    for _ in range(3):
        outcome = pool.start(AsyncBusyReader(), 5).wait()
        assert outcome.status == TaskStatus.SUCCESS, outcome
        assert outcome.data["sensitive"].startswith("test-worker-") and outcome.data["sensitive"].endswith("-sync_0")
    assert pool.start(Quick(), 5).wait().status == TaskStatus.SUCCESS


def test_interrupt_all_settles_running_and_queued_runs(pool: WorkerPool) -> None:
    Gate.release.clear()
    executions = [pool.start(Gate(), 30) for _ in range(5)]
    wait_for(lambda: Gate.running == 3, timeout=5, message="three runs at once")
    assert pool.interrupt_all("stopping") == 5
    assert [e.outcome.status for e in executions] == [TaskStatus.INTERRUPTED] * 5
    assert all(e.outcome.error == "stopping" for e in executions)
    Gate.release.set()
    # A queued run that was interrupted never starts.
    wait_for(lambda: Gate.running == 0, timeout=5, message="released runs to end")
    assert all(e.started_at is None for e in executions[3:])


def test_wait_with_cancel_interrupts_a_synchronous_caller(pool: WorkerPool) -> None:
    Gate.release.clear()
    cancel = threading.Event()
    execution = pool.start(Gate(), 30)
    threading.Timer(0.2, cancel.set).start()
    outcome = execution.wait(cancel, "the scheduler stopped")
    assert outcome.status == TaskStatus.INTERRUPTED and outcome.error == "the scheduler stopped"


def test_call_task_turns_failures_into_outcomes() -> None:
    class Raises(Quick):
        def run(self) -> TaskResult:
            raise KeyError("nope")

    class Garbage(Quick):
        def run(self):
            return {"not": "a TaskResult"}

    failed = call_task(Raises(), 5)
    assert failed.status == TaskStatus.FAILED and "KeyError" in failed.message and "Traceback" in failed.error
    garbage = call_task(Garbage(), 5)
    assert garbage.status == TaskStatus.FAILED and "must return a TaskResult" in garbage.error


def test_closed_pool_refuses_new_runs() -> None:
    pool = WorkerPool(1)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.start(Quick(), 1)


def test_runs_async_tells_async_def_runs_from_plain_ones_per_task() -> None:
    class Plain(BaseTask):
        name = "plain-kind"
        schedule = SCHEDULE

        def run(self) -> TaskResult:
            return TaskResult.success()

    class Coroutine(BaseTask):
        name = "coroutine-kind"
        schedule = SCHEDULE

        async def run(self) -> TaskResult:
            return TaskResult.success()

    async def replaced() -> TaskResult:
        return TaskResult.success()

    for _ in range(2):  # the second answer comes from what the first learned
        assert runs_async(Plain()) is False
        assert runs_async(Coroutine()) is True
    patched = Plain()
    patched.run = replaced  # type: ignore[method-assign]
    assert runs_async(patched) is True, "a run set on the instance is asked about itself"


def test_settled_is_set_once_the_handler_returned_whether_asked_before_or_after() -> None:
    pool = WorkerPool(1)
    seen_by_handler: list[bool] = []
    try:
        asked_before = pool.start(Quick(), 5, lambda execution: seen_by_handler.append(execution.settled.is_set()))
        assert asked_before.settled.wait(10)
        assert seen_by_handler == [False], "set before the handler's effects were done"
        asked_after = pool.start(Quick(), 5)
        wait_for(lambda: asked_after.outcome is not None, timeout=10, message="the run to end")
        assert asked_after.wait().status == TaskStatus.SUCCESS
        assert asked_after.settled.is_set()
    finally:
        pool.close(wait=5)


def test_a_chunk_wakes_one_idle_worker_at_a_time_and_each_woken_one_wakes_the_next(pool: WorkerPool) -> None:
    _start_every_worker(pool)
    wakes: list[int] = []
    notify = pool._cond.notify

    def counted(n: int = 1) -> None:
        wakes.append(n)
        notify(n)

    pool._cond.notify = counted  # type: ignore[method-assign]
    # A thread woken per run of a burst of short runs: all of them wait for the GIL at once, with
    # the burst's other fires still being claimed.
    executions = pool.submit_many([(Submission(n, Quick(), 5), None) for n in range(12)])
    assert [execution.wait().status for execution in executions] == [TaskStatus.SUCCESS] * 12
    assert wakes and set(wakes) == {1}, f"one worker woken at a time, not {wakes}"


def _voluntary_switches(thread: threading.Thread) -> int:
    """How often ``thread`` went to sleep so far (Linux: /proc), i.e. how often it waited and was woken."""
    with open(f"/proc/self/task/{thread.native_id}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


def test_runs_that_start_after_the_last_one_ended_do_not_wake_the_watchdog_each(pool: WorkerPool) -> None:
    assert pool.start(Quick(), 60).wait().status == TaskStatus.SUCCESS
    watchdog = pool._watchdog
    assert watchdog is not None
    # Its start-up and its first look are over: it sleeps on the ended run's deadline.
    wait_for(lambda: pool._watch_until > time.monotonic() + 30, timeout=5, message="watchdog in a long sleep")
    # One at a time, as fires spread over the second come: each run has ended before the next one begins.
    before = _voluntary_switches(watchdog)
    for _ in range(200):
        assert pool.start(Quick(), 60).wait().status == TaskStatus.SUCCESS
    woken = _voluntary_switches(watchdog) - before
    # Before: woken by every run (its deadlines had run out). Now: at most once per idle second.
    assert woken <= 10, f"the watchdog was woken {woken} times by 200 runs"


def test_a_short_timeout_still_wakes_a_watchdog_that_sleeps_with_nothing_to_watch(pool: WorkerPool) -> None:
    assert pool.start(Quick(), 60).wait().status == TaskStatus.SUCCESS
    # The watchdog has nothing left to watch and sleeps long (the ended run's deadline, or until told).
    wait_for(lambda: pool._watch_until > time.monotonic() + 3, timeout=5, message="watchdog in a long sleep")
    Stuck.release.clear()
    started = time.monotonic()
    outcome = pool.start(Stuck(), 0.2).wait()
    assert outcome.status == TaskStatus.TIMEOUT
    # Expired at its own deadline, not at the end of the watchdog's sleep (3 s or more away).
    assert time.monotonic() - started < 2.5


def test_the_deadlines_of_ended_runs_do_not_pile_up_while_the_watchdog_sleeps(pool: WorkerPool) -> None:
    # 60 s timeouts: the watchdog sleeps through all of these runs.
    executions = []
    for start in range(0, 1200, 12):
        executions += pool.submit_many([(Submission(n, Quick(), 60), None) for n in range(start, start + 12)])
    assert all(execution.wait().status == TaskStatus.SUCCESS for execution in executions)
    # Kept, they would hold 1,200 ended runs (and what they reference) until their timeouts passed.
    assert len(pool._deadlines) <= 600, f"{len(pool._deadlines)} deadlines kept for 1,200 ended runs"
