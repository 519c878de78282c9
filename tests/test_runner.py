"""``TaskRunner`` in this process, against the real test database."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from scheduler_app import runner as runner_module
from scheduler_app import services, signals
from scheduler_app.abc import Outcome, RemoteExecutor, RunHandle, Submission
from scheduler_app.execution import Execution
from scheduler_app.executors.fleet import HandedOff
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord, TaskState, Trigger
from scheduler_app.registry import TaskRegistry, task_registry
from scheduler_app.runner import BUSY_MESSAGE, Fire, MissedFire, TaskRunner
from scheduler_app.services import request_run, sync_task_rows
from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule, TaskStatus
from tests.processes import wait_for
from tests.runs import RetryInsertsRefused, run_fire, run_queued
from tests.tasks import FleetTickTask, TickTask

pytestmark = pytest.mark.django_db(transaction=True)


class UnserializableTask(BaseTask):
    name = "unserializable"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60)

    def run(self) -> TaskResult:
        return TaskResult.success("made an object", thing=object())


class OrmTask(BaseTask):
    """Uses the ORM from an async run, the way task authors will."""

    name = "orm_user"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60)

    async def run(self) -> TaskResult:
        count = await TaskExecutionRecord.objects.acount()
        return TaskResult.success("counted", records=count)


@pytest.fixture(autouse=True)
def rows() -> None:
    for extra in (UnserializableTask, OrmTask):
        task_registry.register(extra)
    sync_task_rows()
    yield
    for extra in (UnserializableTask, OrmTask):
        task_registry.unregister(extra.name)


def state(name: str) -> TaskState:
    return TaskState.objects.get(task_id=name)


def test_success_is_recorded_with_data_and_state() -> None:
    record = TaskRunner().run_now("tick")
    assert record.status == "success" and record.trigger == "manual" and record.origin == "command"
    assert record.message == "tick" and "pid" in record.data
    assert record.started_at <= record.finished_at and record.duration_seconds >= 0
    s = state("tick")
    assert (s.run_count, s.fail_count, s.last_result, s.status) == (1, 0, "success", "idle")
    assert s.last_run_at == record.started_at and s.last_success_at is not None


def test_exception_is_a_failure_with_traceback() -> None:
    record = TaskRunner().run_now("boom")
    assert record.status == "failed"
    assert record.message == "raised ValueError: boom: the task blew up"
    assert "Traceback" in record.error and "ValueError: boom" in record.error
    s = state("boom")
    assert (s.run_count, s.fail_count, s.consecutive_failures, s.last_result) == (1, 1, 1, "failed")


@pytest.mark.parametrize("name", ["hang", "async_hang"])
def test_a_hanging_task_times_out(name: str) -> None:
    record = TaskRunner().run_now(name)
    assert record.status == "timeout"
    assert "did not finish within 1 seconds" in record.error
    assert 0.9 < record.duration_seconds < 5
    assert state(name).fail_count == 1 and state(name).status == "idle"


def test_runner_default_timeout_applies_when_the_task_sets_none() -> None:
    record = TaskRunner(default_timeout=0.5).run_now("slow")
    assert record.status == "timeout" and "0.5 seconds" in record.error


def test_garbage_results_are_failures_with_a_clear_message() -> None:
    record = TaskRunner().run_now("garbage")
    assert record.status == "failed"
    assert "must return a TaskResult" in record.error and "int: 42" in record.error
    record = TaskRunner().run_now("unserializable")
    assert record.status == "failed" and "not JSON serializable" in record.error


def test_async_task_can_use_the_orm() -> None:
    TaskRunner().run_now("tick")
    record = TaskRunner().run_now("orm_user")
    assert record.status == "success", record.error
    assert record.data == {"records": 2}


def test_busy_task_is_skipped_with_a_reason_and_not_run() -> None:
    # Another process holds the running slot, as the database says.
    TaskState.objects.filter(task_id="slow").update(running_count=1)
    record = TaskRunner().run_now("slow")
    assert record.status == "skipped"
    assert "previous run is still running" in record.message
    assert state("slow").run_count == 0 and state("slow").running_count == 1


def test_each_scheduled_fire_is_recorded_once() -> None:
    fire = datetime(2026, 1, 1, 12, tzinfo=UTC)
    first = run_fire(TaskRunner(), "tick", fire)
    second = run_fire(TaskRunner(), "tick", fire)
    assert first is not None and first.status == "success" and first.scheduled_at == fire
    assert second is None
    assert TaskRunner().record_missed_fires([MissedFire("tick", fire, "late")])[0] is None
    assert TaskExecutionRecord.objects.filter(task_id="tick").count() == 1


def test_pending_run_is_claimed_once() -> None:
    queued = request_run("tick", origin="api")
    assert queued.status == "pending" and queued.started_at is None
    runner = TaskRunner()
    done = run_queued(runner, queued.pk)
    assert done is not None and done.pk == queued.pk and done.status == "success"
    assert run_queued(runner, queued.pk) is None


def test_seed_helpers_history_and_state(django_assert_num_queries: Any) -> None:
    runner = TaskRunner()
    for _ in range(3):
        runner.run_now("tick")
    history = runner.get_history("tick", limit=2)
    assert len(history) == 2 and history[0].pk > history[1].pk
    assert runner.get_state("tick").run_count == 3
    TaskExecutionRecord.objects.bulk_create(
        TaskExecutionRecord(task_id="tick", trigger=Trigger.MANUAL, status=TaskStatus.SUCCESS) for _ in range(10)
    )
    newest = list(TaskExecutionRecord.objects.filter(task_id="tick").order_by("-id").values_list("pk", flat=True))
    assert [r.pk for r in runner.get_history("tick")] == newest[:10], "ten by default, newest first"
    with django_assert_num_queries(1):  # the state comes with its task's configuration
        assert runner.get_state("tick").task.name == "tick"


def test_a_scheduled_fire_keeps_its_jitter() -> None:
    record = run_fire(TaskRunner(), "tick", datetime(2027, 1, 1, tzinfo=UTC), jitter=2.5)
    assert record is not None and record.status == "success"
    assert TaskExecutionRecord.objects.get(pk=record.pk).jitter_seconds == 2.5


def test_a_missed_fire_is_recorded_and_announced_as_stored(caplog: pytest.LogCaptureFixture) -> None:
    process = SchedulerProcess.objects.create(kind="scheduler", host="here", pid=1)
    runner = TaskRunner(process=process)
    announced: list[TaskExecutionRecord] = []

    def receiver(sender: object, record: TaskExecutionRecord, **kwargs: object) -> None:
        announced.append(record)

    at = timezone.now().replace(microsecond=0) - timedelta(minutes=5)
    signals.run_finished.connect(receiver)
    try:
        # In whatever zone is active: the fire is matched to its record by its instant.
        with timezone.override("Asia/Tokyo"):
            record = runner.record_missed_fires([MissedFire("tick", at, "outside the grace window")])[0]
            assert runner.record_missed_fires([MissedFire("tick", at, "again")])[0] is None, (
                "a fire never gets two records"
            )
    finally:
        signals.run_finished.disconnect(receiver)
    assert record is not None and announced == [record]
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    fields = ("task_id", "trigger", "status", "scheduled_at", "created_at", "finished_at", "message", "worker_id")
    assert [getattr(record, f) for f in fields] == [getattr(stored, f) for f in fields]
    assert (stored.status, stored.scheduled_at, stored.message) == ("missed", at, "outside the grace window")
    assert stored.worker_id == process.pk and stored.finished_at == stored.created_at is not None
    assert f"task tick: fire at {at.isoformat()} missed: outside the grace window" in caplog.messages


def test_drop_pending_settles_only_that_queued_run() -> None:
    runner = TaskRunner()
    dropped, other = request_run("tick"), request_run("tick")
    running = TaskExecutionRecord.objects.create(task_id="tick", trigger=Trigger.MANUAL, status=TaskStatus.RUNNING)
    announced: list[int] = []

    def receiver(sender: object, record: TaskExecutionRecord, **kwargs: object) -> None:
        announced.append(record.pk)

    signals.run_finished.connect(receiver)
    try:
        runner.drop_pending(dropped.pk, "skipped: no longer wanted")
        runner.drop_pending(running.pk, "skipped: no longer wanted")  # not queued: left alone
    finally:
        signals.run_finished.disconnect(receiver)
    assert announced == [dropped.pk]
    statuses = dict(TaskExecutionRecord.objects.values_list("pk", "status"))
    assert (statuses[dropped.pk], statuses[other.pk], statuses[running.pk]) == ("skipped", "pending", "running")
    assert TaskExecutionRecord.objects.get(pk=dropped.pk).message == "skipped: no longer wanted"


def test_interrupt_marks_only_running_records() -> None:
    runner = TaskRunner()
    done = runner.run_now("tick")
    TaskState.objects.filter(task_id="tick").update(running_count=1)
    running = TaskExecutionRecord.objects.create(
        task_id="tick", trigger="manual", status="running", started_at=done.finished_at, data={"step": 3}
    )
    unstarted = TaskExecutionRecord.objects.create(task_id="tick", trigger="manual", status="running")
    announced: list[tuple[int, str]] = []

    def receiver(sender: object, record: TaskExecutionRecord, **kwargs: object) -> None:
        announced.append((record.pk, record.status))

    assert runner.interrupt([], "nothing") == 0
    signals.run_finished.connect(receiver)
    try:
        assert runner.interrupt([done, running, unstarted], "gone") == 2
    finally:
        signals.run_finished.disconnect(receiver)
    assert announced == [(running.pk, "interrupted"), (unstarted.pk, "interrupted")]
    running.refresh_from_db()
    done.refresh_from_db()
    unstarted.refresh_from_db()
    assert (running.status, running.message, running.error) == ("interrupted", "interrupted", "gone")
    assert running.started_at == done.finished_at and running.data == {"step": 3}, "what it had is kept"
    assert running.duration_seconds == (running.finished_at - running.started_at).total_seconds() > 0
    assert unstarted.finished_at is not None and unstarted.duration_seconds is None and unstarted.data == {}
    assert done.status == "success"
    assert state("tick").running_count == 0


def test_a_queued_manual_run_of_a_busy_task_waits_then_runs_once() -> None:
    queued = request_run("slow", origin="api")
    TaskState.objects.filter(task_id="slow").update(running_count=1)  # a scheduled run took it meanwhile
    runner = TaskRunner()
    try:
        assert runner.launch_pending(queued.pk) is False
        queued.refresh_from_db()
        assert queued.status == "pending", "an accepted run is not dropped"
        assert queued.message == "waiting for run #? to end (the task does not allow concurrent runs)"
        TaskState.objects.filter(task_id="slow").update(running_count=0)
        assert runner.launch_pending(queued.pk) is True
        assert TaskExecutionRecord.objects.get(pk=queued.pk).message == "", "the wait is over once it runs"
        assert runner.launch_pending(queued.pk) is False, "claimed once"
        assert runner.drain(10)
    finally:
        runner.close()
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "success"
    assert TaskExecutionRecord.objects.filter(task_id="slow").count() == 1


def test_a_manual_run_that_waited_too_long_is_skipped_naming_the_run_it_waited_for() -> None:
    blocking = TaskExecutionRecord.objects.create(task_id="slow", trigger="scheduled", status="running")
    TaskState.objects.filter(task_id="slow").update(running_count=1)
    # A newer run of another task: the message names the run of this task, not the newest run.
    TaskExecutionRecord.objects.create(task_id="tick", trigger="scheduled", status="running")
    # Accepted while the task was idle (request_run refuses a busy task).
    queued = TaskExecutionRecord.objects.create(task_id="slow", trigger="manual", status="pending", origin="api")
    assert TaskRunner().launch_pending(queued.pk) is False
    assert TaskExecutionRecord.objects.get(pk=queued.pk).message == (
        f"waiting for run #{blocking.pk} to end (the task does not allow concurrent runs)"
    )
    assert TaskRunner().launch_pending(queued.pk, waited=612.4) is False
    queued.refresh_from_db()
    assert queued.status == "skipped"
    assert queued.message == (
        f"skipped: waited 612s for run #{blocking.pk} to end (the task does not allow concurrent runs; "
        "SCHEDULER['MANUAL_RUN_MAX_WAIT'] is 600s)"
    )
    assert TaskState.objects.get(task_id="slow").running_count == 1, "the run it waited for keeps its slot"


def test_a_retry_of_a_busy_task_is_still_skipped() -> None:
    TaskState.objects.filter(task_id="slow").update(running_count=1)
    retry = TaskExecutionRecord.objects.create(task_id="slow", trigger="retry", status="pending", attempt=2)
    assert TaskRunner().launch_pending(retry.pk) is False
    retry.refresh_from_db()
    assert retry.status == "skipped" and "previous run is still running" in retry.message


# -- the scheduler's asynchronous entry points ---------------------------------------------------


@pytest.fixture
def runner() -> Iterator[TaskRunner]:
    runner = TaskRunner()
    yield runner
    runner.close()


def test_launch_pending_starts_a_queued_run_that_the_finisher_records(runner: TaskRunner) -> None:
    queued = request_run("tick")
    assert runner.launch_pending(queued.pk) is True
    assert runner.launch_pending(queued.pk) is False, "claimed once"
    assert runner.drain(30)
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "success"
    assert runner.dead_threads() == []


def test_launch_pending_of_a_retry_of_a_busy_task_settles_it_without_starting(runner: TaskRunner) -> None:
    TaskState.objects.filter(task_id="tick").update(running_count=1)
    queued = TaskExecutionRecord.objects.create(task_id="tick", trigger=Trigger.RETRY, status=TaskStatus.PENDING)
    assert runner.launch_pending(queued.pk) is False
    assert runner.launch_pending(10**9) is False, "a record that does not exist"
    assert TaskExecutionRecord.objects.get(pk=queued.pk).message == BUSY_MESSAGE
    assert runner.drain(0.1)  # nothing was launched


def test_launch_buffered_starts_the_kept_fire_once(runner: TaskRunner) -> None:
    services.set_options("tick", {"overlap": "buffer_one"})
    TaskState.objects.filter(task_id="tick").update(running_count=1)
    kept = run_fire(runner, "tick", datetime(2027, 1, 1, tzinfo=UTC))
    assert kept is not None and kept.status == "pending"
    assert runner.launch_buffered("tick") is False, "the task is still busy"
    TaskState.objects.filter(task_id="tick").update(running_count=0)
    assert runner.launch_buffered("tick") is True
    assert runner.drain(30)
    assert TaskExecutionRecord.objects.get(pk=kept.pk).status == "success"
    assert runner.launch_buffered("tick") is False, "nothing kept any more"


def test_interrupt_launched_settles_runs_still_going(runner: TaskRunner) -> None:
    assert runner.interrupt_launched("stopping") == 0, "nothing launched yet"
    queued = request_run("hang")
    assert runner.launch_pending(queued.pk)
    wait_for(
        lambda: runner.interrupt_launched("the scheduler stopped") == 1, timeout=10, message="the run to be in flight"
    )
    assert runner.drain(30)
    record = TaskExecutionRecord.objects.get(pk=queued.pk)
    assert (record.status, record.error) == ("interrupted", "the scheduler stopped")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # its death is the point
def test_a_dead_finisher_is_reported(runner: TaskRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler_app import faults

    assert TaskRunner().dead_threads() == [], "a runner that never ran anything"
    monkeypatch.setattr(faults, "_KILL", frozenset({"finisher"}))
    assert runner.launch_pending(request_run("tick").pk)
    wait_for(lambda: runner.dead_threads() == ["run-finisher"], timeout=30, message="the finisher to die")


def test_drain_gives_up_at_its_timeout_while_a_run_goes_on(runner: TaskRunner) -> None:
    assert runner.drain(0), "nothing launched: drained at once"
    queued = request_run("slow")  # 2.5 s
    assert runner.launch_pending(queued.pk)
    assert runner.drain(0.1) is False
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "running"
    assert runner.drain(30)
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "success"


def test_a_launched_run_that_fails_queues_its_retry(runner: TaskRunner) -> None:
    services.set_options("boom", {"max_retries": 1, "retry_delay_seconds": 60})
    queued = request_run("boom")
    assert runner.launch_pending(queued.pk)
    assert runner.drain(30)
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "failed"
    assert TaskExecutionRecord.objects.filter(retry_of_id=queued.pk, status="pending").count() == 1


def test_launched_fires_records_stay_as_begun_while_the_finisher_writes_the_outcome(runner: TaskRunner) -> None:
    config = runner.ledger.config("tick")
    [record] = runner.launch_fires([Fire(config, timezone.now().replace(microsecond=0))])
    assert record is not None
    assert runner.drain(30)
    assert TaskExecutionRecord.objects.get(pk=record.pk).status == "success"
    assert (record.status, record.finished_at) == ("running", None), "the caller's record is not the finisher's"


def test_the_process_set_on_a_runner_owns_the_runs_it_records() -> None:
    # The scheduler registers its process row after it made its runner: the records must name it,
    # or a dead process's runs cannot be found (reaping, a stopping scheduler's leftovers).
    runner = TaskRunner()
    runner.process = SchedulerProcess.objects.create(kind="scheduler", host="here", pid=1)
    record = run_fire(runner, "tick", datetime(2027, 2, 1, tzinfo=UTC))
    assert record is not None and record.worker_id == runner.process.pk


def test_outcomes_wait_while_fires_are_claimed_then_are_written(
    runner: TaskRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Claims first: in a burst, the finisher's writes and log lines made the later fires start late.
    monkeypatch.setattr(runner_module, "FINISH_MAX_DEFER_SECONDS", 60.0)
    claiming = threading.Event()
    claiming.set()
    asked = threading.Semaphore(0)

    def claims_waiting() -> bool:
        asked.release()
        return claiming.is_set()

    runner.claims_waiting = claims_waiting
    queued = request_run("tick")
    assert runner.launch_pending(queued.pk)
    wait_for(lambda: runner.in_flight() == 0, timeout=10, message="the run to end")
    for _ in range(3):  # the finisher asked, was told to wait, and asked again: it is holding the outcome
        assert asked.acquire(timeout=10), "the finisher never asked whether fires are being claimed"
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "running", "written while fires were claimed"
    claiming.clear()
    assert runner.drain(30)
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "success"


def test_outcomes_are_held_no_longer_than_the_limit(runner: TaskRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "FINISH_MAX_DEFER_SECONDS", 0.2)
    runner.claims_waiting = lambda: True  # claims that never end must not keep outcomes unwritten
    queued = request_run("tick")
    assert runner.launch_pending(queued.pk)
    assert runner.drain(30)
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "success"


def test_an_outcome_held_for_claims_is_written_before_its_tasks_next_fire_a_second_later(runner: TaskRunner) -> None:
    # Fires all over the second: claims never stop. An outcome held until the task's next fire
    # (interval 1 s, the shortest there is) kept its slot taken, and that fire was skipped as busy.
    runner.claims_waiting = lambda: True
    moment = datetime(2027, 2, 1, tzinfo=UTC)
    launched = time.monotonic()
    [first] = runner.launch_fires([Fire(runner.ledger.config("tick"), moment)])
    assert first is not None and first.status == "running"
    wait_for(lambda: runner.in_flight() == 0, timeout=10, message="the first run to end")
    time.sleep(max(0.0, launched + 1.0 - time.monotonic()))  # the next fire's time, not a wait for a state
    [second] = runner.launch_fires([Fire(runner.ledger.config("tick"), moment + timedelta(seconds=1))])
    assert second is not None and second.status == "running", second and second.message
    runner.claims_waiting = None
    assert runner.drain(30)


def test_a_failing_claims_question_writes_outcomes_at_once(
    runner: TaskRunner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner_module, "FINISH_MAX_DEFER_SECONDS", 60.0)

    def broken() -> bool:
        raise RuntimeError("no answer")

    runner.claims_waiting = broken
    queued = request_run("tick")
    assert runner.launch_pending(queued.pk)
    assert runner.drain(30), "held for the whole limit"
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "success"
    assert "asking whether fires wait to be claimed failed" in caplog.text


# -- tasks whose runs execute on a django.tasks backend's workers (README: Scaling out) ------------


class HeldRuns(RemoteExecutor):
    """A backend as the runner sees it (local=False): keeps the runs handed to it and runs none, or
    refuses them with ``error``. Without ``alias`` it is an executor that does not say its name."""

    def __init__(self, alias: str | None = "fleet", error: Exception | None = None) -> None:
        if alias is not None:
            self.alias = alias
        self.error = error
        self.submitted: list[Submission] = []

    def submit(self, run: Submission, on_settled: Callable[[RunHandle], None] | None = None) -> RunHandle:
        if self.error is not None:
            raise self.error
        self.submitted.append(run)
        return HandedOff(f"job-{run.record_id}")


@pytest.fixture
def fleet_tick() -> Iterator[str]:
    """FleetTickTask (its ``executor`` is the backend alias "fleet"), registered for the test."""
    task_registry.register(FleetTickTask)
    sync_task_rows()
    yield FleetTickTask.name
    task_registry.unregister(FleetTickTask.name)


def scheduler_with(backend: HeldRuns, default_timeout: float | None = None) -> TaskRunner:
    """A scheduler's runner whose "fleet" backend is ``backend``."""
    runner = TaskRunner(default_timeout=default_timeout)
    runner.process = SchedulerProcess.objects.create(kind="scheduler", host="here", pid=1)
    runner._backends["fleet"] = backend
    return runner


