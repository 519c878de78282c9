"""The ledger: the one writer of runs' records and state, and its transitions."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.db.models.signals import post_init
from django.utils import timezone

from scheduler_app import services, signals
from scheduler_app.ledger import (
    ALREADY_BUFFERED_MESSAGE,
    BUFFERED_MESSAGE,
    BUSY_MESSAGE,
    DISABLED_RETRY_MESSAGE,
    Fire,
    Ledger,
    MissedFire,
    RunOutcome,
    clone_record,
)
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord, TaskState, Trigger
from scheduler_app.registry import TaskRegistry
from scheduler_app.services import sync_task_rows
from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule, TaskStatus
from tests.runs import RetryInsertsRefused, assert_holds_outcome

APP = Path(__file__).resolve().parent.parent / "scheduler_app"
# The modules allowed to write runs: the ledger and the SQL statements only it calls.
WRITERS = {"ledger.py", "records.py"}
WRITE_METHODS = {
    "create",
    "update",
    "delete",
    "save",
    "bulk_create",
    "bulk_update",
    "get_or_create",
    "update_or_create",
}
RUN_STATE_FIELDS = {
    "running_count",
    "run_count",
    "fail_count",
    "consecutive_failures",
    "last_result",
    "last_run_at",
    "last_finished_at",
    "last_success_at",
    "buffered_record_id",
}
RECORD_WRITE_FUNCTIONS = {"begin_scheduled", "claim_slots", "finish_runs", "record_missed"}


def _writes_in(path: Path) -> list[str]:
    """Writes of run records or of a task's run state found in one module's source."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "scheduler_app.records":
            found += [f"imports {alias.name}" for alias in node.names if alias.name in RECORD_WRITE_FUNCTIONS]
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in WRITE_METHODS:
            continue
        chain = ast.unparse(node.func.value)
        keywords = {keyword.arg for keyword in node.keywords}
        if "TaskExecutionRecord" in chain or ("TaskState" in chain and keywords & RUN_STATE_FIELDS):
            found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_only_the_ledger_writes_runs() -> None:
    offenders = {
        str(path.relative_to(APP)): writes
        for path in sorted(APP.rglob("*.py"))
        if path.name not in WRITERS and "migrations" not in path.parts and (writes := _writes_in(path))
    }
    assert offenders == {}


def test_the_rule_finds_a_write_outside_the_ledger(tmp_path: Path) -> None:
    # The check above would pass vacuously if it could not see a write: here it must.
    module = tmp_path / "stray.py"
    module.write_text(
        "from scheduler_app.records import finish_runs\n"
        "TaskExecutionRecord.objects.filter(pk=1).update(status='skipped')\n"
        "TaskState.objects.filter(task_id='x').update(running_count=0)\n"
        "TaskState.objects.filter(task_id='x').update(next_run_at=None)\n"
    )
    assert [write.split(":")[0] for write in _writes_in(module)] == ["imports finish_runs", "line 2", "line 3"]


HAND_OFF_FAILED = "could not hand the run to its backend"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def rows() -> None:
    sync_task_rows()


def test_skip_queued_settles_only_a_queued_run_and_announces_it() -> None:
    ledger = Ledger()
    queued = ledger.queue_manual("tick", origin="api")
    finished: list[int] = []

    def receiver(sender: object, record: TaskExecutionRecord, **kwargs: object) -> None:
        finished.append(record.pk)

    signals.run_finished.connect(receiver)
    try:
        assert ledger.skip_queued(queued.pk, "skipped: no longer wanted") is True
        assert ledger.skip_queued(queued.pk, "again") is False, "only a pending run is skipped"
    finally:
        signals.run_finished.disconnect(receiver)
    stored = TaskExecutionRecord.objects.get(pk=queued.pk)
    assert (stored.status, stored.message, stored.duration_seconds) == ("skipped", "skipped: no longer wanted", 0.0)
    assert stored.started_at == stored.finished_at is not None
    assert finished == [queued.pk]


def test_a_queued_manual_run_records_who_and_where() -> None:
    record = Ledger().queue_manual("tick", origin="admin")
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert (stored.trigger, stored.status, stored.origin, stored.triggered_by) == ("manual", "pending", "admin", None)


def _running(task: str, **fields: Any) -> TaskExecutionRecord:
    """A run in flight, as a claim leaves it."""
    fields.setdefault("trigger", Trigger.SCHEDULED)
    return TaskExecutionRecord.objects.create(
        task_id=task, status=TaskStatus.RUNNING, started_at=timezone.now(), **fields
    )


def _end(
    ledger: Ledger, config: TaskConfig, record: TaskExecutionRecord, status: TaskStatus
) -> TaskExecutionRecord | None:
    """End ``record`` with ``status`` as the runner does; the retry written with it, if any."""
    newest = TaskExecutionRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    assert ledger.finish([(record, _outcome(record, status, 0.0))], [config]) == [True]
    return TaskExecutionRecord.objects.filter(pk__gt=newest, trigger=Trigger.RETRY).first()


