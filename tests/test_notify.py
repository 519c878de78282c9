"""A queued run reaches the active scheduler at once: PostgreSQL NOTIFY, SQLite's data_version check.

The schedulers here poll every 30 s: a run that starts within a few seconds of being queued was
woken by the watcher, not found by the poll.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from scheduler_app import notify, services
from scheduler_app.models import TaskExecutionRecord
from tests.processes import wait_for

pytestmark = [pytest.mark.process]

SLOW_POLL = {"TEST_POLL_INTERVAL": "30", "TEST_LEASE_SECONDS": "70"}


def succeeded(record_id: int) -> bool:
    return TaskExecutionRecord.objects.get(pk=record_id).status == "success"


def test_a_queued_run_is_picked_up_without_waiting_for_the_poll(processes) -> None:
    processes.scheduler(["CronTask"], **SLOW_POLL)
    for _ in range(3):
        queued = services.request_run("nightly", origin="api")
        wait_for(lambda queued=queued: succeeded(queued.pk), timeout=5, message="the run, before the 30 s poll")


@pytest.mark.postgres
def test_the_listener_survives_a_lost_connection(processes) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY: python -m tests.pgserver run -- pytest -m postgres tests/test_notify.py")
    processes.scheduler(["CronTask"], **SLOW_POLL)
    first = services.request_run("nightly", origin="api")
    wait_for(lambda: succeeded(first.pk), timeout=5, message="the first run")

    def listeners(terminate: bool = False) -> int:
        call = "pg_terminate_backend(pid)" if terminate else "pid"
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {call} FROM pg_stat_activity WHERE query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()"
            )
            return len(cursor.fetchall())

    assert listeners(terminate=True) == 1, "one scheduler, one listening connection"
    # A run queued while nobody listens is picked up when the listener is back (its first retry).
    second = services.request_run("nightly", origin="api")
    wait_for(lambda: succeeded(second.pk), timeout=8, message="the run queued while the connection was cut")
    wait_for(lambda: listeners() == 1, timeout=5, message="the listener to be back")
    third = services.request_run("nightly", origin="api")
    wait_for(lambda: succeeded(third.pk), timeout=5, message="a run after the listener came back")


def test_a_manual_run_waiting_for_a_run_of_another_process_starts_when_that_run_ends(processes) -> None:
    """The run it waits for is ``trigger_task``'s, in its own process: its end wakes the pickup, not the poll."""
    processes.scheduler(["LongTask"], TEST_LONG_TASK_SECONDS="3", **SLOW_POLL)
    processes.start(
        "trigger_task", ["manage.py", "trigger_task", "long"], processes.env(["LongTask"], TEST_LONG_TASK_SECONDS="3")
    )
    blocking = wait_for(
        lambda: TaskExecutionRecord.objects.filter(task_id="long", status="running").first(),
        timeout=20,
        message="the command's run",
    )
    # Accepted a moment before the command took the task (the API refuses a busy task with 409).
    with transaction.atomic():
        queued = TaskExecutionRecord.objects.create(task_id="long", trigger="manual", status="pending", origin="api")
        notify.announce_pending()
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "pending"
    # Within the command's 3 s run and a few seconds more: long before the scheduler's 30 s poll.
    wait_for(lambda: succeeded(queued.pk), timeout=12, message="the waiting run, once the command's run ended")
    blocking.refresh_from_db()
    assert blocking.status == "success"
    assert TaskExecutionRecord.objects.get(pk=queued.pk).started_at >= blocking.finished_at
