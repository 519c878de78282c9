"""``db.py``: the scheduler's SQLite connections leave the write-ahead log's checkpoints to its
control loop (off the dispatcher's commits). On PostgreSQL there is nothing to do, and nothing is done."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.db import connection, connections
from django.db.backends.signals import connection_created

from scheduler_app import db
from scheduler_app import scheduler as scheduler_module
from scheduler_app.models import TaskExecutionRecord
from scheduler_app.scheduler import TaskScheduler
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SQLITE_DEFAULT_AUTOCHECKPOINT = 1000


def autocheckpoint() -> int | None:
    """This thread's connection's ``wal_autocheckpoint`` (None: not SQLite)."""
    if connection.vendor != "sqlite":
        return None
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        return cursor.fetchone()[0]


@pytest.fixture
def default_checkpoints() -> Iterator[None]:
    """SQLite's own behaviour before and after the test (a scheduler run by another test may have
    changed this process's connections)."""

    def reset() -> None:
        connection_created.disconnect(dispatch_uid="scheduler_app.db.wal_autocheckpoint")
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_DEFAULT_AUTOCHECKPOINT}")

    reset()
    yield
    reset()


def test_the_schedulers_connections_open_and_to_come_checkpoint_only_past_the_safety_net(
    default_checkpoints: None,
) -> None:
    expected = db.WAL_AUTOCHECKPOINT_PAGES if connection.vendor == "sqlite" else None
    if expected is not None:
        assert autocheckpoint() == SQLITE_DEFAULT_AUTOCHECKPOINT
    db.leave_wal_checkpoints_to_the_control_loop()
    assert autocheckpoint() == expected, "the connection already open"
    seen: list[int | None] = []

    def in_another_thread() -> None:
        try:
            seen.append(autocheckpoint())
        finally:
            connections.close_all()

    thread = threading.Thread(target=in_another_thread)
    thread.start()
    thread.join(timeout=30)
    assert seen == [expected], "a connection opened later, in another thread"


def test_a_checkpoint_copies_the_whole_log_back_without_waiting() -> None:
    TaskExecutionRecord.objects.create(task_id="tick", trigger="manual", status="pending")
    result = db.checkpoint_wal()
    if connection.vendor != "sqlite":
        assert result is None
        return
    assert result is not None
    logged, copied = result
    assert logged > 0 and copied == logged


def test_the_control_loop_checkpoints_while_it_leads_but_not_while_fires_are_claimed(
    monkeypatch: pytest.MonkeyPatch, default_checkpoints: None
) -> None:
    checkpoints: list[int] = []
    scheduler = TaskScheduler()

    def counted() -> tuple[int, int] | None:
        checkpoints.append(scheduler._ticks)
        return db.checkpoint_wal()

    monkeypatch.setattr(scheduler_module, "checkpoint_wal", counted)
    # The dispatcher's own answer changes with every real fire (the test tasks fire each second).
    claiming = threading.Event()
    monkeypatch.setattr(scheduler.dispatch, "claimed_lately", claiming.is_set)
    thread = threading.Thread(target=scheduler.run_forever, name="test-control-loop")
    thread.start()
    try:
        wait_for(lambda: scheduler.jobs.leading and checkpoints, timeout=30, message="a checkpoint while leading")
        claiming.set()  # a burst being claimed from now on
        before = len(checkpoints)
        ticks = scheduler._ticks
        wait_for(lambda: scheduler._ticks >= ticks + 3, timeout=30, message="three ticks amid the burst")
        assert len(checkpoints) <= before + 1, "checkpoints amid the claims (one tick may have been past its look)"
        claiming.clear()
        after_burst = len(checkpoints)
        wait_for(lambda: len(checkpoints) > after_burst, timeout=30, message="a checkpoint after the burst")
    finally:
        claiming.clear()
        scheduler.request_stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