def test_a_retry_is_queued_only_for_a_failure_within_max_retries() -> None:
    config = services.set_options("boom", {"max_retries": 1, "retry_backoff": "fixed", "retry_delay_seconds": 60})
    ledger = Ledger()
    assert _end(ledger, config, _running("boom"), TaskStatus.SKIPPED) is None, "a skipped run is not a failure"
    failed = _running("boom")
    retry = _end(ledger, config, failed, TaskStatus.FAILED)
    assert retry is not None and (retry.attempt, retry.retry_of_id, retry.trigger) == (2, failed.pk, "retry")
    assert 55 < (retry.scheduled_at - timezone.now()).total_seconds() <= 60
    failed_again = _running("boom", trigger=Trigger.RETRY, attempt=2, retry_of=failed)
    assert _end(ledger, config, failed_again, TaskStatus.TIMEOUT) is None, "max_retries reached"


def test_a_queued_retry_of_a_disabled_task_is_skipped_not_claimed() -> None:
    retry = TaskExecutionRecord.objects.create(task_id="tick", trigger=Trigger.RETRY, status=TaskStatus.PENDING)
    services.disable_task("tick")
    assert Ledger().claim_queued(retry.pk) is None
    stored = TaskExecutionRecord.objects.get(pk=retry.pk)
    assert (stored.status, stored.message) == ("skipped", DISABLED_RETRY_MESSAGE)
    assert TaskState.objects.get(task_id="tick").running_count == 0


def test_prune_deletes_finished_records_before_the_cutoff_in_batches() -> None:
    now = timezone.now()
    old = [
        TaskExecutionRecord.objects.create(task_id="tick", trigger=Trigger.SCHEDULED, status=status).pk
        for status in ("success", "failed", "missed", "success", "skipped")
    ]
    open_work = [
        TaskExecutionRecord.objects.create(task_id="tick", trigger=Trigger.SCHEDULED, status=status).pk
        for status in ("running", "pending")
    ]
    TaskExecutionRecord.objects.filter(pk__in=old + open_work).update(created_at=now - timedelta(days=2))
    recent = TaskExecutionRecord.objects.create(task_id="tick", trigger=Trigger.SCHEDULED, status="success").pk
    assert Ledger.prune(now - timedelta(days=1), batch_size=2) == 5
    assert set(TaskExecutionRecord.objects.values_list("pk", flat=True)) == {*open_work, recent}


# -- runs handed to a backend's workers (README: Scaling out) --------------------------------------


def _handed_off(ledger: Ledger) -> TaskExecutionRecord:
    config = ledger.config("tick")
    record = ledger.record_fires([Fire(config, timezone.now().replace(microsecond=0))])[0]
    assert record is not None and record.status == TaskStatus.RUNNING
    assert ledger.hand_off(record.pk, "fleet") is True
    return TaskExecutionRecord.objects.get(pk=record.pk)


def test_a_handed_off_run_is_queued_with_its_slot_held_and_claimed_by_one_worker_only() -> None:
    record = _handed_off(Ledger(worker_label="scheduler:1"))
    assert (record.status, record.worker_id, record.worker_label) == ("queued", None, "")
    assert record.message == "queued on backend 'fleet'"
    assert TaskState.objects.get(task_id="tick").running_count == 1, "the slot stays taken while queued"
    claimed = Ledger(worker_label="worker-a:7").claim_handed_off(record.pk)
    assert claimed is not None
    config, running = claimed
    assert config.name == "tick"
    assert (running.status, running.worker_label, running.message) == ("running", "worker-a:7", "")
    assert Ledger(worker_label="worker-b:8").claim_handed_off(record.pk) is None, "a second delivery runs nothing"
    assert Ledger().hand_off(record.pk, "fleet") is False, "only a run claimed here can be handed off"
    assert TaskExecutionRecord.objects.get(pk=record.pk).worker_label == "worker-a:7"


def test_a_run_that_cannot_be_handed_off_fails_and_frees_its_task() -> None:
    ledger = Ledger()
    record = _handed_off(ledger)
    assert ledger.fail_unstarted(record, "InvalidTaskBackend: nowhere", HAND_OFF_FAILED) is True
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert (stored.status, stored.error) == ("failed", "InvalidTaskBackend: nowhere")
    assert TaskState.objects.get(task_id="tick").running_count == 0
    assert ledger.fail_unstarted(record, "again", HAND_OFF_FAILED) is False, "an ended run keeps its outcome"


def test_a_run_queued_too_long_is_missed_frees_its_task_and_is_never_claimed() -> None:
    ledger = Ledger()
    record = _handed_off(ledger)
    fresh = _handed_off_later(ledger)
    TaskExecutionRecord.objects.filter(pk=record.pk).update(started_at=timezone.now() - timedelta(seconds=120))
    assert ledger.expire_queued(60) == 1
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert stored.status == "missed"
    assert stored.message.startswith("missed: queued on backend 'fleet' for 12")
    assert stored.message.endswith("s and no worker took it (SCHEDULER['FLEET_QUEUE_MAX_WAIT'] is 60s)")
    assert TaskExecutionRecord.objects.get(pk=fresh.pk).status == "queued", "a run within the wait stays queued"
    assert Ledger().claim_handed_off(record.pk) is None
    assert TaskState.objects.get(task_id="tick").running_count == 1, "only the expired run's slot is freed"


def _handed_off_later(ledger: Ledger) -> TaskExecutionRecord:
    """A second fire of "tick" handed off while the first is queued (tick allows no overlap: claim by hand)."""
    config = services.set_options("tick", {"overlap": "allow"})
    record = ledger.record_fires([Fire(config, timezone.now().replace(microsecond=0) + timedelta(seconds=5))])[0]
    assert record is not None and record.status == TaskStatus.RUNNING
    assert ledger.hand_off(record.pk, "fleet")
    return record