def test_a_fire_of_a_fleet_task_is_handed_to_its_backend_and_waits_queued(
    fleet_tick: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = HeldRuns()
    runner = scheduler_with(backend, default_timeout=42.0)
    [record] = runner.launch_fires([Fire(runner.ledger.config(fleet_tick), datetime(2027, 3, 1, tzinfo=UTC))])
    assert record is not None
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert (stored.status, stored.worker_id, stored.worker_label, stored.message) == (
        "queued",
        None,
        "",
        "queued on backend 'fleet'",
    )
    [run] = backend.submitted
    # The task sets no timeout: the runner's default stands in for SCHEDULER["DEFAULT_TIMEOUT"].
    assert (run.record_id, run.task, run.timeout) == (record.pk, task_registry.get(fleet_tick), 42.0)
    assert state(fleet_tick).running_count == 1, "the slot is held while the run waits for a worker"
    assert f"task fleet_tick: run {record.pk} handed to the backend 'fleet'" in caplog.messages
    assert (runner.in_flight(), runner.drain(0)) == (0, True), "nothing of it runs here"


def test_a_backend_that_does_not_say_its_name_is_named_by_a_question_mark(fleet_tick: str) -> None:
    backend = HeldRuns(alias=None)
    runner = scheduler_with(backend)
    [record] = runner.launch_fires([Fire(runner.ledger.config(fleet_tick), datetime(2027, 3, 1, tzinfo=UTC))])
    assert record is not None and [run.record_id for run in backend.submitted] == [record.pk]
    assert TaskExecutionRecord.objects.get(pk=record.pk).message == "queued on backend '?'"


def test_a_run_the_backend_refuses_fails_with_its_error_and_queues_its_retry(
    fleet_tick: str, caplog: pytest.LogCaptureFixture
) -> None:
    services.set_options(fleet_tick, {"max_retries": 1, "retry_delay_seconds": 60})
    runner = scheduler_with(HeldRuns(error=ConnectionError("redis down")))
    [record] = runner.launch_fires([Fire(runner.ledger.config(fleet_tick), datetime(2027, 3, 1, tzinfo=UTC))])
    assert record is not None
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert (stored.status, stored.message, stored.error) == (
        "failed",
        "could not hand the run to its backend",
        "ConnectionError: redis down",
    )
    assert state(fleet_tick).running_count == 0
    retry = TaskExecutionRecord.objects.get(retry_of_id=record.pk)
    assert (retry.status, retry.trigger, retry.attempt) == ("pending", "retry", 2)
    [logged] = [entry for entry in caplog.records if entry.levelname == "ERROR"]
    assert logged.getMessage() == f"task fleet_tick: run {record.pk} could not be handed to the backend 'fleet'"
    assert logged.exc_info is not None and logged.exc_info[0] is ConnectionError


def test_a_worker_runs_a_handed_off_run_here_once_and_records_it(
    fleet_tick: str, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = scheduler_with(HeldRuns())
    [record] = scheduler.launch_fires([Fire(scheduler.ledger.config(fleet_tick), datetime(2027, 3, 1, tzinfo=UTC))])
    assert record is not None
    worker = TaskRunner(process=SchedulerProcess.objects.create(kind="worker", host="w", pid=7))
    try:
        ran = worker.run_handed_off(record.pk)
        assert ran is not None and (ran.pk, ran.status, ran.message) == (record.pk, "success", "tick")
        stored = TaskExecutionRecord.objects.get(pk=record.pk)
        assert (stored.status, stored.worker_id, stored.worker_label) == (
            "success",
            worker.process.pk,
            worker.worker_label,
        )
        assert stored.data == {"pid": os.getpid()}, "its code ran in this process"
        assert (state(fleet_tick).running_count, state(fleet_tick).run_count) == (0, 1)
        assert worker.run_handed_off(record.pk) is None, "a second delivery runs nothing"
    finally:
        worker.close()
    assert TaskExecutionRecord.objects.filter(task_id=fleet_tick).count() == 1
    skipped = f"run {record.pk} is not queued any more (claimed by another delivery, or settled): skipped"
    assert skipped in caplog.messages


def test_a_fire_kept_behind_a_handed_off_run_runs_next_on_its_worker(fleet_tick: str) -> None:
    services.set_options(fleet_tick, {"overlap": "buffer_one"})
    backend = HeldRuns()
    scheduler = scheduler_with(backend)
    at = datetime(2027, 3, 1, tzinfo=UTC)
    [first] = scheduler.launch_fires([Fire(scheduler.ledger.config(fleet_tick), at)])
    [kept] = scheduler.launch_fires([Fire(scheduler.ledger.config(fleet_tick), at + timedelta(seconds=1))])
    assert first is not None and kept is not None and kept.status == "pending"
    assert [run.record_id for run in backend.submitted] == [first.pk], "the kept fire waits, not handed yet"
    worker = TaskRunner(process=SchedulerProcess.objects.create(kind="worker", host="w", pid=7))
    try:
        ran = worker.run_handed_off(first.pk)
    finally:
        worker.close()
    assert ran is not None and (ran.pk, ran.status) == (first.pk, "success")
    stored = TaskExecutionRecord.objects.get(pk=kept.pk)
    assert (stored.status, stored.worker_id, stored.worker_label) == ("success", worker.process.pk, worker.worker_label)
    assert (state(fleet_tick).running_count, state(fleet_tick).buffered_record_id) == (0, None)


# -- the runner's bookkeeping: what it says is in flight, the finisher's batches, reuse after close ------


def test_in_flight_counts_the_runs_whose_code_has_not_ended(runner: TaskRunner) -> None:
    assert runner.in_flight() == 0, "nothing launched (no executor yet)"
    queued = request_run("hang")
    assert runner.launch_pending(queued.pk)
    wait_for(lambda: runner.in_flight() == 1, timeout=10, message="the run to be in flight")
    assert runner.interrupt_launched("the scheduler stopped") == 1
    assert runner.drain(30)
    assert runner.in_flight() == 0


def test_drain_returns_at_its_timeout_while_no_run_ends(runner: TaskRunner) -> None:
    [record] = runner.launch_fires([Fire(runner.ledger.config("long"), datetime(2027, 4, 1, tzinfo=UTC))])
    assert record is not None and record.status == "running"
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(runner.drain(0.1)))
    waiter.start()
    waiter.join(timeout=10)  # the run goes on for 30 s
    assert answers == [False], "drain waited past its timeout"
    assert runner.interrupt_launched("the scheduler stopped") == 1
    assert runner.drain(30)
    waiter.join(timeout=10)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # its death is the point
def test_the_dead_threads_of_the_executor_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler_app import faults

    monkeypatch.setattr(faults, "_KILL", frozenset({"watchdog"}))
    runner = TaskRunner()
    try:
        queued = request_run("hang")  # its 1 s timeout wakes the pool's watchdog, which dies
        assert runner.launch_pending(queued.pk)
        wait_for(lambda: runner.dead_threads() != [], timeout=30, message="the watchdog to die")
        [dead] = runner.dead_threads()
        assert dead.endswith("-watchdog"), dead
    finally:
        runner.interrupt_launched("the test ended")
        runner.drain(30)
        runner.close()


def test_the_finisher_never_keeps_the_process_alive(runner: TaskRunner) -> None:
    assert runner.launch_pending(request_run("tick").pk)
    finishers = [thread for thread in threading.enumerate() if thread.name == "run-finisher"]
    assert finishers and all(thread.daemon for thread in finishers)
    assert runner.drain(30)


class RefusingPool(HeldRuns):
    """An executor that cannot take a run (e.g. closed): its submit raises."""

    def __init__(self) -> None:
        super().__init__(error=RuntimeError("the pool is closed"))


def test_a_run_the_executor_refuses_fails_with_the_reason_instead_of_staying_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    services.set_options("tick", {"max_retries": 1, "retry_delay_seconds": 60})
    runner = TaskRunner(executor=RefusingPool())
    queued = request_run("tick")
    assert runner.launch_pending(queued.pk) is False, "claimed, but its code never started"
    assert runner.drain(0), "no outcome to wait for"
    record = TaskExecutionRecord.objects.get(pk=queued.pk)
    assert (record.status, record.message, record.error) == (
        "failed",
        "its code could not be started",
        "RuntimeError: the pool is closed",
    )
    assert state("tick").running_count == 0, "its slot is free again"
    assert TaskExecutionRecord.objects.filter(retry_of_id=queued.pk, status="pending").count() == 1
    assert f"task tick: run {queued.pk} could not be started" in caplog.text
    runner.close()


def test_a_fire_whose_code_is_gone_fails_alone_and_the_rest_of_its_chunk_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The fires of a burst go to the pool together; "boom" is configured but not in this runner's
    # registry (its code was removed), so its submission cannot be made.
    registry = TaskRegistry()
    registry.register(TickTask)
    runner = TaskRunner(registry)
    at = datetime(2027, 5, 1, tzinfo=UTC)
    boom, tick = runner.launch_fires([Fire(runner.ledger.config(name), at) for name in ("boom", "tick")])
    assert boom is not None and tick is not None
    assert runner.drain(30)
    boom.refresh_from_db()
    tick.refresh_from_db()
    assert (boom.status, boom.message) == ("failed", "its code could not be started")
    assert "boom" in boom.error
    assert tick.status == "success"
    assert state("boom").running_count == 0, "its slot is free again"
    assert f"task boom: run {boom.pk} could not be started" in caplog.text
    runner.close()


def test_outcomes_settled_within_the_window_are_written_as_one_batch(
    runner: TaskRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wide window: the second run ends within it for sure; the stop below ends the window.
    monkeypatch.setattr(runner_module, "FINISH_BATCH_SECONDS", 60.0)
    batches: list[set[str]] = []
    runner.on_runs_ended = batches.append
    for name in ("tick", "boom"):
        assert runner.launch_pending(request_run(name).pk)
        wait_for(lambda: runner.in_flight() == 0, timeout=10, message=f"the run of {name} to end")
    runner.close()  # a stop writes what the finisher holds at once
    assert batches == [{"tick", "boom"}]
    assert set(TaskExecutionRecord.objects.values_list("status", flat=True)) == {"success", "failed"}


def test_a_closed_runner_runs_and_records_again() -> None:
    runner = TaskRunner()
    try:
        assert run_queued(runner, request_run("tick").pk) is not None
        runner.close()
        for _ in range(2):  # the second outcome needs the finisher after the first
            record = run_queued(runner, request_run("tick").pk)
            assert record is not None and record.status == "success"
        assert runner.dead_threads() == []
    finally:
        runner.close()


def _a_fire_kept_behind_held_outcomes(
    runner: TaskRunner, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, int]:
    """Two ended runs whose outcomes the finisher holds (as while fires are claimed), in this order: one
    of "boom" (no buffer), one of "tick" (``buffer_one``) with a fire kept behind it. Clear the event to let
    the finisher write them as one batch. Returns the event and the kept fire's record id."""
    monkeypatch.setattr(runner_module, "FINISH_MAX_DEFER_SECONDS", 60.0)
    holding = threading.Event()
    holding.set()
    runner.claims_waiting = holding.is_set
    assert runner.launch_pending(request_run("boom").pk)
    wait_for(lambda: runner.in_flight() == 0, timeout=10, message="the run of boom to end")
    config = services.set_options("tick", {"overlap": "buffer_one"})
    at = datetime(2027, 5, 1, tzinfo=UTC)
    [running] = runner.launch_fires([Fire(config, at)])
    [kept] = runner.launch_fires([Fire(config, at + timedelta(seconds=1))])
    assert running is not None and running.status == "running" and kept is not None and kept.status == "pending"
    wait_for(lambda: runner.in_flight() == 0, timeout=10, message="the run of tick to end")
    return holding, kept.pk


def test_the_fire_kept_behind_a_run_starts_once_its_outcome_is_written(
    runner: TaskRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    holding, kept = _a_fire_kept_behind_held_outcomes(runner, monkeypatch)
    holding.clear()
    assert runner.drain(30)
    assert TaskExecutionRecord.objects.get(pk=kept).status == "success"
    assert (state("tick").running_count, state("tick").buffered_record_id) == (0, None)


def test_a_stopping_runner_leaves_the_kept_fire_for_the_next_scheduler(
    runner: TaskRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    holding, kept = _a_fire_kept_behind_held_outcomes(runner, monkeypatch)
    runner.cancel.set()
    holding.clear()
    assert runner.drain(30)
    assert TaskExecutionRecord.objects.get(pk=kept).status == "pending"
    assert (state("tick").running_count, state("tick").buffered_record_id) == (0, kept)


def test_a_kept_fire_that_cannot_start_after_its_run_is_logged(
    runner: TaskRunner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    holding, kept = _a_fire_kept_behind_held_outcomes(runner, monkeypatch)

    def refused(config: object) -> None:
        raise RuntimeError("the database refused the claim")

    monkeypatch.setattr(runner.ledger, "claim_buffered", refused)
    holding.clear()
    assert runner.drain(30)
    [logged] = [entry for entry in caplog.records if "buffered fire" in entry.getMessage()]
    assert (logged.levelname, logged.getMessage()) == ("ERROR", "task tick: could not start its buffered fire yet")
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError
    assert runner.dead_threads() == [], "the finisher goes on"
    assert TaskExecutionRecord.objects.get(pk=kept).status == "pending", "not lost: the next look starts it"


@pytest.mark.fleet
def test_a_fleet_tasks_run_is_enqueued_on_the_backend_its_executor_names(fleet_tick: str) -> None:
    from django_tasks_db.models import DBTaskResult

    runner = TaskRunner()  # no backend set by hand: the runner makes the "fleet" one (settings.TASKS)
    [record] = runner.launch_fires([Fire(runner.ledger.config(fleet_tick), datetime(2027, 3, 1, tzinfo=UTC))])
    assert record is not None
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert (stored.status, stored.message) == ("queued", "queued on backend 'fleet'")
    [job] = DBTaskResult.objects.all()
    assert (job.backend_name, job.args_kwargs["args"]) == ("fleet", [record.pk])
    assert (runner.in_flight(), runner.drain(0)) == (0, True), "nothing of it runs here"


# -- run_now: the trigger_task command's run, waited for in the caller's thread -------------------


def test_run_now_records_who_asked_and_from_where() -> None:
    from django.contrib.auth.models import User

    operator = User.objects.create_user("operator")
    record = TaskRunner().run_now("tick", user=operator, origin="admin")
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert (stored.status, stored.triggered_by_id, stored.origin) == ("success", operator.pk, "admin")


def test_run_now_runs_the_fire_kept_behind_it_next() -> None:
    runner = TaskRunner()
    services.set_options("tick", {"overlap": "buffer_one"})
    TaskState.objects.filter(task_id="tick").update(running_count=1)
    [kept] = runner.launch_fires([Fire(runner.ledger.config("tick"), datetime(2027, 6, 1, tzinfo=UTC))])
    assert kept is not None and kept.status == "pending"
    # The run it waited behind ended without starting it (its scheduler stopped, say).
    TaskState.objects.filter(task_id="tick").update(running_count=0)
    record = runner.run_now("tick")
    assert TaskExecutionRecord.objects.get(pk=record.pk).status == "success"
    assert TaskExecutionRecord.objects.get(pk=kept.pk).status == "success", "run next, in this thread"
    assert (state("tick").running_count, state("tick").buffered_record_id) == (0, None)


def test_a_run_now_ends_interrupted_when_its_runner_is_stopped() -> None:
    runner = TaskRunner()
    ended: list[TaskExecutionRecord] = []
    caller = threading.Thread(target=lambda: ended.append(runner.run_now("long")))
    caller.start()
    try:
        wait_for(lambda: runner.in_flight() == 1, timeout=10, message="the run to start")
        runner.cancel.set()
        caller.join(timeout=30)
        assert ended, "run_now still waits for a run its runner gave up"
        stored = TaskExecutionRecord.objects.get(pk=ended[0].pk)
        assert (stored.status, stored.error) == ("interrupted", "the scheduler stopped before the run finished")
    finally:
        runner.cancel.set()
        caller.join(timeout=30)
        runner.close()


def test_a_failing_on_runs_ended_is_logged_and_the_finisher_goes_on(
    runner: TaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    def on_runs_ended(names: set[str]) -> None:
        raise RuntimeError("the scheduler is gone")

    runner.on_runs_ended = on_runs_ended
    for _ in range(2):
        queued = request_run("tick")
        assert run_queued(runner, queued.pk) is not None

    def logged() -> list[Any]:
        return [entry for entry in caplog.records if "run(s) ended" in entry.getMessage()]

    # Told after the outcome is written (and drain returned): the second line comes a moment later.
    wait_for(lambda: len(logged()) == 2, timeout=10, message="both failures logged")
    assert [(entry.levelname, entry.getMessage()) for entry in logged()] == [
        ("ERROR", "telling the scheduler that 1 run(s) ended failed")
    ] * 2
    assert all(entry.exc_info is not None and entry.exc_info[0] is RuntimeError for entry in logged())
    assert runner.dead_threads() == []


def test_outcomes_that_cannot_be_written_while_stopping_are_logged(
    runner: TaskRunner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from django.db import OperationalError
    from django.db.backends.signals import connection_created

    monkeypatch.setattr(runner_module, "FINISH_MAX_DEFER_SECONDS", 60.0)
    holding = threading.Event()
    holding.set()
    runner.claims_waiting = holding.is_set
    queued = request_run("tick")
    assert runner.launch_pending(queued.pk)
    wait_for(lambda: runner.in_flight() == 0, timeout=10, message="the run to end")
    runner.cancel.set()  # stopping: the finisher does not wait for the database to come back

    # The outage, on any database: the finisher's connection refuses every write.
    def database_down(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith(("UPDATE", "INSERT")):
            raise OperationalError("the database is unreachable")
        return execute(sql, params, many, context)

    def refuse_the_finishers_writes(sender: object, connection: Any, **kwargs: object) -> None:
        if threading.current_thread().name == "run-finisher":
            connection.execute_wrappers.append(database_down)

    connection_created.connect(refuse_the_finishers_writes)
    try:
        holding.clear()
        assert runner.drain(30)
    finally:
        connection_created.disconnect(refuse_the_finishers_writes)
    [logged] = [entry for entry in caplog.records if entry.getMessage().startswith("could not record")]
    assert logged.getMessage() == "could not record the outcome of 1 run(s); they stay `running` until reaped"
    assert logged.exc_info is not None and logged.exc_info[0] is OperationalError
    assert TaskExecutionRecord.objects.get(pk=queued.pk).status == "running"


def test_a_burst_the_executor_refuses_leaves_no_fire_running() -> None:
    runner = TaskRunner(executor=RefusingPool())
    start = timezone.now().replace(microsecond=0)
    config = runner.ledger.config("tick")
    records = runner.launch_fires([Fire(config, start), Fire(runner.ledger.config("nightly"), start)])
    assert all(record is not None for record in records)
    stored = TaskExecutionRecord.objects.filter(pk__in=[r.pk for r in records if r is not None])
    assert sorted(stored.values_list("status", flat=True)) == ["failed", "failed"], "every fire of the burst settled"
    assert [r.status for r in records if r is not None] == ["running", "running"], "the caller's records as begun"
    runner.close()


def test_a_failing_run_started_receiver_does_not_keep_a_burst_from_running(
    runner: TaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: object, **kwargs: object) -> None:
        raise RuntimeError("receiver bug")

    signals.run_started.connect(broken)
    try:
        start = timezone.now().replace(microsecond=0)
        records = runner.launch_fires([Fire(runner.ledger.config(name), start) for name in ("tick", "nightly")])
    finally:
        signals.run_started.disconnect(broken)
    assert runner.drain(30)
    ids = [record.pk for record in records if record is not None]
    assert len(ids) == 2
    assert set(TaskExecutionRecord.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"success"}
    assert caplog.text.count("a run_started receiver failed") == 2


def test_an_outcome_that_cannot_be_written_yet_is_written_once_the_database_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from django.db import OperationalError, connection

    refused: list[str] = []
    errors = [OperationalError("database is locked\nmore detail"), OperationalError()]

    def first_outcome_writes_fail(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if many and errors:  # the outcome's writes are the only executemany of a run
            refused.append(sql)
            raise errors.pop(0)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(first_outcome_writes_fail):
        record = TaskRunner().run_now("tick")
    assert len(refused) == 2, "the first two writes were refused"
    assert record.status == "success"
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert stored.status == "success" and state("tick").running_count == 0 and state("tick").run_count == 1
    assert [entry.getMessage() for entry in caplog.records if entry.levelname == "WARNING"] == [
        "cannot record the outcome of 1 run(s) yet (database is locked); retrying in 0.5s",
        "cannot record the outcome of 1 run(s) yet (OperationalError); retrying in 1.0s",
    ]


def test_a_failure_and_its_retry_are_written_together_or_waited_for_together(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused retry is not lost: the failure is not committed without it, and both are written
    once the database takes them (before: the failure was committed and the retry dropped)."""
    from django.db import connection

    services.set_options("boom", {"max_retries": 1})
    refused = RetryInsertsRefused(times=1)
    with connection.execute_wrapper(refused):
        record = TaskRunner().run_now("boom")
    assert refused.refused == 1, "the retry's insert was refused once"
    assert record.status == "failed" and TaskExecutionRecord.objects.get(pk=record.pk).status == "failed"
    [retry] = TaskExecutionRecord.objects.filter(trigger="retry")
    assert retry.retry_of_id == record.pk and retry.status == "pending" and retry.attempt == 2
    assert state("boom").fail_count == 1, "the failure counted once, not once per try"
    waits = [entry.getMessage() for entry in caplog.records if entry.getMessage().startswith("cannot record")]
    assert waits == ["cannot record the outcome of 1 run(s) yet (disk I/O error); retrying in 0.5s"]


def test_a_retry_that_cannot_be_planned_is_logged_and_the_outcome_is_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A value stored before its bound existed costs the retry, never the outcome."""
    services.set_options("boom", {"max_retries": 1})
    TaskConfig.objects.filter(pk="boom").update(options_override={"max_retries": 1, "retry_delay_seconds": "soon"})
    record = TaskRunner().run_now("boom")
    assert TaskExecutionRecord.objects.get(pk=record.pk).status == "failed"
    assert not TaskExecutionRecord.objects.filter(trigger="retry").exists()
    [logged] = [entry for entry in caplog.records if entry.levelname == "ERROR"]
    assert logged.getMessage() == f"task boom: run {record.pk} failed; its retry could not be planned"
    assert logged.exc_info is not None and logged.exc_info[0] is ValueError


class SettledByHand(RemoteExecutor):
    """A local executor that runs no code: the test settles each run, in its own thread, when it says."""

    local = True

    def __init__(self) -> None:
        self.runs: list[Execution] = []
        self.submitted: list[Submission] = []

    def submit(self, run: Submission, on_settled: Callable[[RunHandle], None] | None = None) -> RunHandle:
        execution = Execution(run.task, run.timeout, on_settled)
        self.runs.append(execution)
        self.submitted.append(run)
        return execution


def test_a_batch_writes_each_runs_own_start_and_a_dropped_outcome_keeps_no_later_retry(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner_module, "FINISH_BATCH_SECONDS", 60.0)  # one batch: the stop below ends it
    services.set_options("boom", {"max_retries": 1, "retry_delay_seconds": 60})
    pool = SettledByHand()
    runner = TaskRunner(executor=pool)
    queued = {name: request_run(name) for name in ("tick", "boom", "slow")}
    for record in queued.values():
        assert runner.launch_pending(record.pk)
    reaped, failed, never_began = pool.runs
    assert [(run.record_id, run.task.name) for run in pool.submitted] == [(r.pk, r.task_id) for r in queued.values()]
    claimed_at = TaskExecutionRecord.objects.get(pk=queued["slow"].pk).started_at
    TaskRunner().interrupt([TaskExecutionRecord.objects.get(pk=queued["tick"].pk)], "reaped")
    began = timezone.now() + timedelta(seconds=5)  # its code began well after its claim (a busy pool)
    failed.started_at = began
    reaped.settle(Outcome(TaskStatus.SUCCESS))
    failed.settle(Outcome(TaskStatus.FAILED, error="ValueError: boom"))
    never_began.settle(Outcome(TaskStatus.INTERRUPTED, message="interrupted", error="stopped"))
    runner.close()  # the finisher writes what it holds, in one batch
    stored = {r.task_id: r for r in TaskExecutionRecord.objects.filter(pk__in=[r.pk for r in queued.values()])}
    assert {name: r.status for name, r in stored.items()} == {
        "tick": "interrupted",
        "boom": "failed",
        "slow": "interrupted",
    }
    assert stored["boom"].started_at == began, "when the code began, not when the run was claimed"
    assert claimed_at is not None and stored["slow"].started_at == claimed_at, "code that never began: its claim"
    assert TaskExecutionRecord.objects.filter(retry_of_id=queued["boom"].pk, status="pending").count() == 1
    assert [entry.getMessage() for entry in caplog.records if entry.levelname == "ERROR"] == [], (
        "nobody to tell: no error"
    )


class RunnerOnlyTask(BaseTask):
    """Registered in one runner's own registry only."""

    name = "runner_only"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60)

    def run(self) -> TaskResult:
        return TaskResult.success("ran from its own registry")


def test_a_runner_with_its_own_registry_records_and_runs_its_tasks() -> None:
    from scheduler_app.registry import TaskRegistry

    registry = TaskRegistry()
    registry.register(RunnerOnlyTask)
    runner = TaskRunner(registry=registry)
    try:
        record = runner.run_now("runner_only")  # its row is made from this registry on first use
    finally:
        runner.close()
    assert (record.status, record.message) == ("success", "ran from its own registry")
    assert TaskExecutionRecord.objects.get(pk=record.pk).task_id == "runner_only"
