"""The effective timeout (override, else the task's, else SCHEDULER["DEFAULT_TIMEOUT"]) on every path
that runs task code: the scheduler process, a manual run from the API, and ``trigger_task``."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from scheduler_app.models import TaskConfig, TaskExecutionRecord
from scheduler_app.services import set_timeout, sync_task_rows
from tests.processes import wait_for

# `long` sleeps TEST_LONG_TASK_SECONDS (30 s by default) and sets no timeout of its own; `hang` sets 1 s.


def finished(name: str, trigger: str) -> TaskExecutionRecord | None:
    return (
        TaskExecutionRecord.objects.filter(task_id=name, trigger=trigger, finished_at__isnull=False)
        .order_by("-id")
        .first()
    )


@pytest.mark.django_db(transaction=True)
def test_the_effective_timeout_rule() -> None:
    sync_task_rows()
    config = TaskConfig.objects.get(name="long")
    assert (config.timeout_seconds, config.timeout_source) == (3600.0, "settings")
    assert config.timeout_with_fallback(7.5) == 7.5
    hang = TaskConfig.objects.get(name="hang")
    assert (hang.timeout_seconds, hang.timeout_source) == (1.0, "code")
    assert hang.timeout_with_fallback(7.5) == 1.0, "a command's fallback does not beat the task's own timeout"
    set_timeout("hang", 2.5)
    hang.refresh_from_db()
    assert (hang.timeout_seconds, hang.timeout_source, hang.timeout_with_fallback(7.5)) == (2.5, "override", 2.5)


@pytest.mark.django_db(transaction=True)
def test_trigger_task_applies_the_settings_default_timeout(settings) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "DEFAULT_TIMEOUT": 0.5}
    with pytest.raises(CommandError, match="timeout"):
        call_command("trigger_task", "long")
    record = finished("long", "manual")
    assert record is not None and record.status == "timeout"
    assert "did not finish within 0.5 seconds" in record.error
    assert record.duration_seconds < 5


@pytest.mark.django_db(transaction=True)
def test_trigger_task_applies_an_operators_timeout_override() -> None:
    sync_task_rows()
    set_timeout("long", 0.4)
    with pytest.raises(CommandError, match="timeout"):
        call_command("trigger_task", "long")
    record = finished("long", "manual")
    assert record is not None and record.status == "timeout"
    assert "did not finish within 0.4 seconds" in record.error


@pytest.mark.process
def test_the_scheduler_applies_the_settings_default_timeout(processes) -> None:
    # `slow` (2.5 s, every second, no timeout of its own) is stopped by the settings' default.
    processes.scheduler(["SlowTask"], TEST_DEFAULT_TIMEOUT="0.75")
    wait_for(lambda: finished("slow", "scheduled"), timeout=20, message="a scheduled run of slow to finish")
    record = finished("slow", "scheduled")
    assert record.status == "timeout", (record.status, record.message, record.error)
    assert "did not finish within 0.75 seconds" in record.error


@pytest.mark.process
def test_a_timeout_set_through_the_api_stops_the_run_in_the_scheduler(processes) -> None:
    # A slow configuration poll: the queued run is picked up at once (SQLite's data_version check,
    # PostgreSQL's NOTIFY), long before the scheduler reloads its configuration; the run must still
    # get the timeout set a moment before the trigger.
    processes.scheduler(["LongTask"], TEST_POLL_INTERVAL="5", TEST_LEASE_SECONDS="30")
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    response = client.put("/scheduler/tasks/long/timeout", {"timeout_seconds": 0.6}, content_type="application/json")
    assert response.status_code == 200, response.content
    response = client.post("/scheduler/tasks/long/trigger")
    assert response.status_code == 202
    record_id = response.json()["id"]
    wait_for(
        lambda: TaskExecutionRecord.objects.get(pk=record_id).finished_at is not None,
        timeout=20,
        message="the manual run to be stopped by its 0.6 s override",
    )
    record = TaskExecutionRecord.objects.get(pk=record_id)
    assert record.status == "timeout", (record.status, record.error)
    assert "did not finish within 0.6 seconds" in record.error