def test_a_claimed_fire_is_announced_to_run_started_receivers_with_its_task() -> None:
    heard: list[tuple[int, str]] = []

    def receiver(sender: object, record: TaskExecutionRecord, task: object, **kwargs: object) -> None:
        heard.append((record.pk, type(task).__name__))

    ledger = Ledger()
    signals.run_started.connect(receiver)
    try:
        record = ledger.record_fires([Fire(ledger.config("tick"), timezone.now().replace(microsecond=0))])[0]
    finally:
        signals.run_started.disconnect(receiver)
    assert record is not None and record.status == TaskStatus.RUNNING
    assert heard == [(record.pk, type(ledger.registry.get("tick")).__name__)]


def test_a_fires_record_is_its_row_as_stored_whether_or_not_init_signals_are_heard() -> None:
    ledger = Ledger(worker_label="scheduler:1")
    initialised: list[TaskExecutionRecord] = []

    def heard(sender: object, instance: TaskExecutionRecord, **kwargs: object) -> None:
        initialised.append(instance)

    start = timezone.now().replace(microsecond=0)
    built = [ledger.record_fires([Fire(ledger.config("tick"), start)])[0]]
    post_init.connect(heard, sender=TaskExecutionRecord)
    try:
        built.append(ledger.record_fires([Fire(ledger.config("tick"), start + timedelta(seconds=1))])[0])
    finally:
        post_init.disconnect(heard, sender=TaskExecutionRecord)
    assert built[1] in initialised, "a listener of post_init sees the record built"
    columns = {field.attname for field in TaskExecutionRecord._meta.concrete_fields}
    assert set(vars(built[0])) - {"_state"} == columns, "built without __init__: exactly its columns"
    for record in built:
        assert record is not None and record._state.adding is False
        stored = TaskExecutionRecord.objects.get(pk=record.pk)
        for field in TaskExecutionRecord._meta.concrete_fields:
            assert getattr(record, field.attname) == getattr(stored, field.attname), field.attname


def test_a_cloned_record_changes_apart_from_its_original() -> None:
    ledger = Ledger(worker_label="scheduler:1")
    record = ledger.record_fires([Fire(ledger.config("tick"), timezone.now().replace(microsecond=0))])[0]
    assert record is not None
    clone = clone_record(record)
    assert clone is not record and clone.pk == record.pk and clone.task == record.task
    clone.status, clone.message = TaskStatus.SUCCESS, "done"
    clone.task = None  # type: ignore[assignment]
    assert (record.status, record.message, record.task_id) == (TaskStatus.RUNNING, "", "tick")
    assert clone._state.adding is False and clone._state.fields_cache is not record._state.fields_cache


# -- the fleet's transitions, field by field: what the scheduler, a worker and the admin read ---------


def _fires_handed_off(ledger: Ledger, count: int) -> list[TaskExecutionRecord]:
    """``count`` fires of "tick" (overlap allowed, so each claims a slot of its own) handed to "fleet"."""
    config = services.set_options("tick", {"overlap": "allow"})
    start = timezone.now().replace(microsecond=0)
    records = ledger.record_fires([Fire(config, start + timedelta(seconds=i)) for i in range(count)])
    for record in records:
        assert record is not None and ledger.hand_off(record.pk, "fleet"), record
    return [TaskExecutionRecord.objects.get(pk=record.pk) for record in records if record is not None]


@pytest.fixture
def heard_finished() -> Iterator[list[tuple[int, str]]]:
    """The (record id, status) of each run_finished sent during the test."""
    heard: list[tuple[int, str]] = []

    def receiver(sender: object, record: TaskExecutionRecord, **kwargs: object) -> None:
        heard.append((record.pk, record.status))

    signals.run_finished.connect(receiver)
    yield heard
    signals.run_finished.disconnect(receiver)


def test_hand_off_queues_only_this_processs_running_record_and_clears_its_worker() -> None:
    process = SchedulerProcess.objects.create(kind="scheduler", host="here", pid=1)
    ledger = Ledger(process=process, worker_label="here:1")
    config = services.set_options("tick", {"overlap": "allow"})
    start = timezone.now().replace(microsecond=0)
    first, second = ledger.record_fires([Fire(config, start), Fire(config, start + timedelta(seconds=1))])
    assert first is not None and second is not None
    assert Ledger(worker_label="here:1").hand_off(first.pk, "fleet") is False, "another process's ledger"
    assert ledger.hand_off(first.pk, "fleet") is True
    handed = TaskExecutionRecord.objects.get(pk=first.pk)
    assert (handed.status, handed.worker_id, handed.worker_label) == ("queued", None, "")
    assert handed.message == "queued on backend 'fleet'"
    untouched = TaskExecutionRecord.objects.get(pk=second.pk)
    assert (untouched.status, untouched.worker_id, untouched.worker_label, untouched.message) == (
        "running",
        process.pk,
        "here:1",
        "",
    ), "only the record named is handed off"
    # A run of ours that ended (here: the reaper's verdict) is not handed to anyone.
    assert ledger.interrupt([untouched], "the scheduler stopped") == 1
    assert ledger.hand_off(second.pk, "fleet") is False
    assert TaskExecutionRecord.objects.get(pk=second.pk).status == "interrupted"
    assert TaskState.objects.get(task_id="tick").running_count == 1, "the queued run keeps its slot"


