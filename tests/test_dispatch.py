"""Dispatch: the dispatcher and pickup threads see a stop at once, and a pickup batch ends at a stop.

A stop (Ctrl-C of ``runscheduler``) joins these threads before it tells how long it waits for
running tasks: a thread that only noticed the stop on its next timed look, or not until ``stop()``
woke it, made that line late. ``request_stop()`` alone must end them.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from scheduler_app import dispatch as dispatch_module
from scheduler_app import scheduler as scheduler_module
from scheduler_app import services
from scheduler_app.dispatch import CLAIM_CHUNK, CLAIM_CHUNK_MAX, CLAIMS_QUIET_SECONDS, claim_chunks
from scheduler_app.ledger import Fire
from scheduler_app.models import SchedulerProcess, TaskExecutionRecord
from scheduler_app.scheduler import TaskScheduler
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# Far below the pickup's former 5 s look at the stop flag, far above a woken thread's exit.
JOIN_SECONDS = 3.0


def test_request_stop_alone_ends_the_dispatcher_and_the_pickup() -> None:
    scheduler = TaskScheduler()
    dispatch = scheduler.dispatch
    dispatch.start()
    try:
        threads = [t for t in dispatch.threads() if t is not None and t.name in ("fire-dispatcher", "run-pickup")]
        assert len(threads) == 2
        wait_for(lambda: all(t.is_alive() for t in threads), timeout=10, message="the threads to run")
        dispatch.wake_pickup()  # a poll while not leading: the pickup looks, then sleeps again
        scheduler.request_stop()  # from a signal handler or any thread; nobody calls stop() here
        for thread in threads:
            thread.join(timeout=JOIN_SECONDS)
        assert [t.name for t in threads if t.is_alive()] == []
    finally:
        scheduler.request_stop()
        dispatch.stop()
        scheduler.runner.close()


def test_a_stop_ends_a_pickup_batch_before_its_next_start() -> None:
    """Each queued run started is a transaction of its own: a stop seen between two does not wait for the batch."""
    record = services.request_run("tick")
    stopped = TaskScheduler()
    stopped.request_stop()
    stopped.dispatch._dispatch_pending()
    record.refresh_from_db()
    assert record.status == "pending"  # left for the next leader

    # The same look without a stop starts it: the stop, not the look, kept it queued.
    scheduler = TaskScheduler()
    scheduler.runner.process = SchedulerProcess.objects.create(kind="scheduler", host="here", pid=1)
    try:
        scheduler.dispatch._dispatch_pending()
        wait_for(lambda: TaskExecutionRecord.objects.get(pk=record.pk).status == "success", 10, message="the run")
    finally:
        scheduler.runner.close()


def _fires_of_tick(count: int) -> list[tuple[str, list[datetime], float | None]]:
    start = timezone.now().replace(microsecond=0)
    return [("tick", [start + timedelta(seconds=i)], None) for i in range(count)]


def test_a_bursts_chunks_start_small_and_double_up_to_the_largest() -> None:
    assert claim_chunks(0) == []
    assert claim_chunks(1) == [1]
    assert claim_chunks(CLAIM_CHUNK) == [CLAIM_CHUNK]
    assert claim_chunks(1000) == [50, 100, 200, 200, 200, 200, 50]
    assert (CLAIM_CHUNK, CLAIM_CHUNK_MAX) == (50, 200)


def test_a_batch_is_claimed_in_chunks_and_every_fire_gets_its_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch_module, "CLAIM_CHUNK", 2)
    monkeypatch.setattr(dispatch_module, "CLAIM_CHUNK_MAX", 4)
    scheduler = TaskScheduler()
    scheduler.runner.process = SchedulerProcess.objects.create(kind="scheduler", host="here", pid=1)
    scheduler.jobs.load()
    chunks: list[int] = []
    launch = scheduler.runner.launch_fires
    monkeypatch.setattr(scheduler.runner, "launch_fires", lambda fires: chunks.append(len(fires)) or launch(fires))
    try:
        scheduler.dispatch.run_fires(_fires_of_tick(11))
        assert scheduler.runner.drain(30)
    finally:
        scheduler.runner.close()
    assert chunks == [2, 4, 4, 1]
    assert TaskExecutionRecord.objects.filter(task_id="tick", trigger="scheduled").count() == 11


def test_fires_of_a_chunk_the_database_refused_wait_to_be_recorded_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch_module, "CLAIM_CHUNK", 2)
    monkeypatch.setattr(dispatch_module, "CLAIM_CHUNK_MAX", 2)
    scheduler = TaskScheduler()
    scheduler.runner.process = SchedulerProcess.objects.create(kind="scheduler", host="here", pid=1)
    scheduler.jobs.load()
    launch = scheduler.runner.launch_fires
    calls: list[int] = []

    def refuses_second(fires: list[Fire]) -> object:
        calls.append(len(fires))
        if len(calls) == 2:
            raise OperationalError("database is locked")
        return launch(fires)

    monkeypatch.setattr(scheduler.runner, "launch_fires", refuses_second)
    try:
        scheduler.dispatch.run_fires(_fires_of_tick(5))
        assert scheduler.runner.drain(30)
        assert calls == [2, 2], "no chunk after the refused one"
        assert TaskExecutionRecord.objects.filter(task_id="tick").count() == 2
        scheduler.dispatch.record_unrecorded()
    finally:
        scheduler.runner.close()
    missed = TaskExecutionRecord.objects.filter(task_id="tick", status="missed")
    assert missed.count() == 3


def test_claims_wait_while_fires_are_handed_over_or_claimed_and_count_as_lately_for_a_quiet_window(
    monkeypatch,
) -> None:
    """What the finisher and the job store's flush ask before they take the process's time."""
    # A quiet window of a minute, not 10 ms: a preempted test thread does not leave it unseen.
    monkeypatch.setattr(dispatch_module, "CLAIMS_QUIET_SECONDS", 60.0)
    scheduler = TaskScheduler()
    dispatch = scheduler.dispatch
    assert dispatch.claims_waiting() is False
    dispatch.queue_fires("tick", [timezone.now()])  # the dispatcher thread is not started: it stays queued
    assert dispatch.claims_waiting() is True
    dispatch._fires.clear()
    dispatch.busy_since = 1.0
    assert dispatch.claims_waiting() is True
    dispatch.busy_since = None
    dispatch.idle_since = time.monotonic()
    # The finisher's question: a batch that just ended holds no outcome back (they keep slots taken).
    assert dispatch.claims_waiting() is False
    assert dispatch.claimed_lately() is True, "the tick's question: more fires of the burst may follow"
    dispatch.idle_since = time.monotonic() - 60.0
    assert dispatch.claimed_lately() is False
    dispatch.busy_since = 1.0
    assert dispatch.claimed_lately() is True
    dispatch.busy_since = None
    dispatch.start()
    try:
        assert scheduler.runner.claims_waiting == dispatch.claims_waiting, "the runner's finisher asks the dispatcher"
    finally:
        scheduler.request_stop()
        dispatch.stop()
        scheduler.runner.close()


def test_the_control_loops_tick_waits_for_a_burst_to_be_claimed_within_its_bound(monkeypatch) -> None:
    """The tick's writes (lease, job sync, the job store's flush) come after a burst's claims, not
    amid them; claims that never end hold the tick back only ``TICK_MAX_YIELD_SECONDS``."""
    monkeypatch.setattr(scheduler_module, "TICK_MAX_YIELD_SECONDS", 30.0)
    scheduler = TaskScheduler()
    dispatch = scheduler.dispatch
    started = time.monotonic()
    scheduler._yield_to_claims()
    assert time.monotonic() - started < 30.0, "no claims: the tick does not wait for its bound"

    dispatch.busy_since = time.monotonic()
    ended_at: list[float] = []

    def end_the_burst() -> None:
        ended_at.append(time.monotonic())
        dispatch.idle_since = time.monotonic()
        dispatch.busy_since = None

    timer = threading.Timer(0.3, end_the_burst)
    timer.start()
    scheduler._yield_to_claims()
    returned = time.monotonic()
    timer.join()
    assert ended_at and returned >= ended_at[0] + CLAIMS_QUIET_SECONDS, "the tick came before the claims ended"
    assert returned - ended_at[0] < 30.0

    monkeypatch.setattr(scheduler_module, "TICK_MAX_YIELD_SECONDS", 0.3)
    dispatch.busy_since = time.monotonic()  # claims that never end
    started = time.monotonic()
    scheduler._yield_to_claims()
    assert time.monotonic() - started >= 0.3, "the tick gave up waiting before its bound"
    scheduler.request_stop()
    started = time.monotonic()
    monkeypatch.setattr(scheduler_module, "TICK_MAX_YIELD_SECONDS", 30.0)
    scheduler._yield_to_claims()
    assert time.monotonic() - started < 30.0, "a stop ends the wait"
