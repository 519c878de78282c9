"""Schedule policies: jitter, overlap, catch-up after downtime, retries, start and end dates."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from itertools import pairwise

import pytest

from scheduler_app import services, signals
from scheduler_app.ledger import Ledger
from scheduler_app.models import SchedulerProcess, TaskExecutionRecord, TaskState
from scheduler_app.runner import ALREADY_BUFFERED_MESSAGE, TaskRunner, retry_delay
from scheduler_app.tasks.base import OPTION_DEFAULTS, BaseTask
from scheduler_app.triggers import CronTrigger, next_fire_times
from scheduler_app.validation import ScheduleValidationError
from tests.processes import wait_for
from tests.runs import run_buffered, run_fire, run_queued

db = pytest.mark.django_db(transaction=True)


def records(task: str, **filters: object) -> list[TaskExecutionRecord]:
    return list(TaskExecutionRecord.objects.filter(task_id=task, **filters).order_by("id"))


# -- units ---------------------------------------------------------------------------------------


def test_retry_delays_back_off_and_are_capped() -> None:
    options = {**OPTION_DEFAULTS, "retry_delay_seconds": 10, "retry_max_delay_seconds": 60}
    assert [retry_delay({**options, "retry_backoff": "fixed"}, n) for n in (1, 2, 3)] == [10, 10, 10]
    assert [retry_delay(options, n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_start_and_end_dates_bound_the_fires() -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    end = datetime(2027, 1, 3, 12, tzinfo=UTC)
    trigger = CronTrigger("0 2 * * *", "UTC", start_date=start, end_date=end)
    fires = next_fire_times(trigger, datetime(2026, 11, 28, tzinfo=UTC), 5)
    assert fires == [datetime(2027, 1, d, 2, tzinfo=UTC) for d in (1, 2, 3)]


@db
def test_options_are_validated_in_one_place() -> None:
    with pytest.raises(ScheduleValidationError) as error:
        services.set_options(
            "tick",
            {"jitter_seconds": -1, "overlap": "sometimes", "max_retries": 1000, "catch_up": "all", "colour": "red"},
        )
    assert set(error.value.errors) == {"jitter_seconds", "overlap", "max_retries", "catch_up", "colour"}
    with pytest.raises(ScheduleValidationError) as error:
        services.set_options(
            "tick", {"start_date": "2027-01-02T00:00:00+00:00", "end_date": "2027-01-01T00:00:00+00:00"}
        )
    assert "end_date must be after start_date" in str(error.value)
    with pytest.raises(ScheduleValidationError, match="needs a time zone offset"):
        services.set_options("tick", {"start_date": "2027-01-02T00:00:00"})
    config = services.set_options("tick", {"overlap": "buffer_one", "max_retries": 2})
    assert config.overlap_policy == "buffer_one" and config.options["max_retries"] == 2
    assert services.set_options("tick", {"overlap": None}).overlap_policy == "skip"
    assert services.clear_options("tick").options_override == {}


@db
def test_buffer_one_keeps_exactly_one_fire_while_busy() -> None:
    services.set_options("tick", {"overlap": "buffer_one"})
    TaskState.objects.filter(task_id="tick").update(running_count=1)  # a run elsewhere holds the slot
    process = SchedulerProcess.objects.create(kind="scheduler", host="here", pid=1)
    runner = TaskRunner(process=process)
    first = run_fire(runner, "tick", datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC), jitter=1.5)
    second = run_fire(runner, "tick", datetime(2027, 1, 1, 0, 0, 2, tzinfo=UTC))
    assert first.status == "pending" and "buffered" in first.message
    kept = TaskExecutionRecord.objects.get(pk=first.pk)
    assert (kept.scheduled_at, kept.jitter_seconds) == (datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC), 1.5)
    assert second.status == "skipped" and second.message == ALREADY_BUFFERED_MESSAGE
    assert run_buffered(runner, "tick") is None  # still busy
    TaskState.objects.filter(task_id="tick").update(running_count=0)
    other = services.request_run("boom")  # another queued run: not this claim's
    # Another process runs the kept fire: the record says which.
    runner = TaskRunner(process=SchedulerProcess.objects.create(kind="scheduler", host="there", pid=2))
    process = runner.process
    slots: list[int] = []
    started: list[tuple[object, ...]] = []

    def on_start(sender: object, record: TaskExecutionRecord, task: BaseTask, **kwargs: object) -> None:
        slots.append(TaskState.objects.get(task_id="tick").running_count)
        row = TaskExecutionRecord.objects.get(pk=record.pk)
        started.append((sender, record.pk, task.name, row.status, row.message, row.worker_id, row.started_at is None))

    signals.run_started.connect(on_start)
    try:
        ran = run_buffered(runner, "tick")
    finally:
        signals.run_started.disconnect(on_start)
    assert ran.pk == first.pk and ran.status == "success"
    assert slots == [1], "the buffered run holds its task's slot while it runs"
    assert TaskExecutionRecord.objects.get(pk=ran.pk).worker_label == runner.worker_label
    assert TaskExecutionRecord.objects.get(pk=other.pk).status == "pending"
    assert started == [(Ledger, first.pk, "tick", "running", "", process.pk, False)]
    assert TaskState.objects.get(task_id="tick").running_count == 0
    assert TaskState.objects.get(task_id="tick").buffered_record_id is None


@db
def test_a_buffered_fire_settled_meanwhile_gives_its_slot_back() -> None:
    services.set_options("tick", {"overlap": "buffer_one"})
    TaskState.objects.filter(task_id="tick").update(running_count=1)
    runner = TaskRunner()
    kept = run_fire(runner, "tick", datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC))
    TaskExecutionRecord.objects.filter(pk=kept.pk).update(status="skipped", message="settled elsewhere")
    TaskState.objects.filter(task_id="tick").update(running_count=0)
    assert run_buffered(runner, "tick") is None
    state = TaskState.objects.get(task_id="tick")
    assert (state.running_count, state.buffered_record_id) == (0, None)
    assert TaskExecutionRecord.objects.get(pk=kept.pk).message == "settled elsewhere", "not run after all"


@db
def test_failed_runs_are_retried_as_linked_records_until_max_retries() -> None:
    services.set_options("boom", {"max_retries": 2, "retry_backoff": "fixed", "retry_delay_seconds": 30})
    runner = TaskRunner()
    first = runner.run_now("boom")
    retry = TaskExecutionRecord.objects.get(retry_of=first, status="pending")
    assert retry.trigger == "retry" and retry.attempt == 2
    assert abs((retry.scheduled_at - first.finished_at).total_seconds() - 30) < 2
    second = run_queued(runner, retry.pk)
    assert second.status == "failed"
    third = TaskExecutionRecord.objects.get(retry_of=first, attempt=3)
    assert run_queued(runner, third.pk).status == "failed"
    assert not TaskExecutionRecord.objects.filter(status="pending").exists(), "no attempt past max_retries"
    assert TaskState.objects.get(task_id="boom").consecutive_failures == 3


@db
def test_retries_stop_when_the_task_is_disabled() -> None:
    services.set_options("boom", {"max_retries": 3, "retry_delay_seconds": 1})
    runner = TaskRunner()
    first = runner.run_now("boom")
    retry = TaskExecutionRecord.objects.get(retry_of=first)
    services.disable_task("boom")
    assert run_queued(runner, retry.pk) is None
    retry.refresh_from_db()
    assert retry.status == "skipped" and retry.message == "skipped: the task was disabled, so its retries stopped"
    # Settled as a run that ended as it began: it has a start, an end and no duration.
    assert retry.started_at is not None and retry.finished_at == retry.started_at and retry.duration_seconds == 0.0


# -- real scheduler processes ---------------------------------------------------------------------


@pytest.mark.process
def test_jitter_delays_each_fire_within_its_bound(processes) -> None:
    services.set_options("tick", {"jitter_seconds": 2})
    processes.scheduler(["TickTask"])
    wait_for(lambda: len(records("tick", status="success")) >= 5, timeout=15, message="5 jittered runs")
    runs = records("tick", status="success")
    jitters = [run.jitter_seconds for run in runs]
    assert all(j is not None and 0 <= j <= 2 for j in jitters), jitters
    assert len({round(j, 3) for j in jitters}) > 1, "jitter must vary between fires"
    # Each fire waits its jitter, then starts as on-time fires do: typically within milliseconds, one
    # stalled fire on a loaded machine allowed for.
    beyond = sorted(run.lateness_seconds - run.jitter_seconds for run in runs)
    assert beyond[0] >= -0.05 and beyond[len(beyond) // 2] < 0.25 and beyond[-1] < 1.0, beyond


@pytest.mark.process
def test_buffer_one_runs_exactly_one_extra_time_right_after_the_run(processes) -> None:
    services.set_options("slow", {"overlap": "buffer_one"})
    # A poll every 5 s: a buffered fire left for the pickup to find would start seconds late.
    processes.scheduler(["SlowTask"], TEST_POLL_INTERVAL="5", TEST_LEASE_SECONDS="30")
    wait_for(lambda: len(records("slow", status="success")) >= 3, timeout=20, message="3 slow runs")
    runs = records("slow", status="success")
    runs.sort(key=lambda r: r.started_at)
    for earlier, later in pairwise(runs):
        assert later.started_at >= earlier.finished_at, "runs overlapped"
        # The buffered fire starts as soon as the run before it ends, not at the next poll.
        assert later.scheduled_at < earlier.finished_at, "a fire kept while the run before it ran"
        assert (later.started_at - earlier.finished_at).total_seconds() < 1.5
    dropped = records("slow", status="skipped")
    assert dropped and all(r.message == ALREADY_BUFFERED_MESSAGE for r in dropped)
    # Each run but the first was a fire kept while the previous one ran.
    assert all("buffered" not in r.message for r in runs)


@pytest.mark.process
def test_catch_up_none_after_downtime_records_missed_and_runs_no_late_fire(processes) -> None:
    services.set_options("tick", {"catch_up": "none", "catch_up_window_seconds": 30})
    first = processes.scheduler(["TickTask"])
    wait_for(lambda: len(records("tick", status="success")) >= 1, timeout=10, message="a run")
    assert first.stop() == 0
    time.sleep(6.5)  # downtime longer than the on-time tolerance (5 s)
    stopped_at = datetime.now(UTC)
    processes.scheduler(["TickTask"])
    wait_for(lambda: len(records("tick", status="missed")) >= 5, timeout=10, message="missed fires")
    wait_for(
        lambda: any(r.started_at > stopped_at for r in records("tick", status="success")), timeout=10, message="a run"
    )
    # The newest fire may be up to one interval old when the scheduler comes back: that one is on
    # time. The policy runs no fire more than 5 s late (catch_up.ON_TIME_SECONDS); the downtime was 6.5 s.
    late_runs = [r for r in records("tick", status="success") if r.lateness_seconds > 4]
    assert late_runs == [], "catch_up none must not run a late fire"
    assert any("catch_up policy is 'none'" in r.message for r in records("tick", status="missed"))


@pytest.mark.process
def test_retries_follow_the_backoff_and_stop_at_max_retries(processes) -> None:
    services.set_schedule("boom", schedule_type="interval", interval_seconds=3600)
    services.set_options(
        "boom",
        {"max_retries": 2, "retry_backoff": "exponential", "retry_delay_seconds": 1, "retry_max_delay_seconds": 60},
    )
    processes.scheduler(["BoomTask"])
    first = services.request_run("boom", origin="api")
    wait_for(lambda: len(records("boom", status="failed")) >= 3, timeout=15, message="3 attempts")
    attempts = records("boom", status="failed")
    assert [r.attempt for r in attempts] == [1, 2, 3]
    assert attempts[0].pk == first.pk and all(r.retry_of_id == first.pk for r in attempts[1:])
    # The backoff as planned (1 s, then 2 s after the failure), then as kept: no retry starts before
    # its time, and the pickup starts it soon after (its poll, a claim and a worker: a loaded machine
    # stretches that, so it is bounded loosely here; timing belongs to the benchmarks).
    for failed, retry, delay in ((attempts[0], attempts[1], 1), (attempts[1], attempts[2], 2)):
        planned = (retry.scheduled_at - failed.finished_at).total_seconds()
        assert delay <= planned < delay + 0.5, (delay, planned)
        assert 0 <= retry.lateness_seconds < 1.5, retry.lateness_seconds
    time.sleep(1)  # an absence can only be observed over a window
    assert not TaskExecutionRecord.objects.filter(task_id="boom", status="pending").exists()
    assert TaskExecutionRecord.objects.filter(task_id="boom").count() == 3


@db
def test_api_shows_the_next_fire_in_the_tasks_zone_with_its_offset() -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    services.set_schedule("nightly", schedule_type="cron", cron_expression="30 2 * * *", timezone_name="Europe/Berlin")
    summer = datetime(2027, 7, 1, 0, 30, tzinfo=UTC)  # 02:30 CEST
    TaskState.objects.filter(task_id="nightly").update(next_run_at=summer)
    client = Client()
    client.force_login(User.objects.create_user("viewer"))
    task = client.get("/scheduler/tasks/nightly").json()
    assert task["timezone"] == "Europe/Berlin"
    assert task["next_run_at_local"] == "2027-07-01T02:30:00+02:00"