def test_a_worker_claims_a_handed_off_run_as_its_own_starting_now() -> None:
    record = _handed_off(Ledger(worker_label="here:1"))
    # Handed off a minute ago: the run starts when a worker takes it, not when it was queued.
    TaskExecutionRecord.objects.filter(pk=record.pk).update(started_at=timezone.now() - timedelta(seconds=60))
    worker = SchedulerProcess.objects.create(kind="worker", host="w", pid=7)
    started: list[int] = []

    def receiver(sender: object, record: TaskExecutionRecord, **kwargs: object) -> None:
        started.append(record.pk)

    before = timezone.now()
    signals.run_started.connect(receiver)
    try:
        claimed = Ledger(process=worker, worker_label="w:7").claim_handed_off(record.pk)
    finally:
        signals.run_started.disconnect(receiver)
    assert claimed is not None
    config, running = claimed
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert (config.name, stored.status, stored.worker_id, stored.worker_label, stored.message) == (
        "tick",
        "running",
        worker.pk,
        "w:7",
        "",
    )
    assert stored.started_at is not None and stored.started_at >= before
    assert (running.pk, running.started_at, running.worker_id) == (record.pk, stored.started_at, worker.pk)
    assert started == [record.pk]
    assert TaskState.objects.get(task_id="tick").running_count == 1
    assert Ledger(process=worker, worker_label="w:7").claim_handed_off(record.pk) is None, "claimed once"
    ended = _handed_off_later(Ledger())
    assert Ledger().fail_unstarted(ended, "ConnectionError: down", HAND_OFF_FAILED)
    assert Ledger(process=worker, worker_label="w:7").claim_handed_off(ended.pk) is None, "a settled run"


def test_a_failed_hand_off_ends_the_run_now_keeping_when_it_began(heard_finished: list[tuple[int, str]]) -> None:
    ledger = Ledger()
    record, other = _fires_handed_off(ledger, 2)
    began = timezone.now() - timedelta(seconds=30)
    TaskExecutionRecord.objects.filter(pk=record.pk).update(started_at=began)
    record.refresh_from_db()
    before = timezone.now()
    assert ledger.fail_unstarted(record, "ConnectionError: redis down", HAND_OFF_FAILED) is True
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert (stored.status, stored.message, stored.error, stored.data) == (
        "failed",
        "could not hand the run to its backend",
        "ConnectionError: redis down",
        {},
    )
    assert (stored.started_at, stored.duration_seconds) == (began, 0.0)
    assert stored.finished_at is not None and stored.finished_at >= before
    assert record.status == "failed", "the caller's record is read back"
    assert TaskExecutionRecord.objects.get(pk=other.pk).status == "queued", "only that run"
    assert TaskState.objects.get(task_id="tick").running_count == 1, "its slot is freed, the other's held"
    assert heard_finished == [(record.pk, "failed")]
    assert ledger.fail_unstarted(record, "again", HAND_OFF_FAILED) is False
    assert heard_finished == [(record.pk, "failed")], "an ended run is not announced again"


def test_a_run_that_could_not_start_fails_with_its_retry_in_one_write() -> None:
    config = services.set_options("tick", {"max_retries": 1, "retry_backoff": "fixed", "retry_delay_seconds": 30})
    ledger = Ledger()
    record, other = _fires_handed_off(ledger, 2)
    with connection.execute_wrapper(RetryInsertsRefused()), pytest.raises(OperationalError):
        ledger.fail_unstarted(record, "ConnectionError: redis down", HAND_OFF_FAILED, config)
    assert TaskExecutionRecord.objects.get(pk=record.pk).status == "queued", "no failure without its retry"
    assert ledger.fail_unstarted(record, "ConnectionError: redis down", HAND_OFF_FAILED, config) is True
    [retry] = TaskExecutionRecord.objects.filter(trigger=Trigger.RETRY)
    assert (retry.retry_of_id, retry.attempt, retry.status) == (record.pk, 2, "pending")
    assert retry.message == f"retry 1 of 1 after run {record.pk} failed"
    assert ledger.fail_unstarted(other, "ConnectionError: redis down", HAND_OFF_FAILED) is True
    assert TaskExecutionRecord.objects.filter(trigger=Trigger.RETRY).count() == 1, "no configuration, no retry"


def test_expiry_ends_runs_queued_too_long_as_missed_and_leaves_one_a_worker_claimed_meanwhile(
    heard_finished: list[tuple[int, str]], caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger()
    first, middle, last, fresh = _fires_handed_off(ledger, 4)
    queued_at = timezone.now() - timedelta(seconds=120)
    TaskExecutionRecord.objects.filter(pk__in=[first.pk, middle.pk, last.pk]).update(started_at=queued_at)
    TaskExecutionRecord.objects.filter(pk=last.pk).update(message="")  # says nothing of where it waits
    worker = Ledger(worker_label="w:7")

    def a_worker_takes_the_middle_one(sender: object, record: TaskExecutionRecord, **kwargs: object) -> None:
        # While the expiry goes through its list (the first or the last first), a worker claims the middle one.
        if len(heard_finished) == 1:
            assert worker.claim_handed_off(middle.pk) is not None

    signals.run_finished.connect(a_worker_takes_the_middle_one)
    try:
        before = timezone.now()
        assert ledger.expire_queued(60) == 2
    finally:
        signals.run_finished.disconnect(a_worker_takes_the_middle_one)
    assert sorted(heard_finished) == [(first.pk, "missed"), (last.pk, "missed")]
    claimed = TaskExecutionRecord.objects.get(pk=middle.pk)
    assert (claimed.status, claimed.worker_label, claimed.finished_at) == ("running", "w:7", None)
    for record, waited_on in ((first, "queued on backend 'fleet'"), (last, "queued")):
        stored = TaskExecutionRecord.objects.get(pk=record.pk)
        assert (stored.status, stored.started_at, stored.duration_seconds, stored.error, stored.data) == (
            "missed",
            queued_at,
            0.0,
            "",
            {},
        )
        assert stored.finished_at is not None and stored.finished_at >= before
        assert re.fullmatch(
            rf"missed: {re.escape(waited_on)} for 12\ds and no worker took it "
            r"\(SCHEDULER\['FLEET_QUEUE_MAX_WAIT'\] is 60s\)",
            stored.message,
        ), stored.message
        assert f"task tick: run {record.pk} {stored.message}" in caplog.messages
    assert TaskExecutionRecord.objects.get(pk=fresh.pk).status == "queued", "within the wait"
    assert TaskState.objects.get(task_id="tick").running_count == 2, "the claimed run's and the fresh one's"
    assert ledger.expire_queued(1e12) == 0, "a huge wait expires nothing (and does not overflow the date)"


def test_expiry_reads_the_queued_runs_only_not_the_history(django_assert_num_queries: Any) -> None:
    # It runs at every reaper round: the old runs that ended, or still run, cost it nothing.
    ledger = Ledger()
    config = services.set_options("tick", {"overlap": "allow"})
    start = timezone.now().replace(microsecond=0)
    running, ended = ledger.record_fires([Fire(config, start), Fire(config, start + timedelta(seconds=1))])
    assert running is not None and ended is not None
    assert ledger.interrupt([ended], "the scheduler stopped") == 1
    TaskExecutionRecord.objects.update(started_at=start - timedelta(days=1))
    with django_assert_num_queries(1):
        assert ledger.expire_queued(60) == 0
    assert TaskExecutionRecord.objects.get(pk=running.pk).status == "running"


# -- a burst of fires: every policy recorded, duplicates told, records built without reading back --------


def test_a_buffer_one_fire_after_a_fire_of_another_policy_in_a_burst_is_recorded() -> None:
    ledger = Ledger()
    kept = services.set_options("slow", {"overlap": "buffer_one"})
    at = timezone.now().replace(microsecond=0)
    records = ledger.record_fires([Fire(ledger.config("tick"), at), Fire(kept, at), Fire(ledger.config("boom"), at)])
    assert [(r.task_id, r.status) for r in records if r is not None] == [
        ("tick", "running"),
        ("slow", "running"),
        ("boom", "running"),
    ]


def test_a_fire_recorded_elsewhere_comes_back_none_and_is_logged_whatever_its_policy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger()
    services.set_options("slow", {"overlap": "buffer_one"})
    at = timezone.now().replace(microsecond=0)
    fires = [Fire(ledger.config("tick"), at), Fire(ledger.config("slow"), at)]
    assert all(record is not None for record in ledger.record_fires(fires))
    caplog.clear()
    assert Ledger().record_fires(fires) == [None, None]
    assert [entry.getMessage() for entry in caplog.records if entry.name == "scheduler_app.ledger"] == [
        f"fire of {name} at {at} already recorded by another process" for name in ("tick", "slow")
    ]
    assert TaskExecutionRecord.objects.count() == 2


def test_a_fires_record_names_its_process_without_reading_it_back(django_assert_num_queries: Any) -> None:
    process = SchedulerProcess.objects.create(kind="scheduler", host="here", pid=1)
    ledger = Ledger(process=process, worker_label="here:1")
    at = timezone.now().replace(microsecond=0)
    [record] = ledger.record_fires([Fire(ledger.config("tick"), at)])
    [missed] = ledger.record_missed([MissedFire("boom", at, "missed: the scheduler was down")])
    for built in (record, missed):
        assert built is not None and built.worker_id == process.pk
        with django_assert_num_queries(0):
            assert built.worker is process
    assert set(TaskExecutionRecord.objects.values_list("worker_id", flat=True)) == {process.pk}
    [unowned] = Ledger().record_fires([Fire(ledger.config("tick"), at + timedelta(seconds=1))])
    assert unowned is not None and (unowned.worker_id, unowned.worker) == (None, None)


def test_a_queued_manual_run_names_only_an_authenticated_user() -> None:
    from django.contrib.auth.models import AnonymousUser, User

    operator = User.objects.create_user("operator")
    ledger = Ledger()
    anonymous = ledger.queue_manual("tick", user=AnonymousUser(), origin="api")
    named = ledger.queue_manual("tick", user=operator, origin="api")
    stored = dict(TaskExecutionRecord.objects.values_list("pk", "triggered_by_id"))
    assert (stored[anonymous.pk], stored[named.pk]) == (None, operator.pk)


def test_a_manual_run_started_here_names_its_user_and_origin() -> None:
    from django.contrib.auth.models import AnonymousUser, User

    operator = User.objects.create_user("operator")
    ledger = Ledger()
    by_operator = ledger.start_manual(ledger.config("tick"), user=operator, origin="admin")
    unnamed = ledger.start_manual(ledger.config("boom"))  # as the trigger_task command starts one
    anonymous = ledger.start_manual(ledger.config("slow"), user=AnonymousUser(), origin="api")
    stored = {row[0]: row[1:] for row in TaskExecutionRecord.objects.values_list("pk", "origin", "triggered_by_id")}
    assert stored[by_operator.pk] == ("admin", operator.pk)
    assert stored[unnamed.pk] == ("command", None)
    assert stored[anonymous.pk] == ("api", None)


def test_a_buffer_one_fire_is_recorded_as_a_scheduled_fire_that_started_now() -> None:
    ledger = Ledger()
    kept = services.set_options("slow", {"overlap": "buffer_one"})
    at = timezone.now().replace(microsecond=0)
    before = timezone.now()
    [record] = ledger.record_fires([Fire(kept, at, jitter=1.5)])
    after = timezone.now()
    assert record is not None
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert (stored.trigger, stored.origin, stored.status, stored.jitter_seconds) == (
        "scheduled",
        "scheduler",
        "running",
        1.5,
    )
    assert stored.started_at is not None and before <= stored.started_at <= after


def test_a_manual_run_begins_now_and_one_of_a_busy_task_ends_at_once(caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger()
    before = timezone.now()
    running = ledger.start_manual(ledger.config("slow"))
    busy = ledger.start_manual(ledger.config("slow"))
    after = timezone.now()
    stored = TaskExecutionRecord.objects.in_bulk([running.pk, busy.pk])
    first, second = stored[running.pk], stored[busy.pk]
    assert first.status == "running" and first.finished_at is None
    assert (first.worker_id, first.worker_label) == (None, ""), "a ledger of no process names none"
    assert first.started_at is not None and before <= first.started_at <= after
    assert (second.status, second.duration_seconds) == ("skipped", 0.0)
    assert second.started_at is not None and before <= second.started_at == second.finished_at <= after
    assert f"task slow: {BUSY_MESSAGE}" in caplog.messages


def test_a_claimed_retry_keeps_saying_which_attempt_it_is_while_it_runs() -> None:
    config = services.set_options("boom", {"max_retries": 2, "retry_backoff": "fixed", "retry_delay_seconds": 60})
    ledger = Ledger()
    failed = _running("boom")
    retry = _end(ledger, config, failed, TaskStatus.FAILED)
    assert retry is not None
    claimed = ledger.claim_queued(retry.pk)
    assert claimed is not None and claimed[1].status == "running"
    stored = TaskExecutionRecord.objects.get(pk=retry.pk)
    assert (stored.status, stored.message) == ("running", f"retry 1 of 2 after run {failed.pk} failed")


def test_a_busy_buffer_one_tasks_fire_is_kept_unstarted_and_the_next_is_skipped_at_once(
    heard_finished: list[tuple[int, str]], caplog: pytest.LogCaptureFixture
) -> None:
    config = services.set_options("slow", {"overlap": "buffer_one"})
    TaskState.objects.filter(task_id="slow").update(running_count=1)  # a run elsewhere holds the slot
    ledger = Ledger()
    at = timezone.now().replace(microsecond=0)
    before = timezone.now()
    [kept] = ledger.record_fires([Fire(config, at)])
    [dropped] = ledger.record_fires([Fire(config, at + timedelta(seconds=1))])
    after = timezone.now()
    assert kept is not None and dropped is not None
    rows = TaskExecutionRecord.objects.in_bulk([kept.pk, dropped.pk])
    for record in (kept, rows[kept.pk]):
        assert (record.status, record.started_at, record.finished_at, record.duration_seconds, record.message) == (
            "pending",
            None,
            None,
            None,
            BUFFERED_MESSAGE,
        )
    assert TaskState.objects.get(task_id="slow").buffered_record_id == kept.pk
    assert f"task slow: fire at {at} buffered behind the current run" in caplog.messages
    assert not TaskState.objects.exclude(task_id="slow").exclude(buffered_record_id=None).exists(), "its task only"
    for record in (dropped, rows[dropped.pk]):
        assert (record.status, record.duration_seconds, record.message) == ("skipped", 0.0, ALREADY_BUFFERED_MESSAGE)
        assert record.started_at is not None and before <= record.started_at == record.finished_at <= after
    assert heard_finished == [(dropped.pk, "skipped")], "the skipped fire is announced, the kept one is not yet"


def test_a_manual_run_or_retry_of_a_busy_buffer_one_task_is_skipped_not_kept() -> None:
    config = services.set_options("slow", {"overlap": "buffer_one"})
    TaskState.objects.filter(task_id="slow").update(running_count=1)
    ledger = Ledger()
    manual = ledger.start_manual(config)
    retry = TaskExecutionRecord.objects.create(task_id="slow", trigger=Trigger.RETRY, status=TaskStatus.PENDING)
    claimed = ledger.claim_queued(retry.pk)
    assert claimed is not None
    for record in (manual, claimed[1]):
        stored = TaskExecutionRecord.objects.get(pk=record.pk)
        assert (stored.status, stored.message) == ("skipped", BUSY_MESSAGE)
    assert TaskState.objects.get(task_id="slow").buffered_record_id is None


def test_claiming_a_queued_run_starts_that_run_only_and_a_settled_one_takes_no_slot() -> None:
    ledger = Ledger()
    first, other = ledger.queue_manual("tick", origin="api"), ledger.queue_manual("boom", origin="api")
    claimed = ledger.claim_queued(first.pk)
    assert claimed is not None and (claimed[1].pk, claimed[1].status) == (first.pk, "running")
    waiting = TaskExecutionRecord.objects.get(pk=other.pk)
    assert (waiting.status, waiting.started_at, waiting.worker_label) == ("pending", None, "")
    assert ledger.skip_queued(other.pk, "skipped: no longer wanted")
    assert ledger.claim_queued(other.pk) is None, "settled meanwhile"
    assert TaskState.objects.get(task_id="boom").running_count == 0, "the slot taken for it is given back"
    assert TaskExecutionRecord.objects.get(pk=other.pk).status == "skipped"


# -- outcomes: written, told to the record, logged, announced; retries queued ----------------------------


def _outcome(record: TaskExecutionRecord, status: TaskStatus, duration: float, message: str = "") -> RunOutcome:
    return RunOutcome(
        record_id=record.pk,
        task_name=record.task_id,
        status=status,
        started_at=record.started_at - timedelta(seconds=duration),
        finished_at=record.started_at + timedelta(seconds=duration),
        duration_seconds=duration,
        message=message,
        error="Boom: no" if status == TaskStatus.FAILED else "",
        data={"rows": 3} if status == TaskStatus.SUCCESS else {},
    )


def test_finished_runs_are_told_to_their_records_logged_with_their_fields_and_announced(
    heard_finished: list[tuple[int, str]], caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger()
    runs = [ledger.start_manual(ledger.config(name)) for name in ("tick", "boom", "slow")]
    outcomes = [
        _outcome(runs[0], TaskStatus.SUCCESS, 0.25, "did it"),
        _outcome(runs[1], TaskStatus.FAILED, 1.5),
        _outcome(runs[2], TaskStatus.SKIPPED, 0.0, "nothing to do"),
    ]
    caplog.set_level("INFO", logger="scheduler_app.runner")
    assert ledger.finish(list(zip(runs, outcomes, strict=True))) == [True, True, True]
    for record, outcome in zip(runs, outcomes, strict=True):
        assert_holds_outcome(record, outcome)  # told to the caller's record
        assert_holds_outcome(TaskExecutionRecord.objects.get(pk=record.pk), outcome)
    assert heard_finished == [(runs[0].pk, "success"), (runs[1].pk, "failed"), (runs[2].pk, "skipped")]
    lines = [entry for entry in caplog.records if entry.name == "scheduler_app.runner"]
    assert [(entry.levelname, entry.getMessage()) for entry in lines] == [
        ("INFO", f"task tick run {runs[0].pk} success in 0.250s: did it"),
        ("WARNING", f"task boom run {runs[1].pk} failed in 1.500s"),
        ("INFO", f"task slow run {runs[2].pk} skipped in 0.000s: nothing to do"),
    ]
    fields = [(entry.task, entry.run_id, entry.trigger, entry.duration) for entry in lines]  # type: ignore[attr-defined]
    assert fields == [
        ("tick", runs[0].pk, "manual", 0.25),
        ("boom", runs[1].pk, "manual", 1.5),
        ("slow", runs[2].pk, "manual", 0.0),
    ]


def test_an_outcome_of_a_run_ended_meanwhile_is_dropped_and_the_record_reads_the_verdict(
    heard_finished: list[tuple[int, str]], caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger()
    reaped, ran = ledger.start_manual(ledger.config("tick")), ledger.start_manual(ledger.config("boom"))
    assert ledger.interrupt([TaskExecutionRecord.objects.get(pk=reaped.pk)], "reaped") == 1
    heard_finished.clear()
    written = ledger.finish(
        [(reaped, _outcome(reaped, TaskStatus.SUCCESS, 0.5)), (ran, _outcome(ran, TaskStatus.SUCCESS, 0.5))]
    )
    assert written == [False, True]
    assert (reaped.status, reaped.error) == ("interrupted", "reaped"), "read back"
    assert TaskExecutionRecord.objects.get(pk=reaped.pk).status == "interrupted"
    assert heard_finished == [(ran.pk, "success")]
    assert f"task tick run {reaped.pk} finished after it was marked interrupted" in caplog.messages


def test_a_retry_links_to_the_first_attempt_keeps_who_asked_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    from django.contrib.auth.models import User

    operator = User.objects.create_user("operator")
    options = {"max_retries": 2, "retry_backoff": "exponential", "retry_delay_seconds": 10}
    config = services.set_options("boom", {**options, "retry_max_delay_seconds": 15})
    ledger = Ledger()
    first = _running("boom", trigger=Trigger.MANUAL, triggered_by=operator)
    caplog.set_level("INFO", logger="scheduler_app.ledger")
    failed, status = first, TaskStatus.FAILED
    for attempt in (1, 2):
        before = timezone.now()
        retry = _end(ledger, config, failed, status)
        assert retry is not None
        delay = 10.0 if attempt == 1 else 15.0  # doubled, then capped
        assert f"task boom: run {failed.pk} {failed.status}; retry {retry.pk} in {delay:.1f}s" in caplog.messages
        stored = TaskExecutionRecord.objects.get(pk=retry.pk)
        assert (stored.task_id, stored.trigger, stored.status, stored.origin, stored.attempt) == (
            "boom",
            "retry",
            "pending",
            "retry",
            attempt + 1,
        )
        assert (stored.retry_of_id, stored.triggered_by_id) == (first.pk, operator.pk)
        assert stored.message == f"retry {attempt} of 2 after run {failed.pk} {failed.status}"
        assert stored.scheduled_at is not None
        assert before + timedelta(seconds=delay) <= stored.scheduled_at <= timezone.now() + timedelta(seconds=delay)
        # The retry runs (as a claim leaves it) and times out.
        TaskExecutionRecord.objects.filter(pk=stored.pk).update(status=TaskStatus.RUNNING, started_at=timezone.now())
        failed, status = TaskExecutionRecord.objects.get(pk=stored.pk), TaskStatus.TIMEOUT
    assert _end(ledger, config, failed, status) is None, "max_retries reached"


def test_no_retry_without_max_retries_or_for_a_disabled_task() -> None:
    ledger = Ledger()
    assert _end(ledger, ledger.config("boom"), _running("boom"), TaskStatus.FAILED) is None, "max_retries is 0"
    config = services.set_options("boom", {"max_retries": 1})
    services.disable_task("boom")
    config.refresh_from_db()
    assert _end(ledger, config, _running("boom"), TaskStatus.FAILED) is None
    assert not TaskExecutionRecord.objects.filter(trigger=Trigger.RETRY).exists()


class LedgerOnlyTask(BaseTask):
    """Registered in one ledger's own registry only."""

    name = "ledger_only"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60)

    def run(self) -> TaskResult:
        return TaskResult.success("ran")


def test_a_tasks_config_is_one_read_and_a_row_not_made_yet_is_made_from_the_ledgers_registry(
    django_assert_num_queries: Any,
) -> None:
    with django_assert_num_queries(1):
        assert Ledger().config("tick").name == "tick"
    registry = TaskRegistry()
    registry.register(LedgerOnlyTask)
    config = Ledger(registry).config("ledger_only")
    assert (config.pk, config.default_interval_seconds) == ("ledger_only", 60)
    assert TaskState.objects.filter(task_id="ledger_only").exists()


def test_run_finished_comes_from_the_ledger_and_a_failing_receiver_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    heard: list[int] = []

    def receiver(sender: object, record: TaskExecutionRecord, **kwargs: object) -> None:
        heard.append(record.pk)
        raise RuntimeError("receiver broke")

    signals.run_finished.connect(receiver, sender=Ledger)
    try:
        ledger = Ledger()
        record = ledger.start_manual(ledger.config("tick"))
        assert ledger.finish([(record, _outcome(record, TaskStatus.SUCCESS, 0.5))]) == [True]
    finally:
        signals.run_finished.disconnect(receiver, sender=Ledger)
    assert heard == [record.pk]
    assert TaskExecutionRecord.objects.get(pk=record.pk).status == "success"
    [logged] = [entry for entry in caplog.records if entry.levelname == "ERROR"]
    assert logged.getMessage() == f"a run_finished receiver failed for record {record.pk}"
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError


def test_run_started_is_sent_by_the_ledger_for_a_fire_and_for_a_manual_run() -> None:
    started: list[tuple[str, str]] = []

    def receiver(sender: object, record: TaskExecutionRecord, task: BaseTask, **kwargs: object) -> None:
        started.append((record.task_id, task.name))

    signals.run_started.connect(receiver, sender=Ledger)
    try:
        ledger = Ledger()
        ledger.record_fires([Fire(ledger.config("tick"), timezone.now().replace(microsecond=0))])
        ledger.start_manual(ledger.config("boom"))
    finally:
        signals.run_started.disconnect(receiver, sender=Ledger)
    assert started == [("tick", "tick"), ("boom", "boom")]


def test_a_retry_the_database_refuses_costs_that_retry_alone_not_the_batchs_outcomes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The operator who asked for a run is deleted while it runs: its retry would name a user who no
    longer exists (the foreign key fails at commit). Only that retry is lost, logged."""
    from django.contrib.auth.models import User

    operator = User.objects.create_user("operator")
    config = services.set_options("boom", {"max_retries": 1, "retry_backoff": "fixed", "retry_delay_seconds": 60})
    ledger = Ledger()
    asked, other = _running("boom", trigger=Trigger.MANUAL, triggered_by=operator), _running("tick")
    operator.delete()
    runs = [(asked, _outcome(asked, TaskStatus.FAILED, 0.0)), (other, _outcome(other, TaskStatus.SUCCESS, 0.0))]
    assert ledger.finish(runs, [config, ledger.config("tick")]) == [True, True]
    stored = TaskExecutionRecord.objects.in_bulk([asked.pk, other.pk])
    assert (stored[asked.pk].status, stored[other.pk].status) == ("failed", "success")
    assert TaskState.objects.get(task_id="boom").running_count == 0
    assert not TaskExecutionRecord.objects.filter(trigger=Trigger.RETRY).exists()
    [logged] = [entry for entry in caplog.records if entry.levelname == "ERROR"]
    assert logged.getMessage() == f"task boom: run {asked.pk} failed; its retry could not be queued"
