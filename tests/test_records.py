"""The batched hot path: a burst of fires claimed and recorded in one go, outcomes written by the finisher."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from scheduler_app.ledger import Ledger
from scheduler_app.models import TaskConfig, TaskExecutionRecord, TaskState
from scheduler_app.records import RunOutcome
from scheduler_app.runner import BUSY_MESSAGE, Fire, TaskRunner
from scheduler_app.services import set_options, sync_task_rows
from scheduler_app.tasks.base import TaskStatus
from tests.runs import assert_holds_outcome, run_fire

pytestmark = pytest.mark.django_db(transaction=True)

MOMENT = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def rows() -> None:
    sync_task_rows()


@pytest.fixture
def runner():
    runner = TaskRunner()
    yield runner
    runner.close()


def config(name: str) -> TaskConfig:
    return TaskConfig.objects.get(name=name)


def state(name: str) -> TaskState:
    return TaskState.objects.get(task_id=name)


def test_a_burst_is_recorded_once_each_and_outcomes_land(runner: TaskRunner) -> None:
    TaskState.objects.filter(task_id="slow").update(running_count=1)  # busy elsewhere
    fires = [Fire(config(name), MOMENT) for name in ("tick", "boom", "garbage", "slow")]
    before = timezone.now()
    records = runner.launch_fires(fires)
    assert [r.status for r in records] == ["running", "running", "running", "skipped"]
    assert records[3].message == BUSY_MESSAGE and state("slow").running_count == 1
    assert runner.drain(10)
    stored = {r.task_id: r for r in TaskExecutionRecord.objects.filter(scheduled_at=MOMENT)}
    assert {name: r.status for name, r in stored.items()} == {
        "tick": "success",
        "boom": "failed",
        "garbage": "failed",
        "slow": "skipped",
    }
    assert all(r.trigger == "scheduled" and r.origin == "scheduler" for r in stored.values())
    # The record says when the code began, and the state moved with the outcome.
    assert before <= stored["tick"].started_at <= stored["tick"].finished_at
    tick, boom = state("tick"), state("boom")
    assert (tick.running_count, tick.run_count, tick.last_result, tick.consecutive_failures) == (0, 1, "success", 0)
    assert tick.last_success_at == stored["tick"].finished_at
    assert (boom.running_count, boom.run_count, boom.fail_count, boom.consecutive_failures) == (0, 1, 1, 1)
    assert "ValueError: boom" in stored["boom"].error


def test_a_fire_recorded_elsewhere_is_not_run_and_takes_no_slot(runner: TaskRunner) -> None:
    TaskExecutionRecord.objects.create(task_id="tick", trigger="scheduled", status="success", scheduled_at=MOMENT)
    records = runner.launch_fires([Fire(config("tick"), MOMENT), Fire(config("boom"), MOMENT)])
    assert records[0] is None and records[1] is not None
    assert state("tick").running_count == 0
    assert runner.drain(10)
    assert TaskExecutionRecord.objects.filter(task_id="tick").count() == 1


def test_two_fires_of_one_task_in_a_burst_follow_its_overlap_rule(runner: TaskRunner) -> None:
    later = MOMENT + timedelta(seconds=1)
    records = runner.launch_fires([Fire(config("tick"), MOMENT), Fire(config("tick"), later)])
    # Not allowed to overlap: the first claims the slot, the second is skipped.
    assert [r.status for r in records] == ["running", "skipped"]
    assert runner.drain(10)
    set_options("tick", {"overlap": "allow"})
    records = runner.launch_fires(
        [Fire(config("tick"), later + timedelta(seconds=1)), Fire(config("tick"), later + timedelta(seconds=2))]
    )
    assert [r.status for r in records] == ["running", "running"]
    assert runner.drain(10)
    assert state("tick").running_count == 0 and state("tick").run_count == 3


def test_jitter_is_stored_with_the_fire(runner: TaskRunner) -> None:
    (record,) = runner.launch_fires([Fire(config("tick"), MOMENT, jitter=1.25)])
    assert runner.drain(10)
    assert TaskExecutionRecord.objects.get(pk=record.pk).jitter_seconds == 1.25


def test_an_outcome_does_not_overwrite_a_verdict_of_interrupted(
    runner: TaskRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_LONG_TASK_SECONDS", "0.5")
    (record,) = runner.launch_fires([Fire(config("long"), MOMENT)])
    # Another process decided this run was dead (e.g. its heartbeats were late) and said so.
    TaskRunner().interrupt([TaskExecutionRecord.objects.get(pk=record.pk)], "reaped")
    assert runner.drain(10)
    stored = TaskExecutionRecord.objects.get(pk=record.pk)
    assert stored.status == "interrupted" and stored.error == "reaped"
    assert state("long").running_count == 0 and state("long").run_count == 1


def test_missed_fires_are_recorded_together_once_each(runner: TaskRunner) -> None:
    from scheduler_app.records import MissedFire

    ran = run_fire(runner, "tick", MOMENT)
    assert ran is not None and ran.status == "success"
    fires = [
        MissedFire("tick", MOMENT, "late"),  # already ran: keeps its record
        MissedFire("tick", MOMENT + timedelta(seconds=1), "coalesced"),
        MissedFire("boom", MOMENT, "beyond the window"),
    ]
    records = runner.record_missed_fires(fires)
    assert records[0] is None
    assert [r.status for r in records[1:]] == ["missed", "missed"]
    stored = {(r.task_id, r.scheduled_at): r for r in TaskExecutionRecord.objects.filter(status="missed")}
    assert set(stored) == {("tick", MOMENT + timedelta(seconds=1)), ("boom", MOMENT)}
    assert stored["boom", MOMENT].message == "beyond the window" and stored["boom", MOMENT].pk == records[2].pk
    assert TaskExecutionRecord.objects.get(pk=ran.pk).status == "success"
    # Recording them again changes nothing.
    assert runner.record_missed_fires(fires[1:]) == [None, None]


def test_a_burst_is_one_insert_and_its_busy_fires_one_update(runner: TaskRunner) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    TaskState.objects.filter(task_id__in=["slow", "boom"]).update(running_count=1)  # busy elsewhere
    table = TaskExecutionRecord._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        records = runner.ledger.record_fires([Fire(config(name), MOMENT) for name in ("tick", "slow", "boom")])
    assert [r.status for r in records] == ["running", "skipped", "skipped"]
    statements = [query["sql"].split()[0:3] for query in queries.captured_queries]
    assert statements.count(["INSERT", "INTO", f'"{table}"']) == 1
    assert statements.count(["UPDATE", f'"{table}"', "SET"]) == 1, "both busy fires skipped in one statement"
    TaskState.objects.update(running_count=0)
    with CaptureQueriesContext(connection) as queries:
        runner.ledger.record_fires([Fire(config("tick"), MOMENT + timedelta(seconds=1))])
    assert not [query for query in queries.captured_queries if query["sql"].startswith(f'UPDATE "{table}"')]


def test_a_burst_larger_than_a_statement_is_recorded_whole(runner: TaskRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler_app import records

    monkeypatch.setattr(records, "CHUNK", 2)  # a burst of 3: two INSERT statements
    names = ("tick", "boom", "garbage")
    recorded = runner.ledger.record_fires([Fire(config(name), MOMENT) for name in names])
    assert [(r.task_id, r.status) for r in recorded if r is not None] == [(name, "running") for name in names]
    assert TaskExecutionRecord.objects.filter(scheduled_at=MOMENT).count() == 3


def test_an_empty_batch_writes_nothing() -> None:
    from scheduler_app.records import begin_scheduled, record_missed

    now = timezone.now()
    assert begin_scheduled([], now=now, worker=None, worker_label="", busy_message=BUSY_MESSAGE) == {}
    assert record_missed([], now=now, worker=None, worker_label="") == []
    assert not TaskExecutionRecord.objects.exists()


def test_one_fire_per_task_per_statement_is_a_rule_of_the_caller() -> None:
    from scheduler_app.records import NewRun, begin_scheduled

    twice = [NewRun("tick", MOMENT, False), NewRun("tick", MOMENT + timedelta(seconds=1), False)]
    with pytest.raises(AssertionError, match=r"^one fire per task per call$"):
        begin_scheduled(twice, now=timezone.now(), worker=None, worker_label="", busy_message=BUSY_MESSAGE)


# -- what is ready to run ------------------------------------------------------------------------


def queue(task: str, trigger: str, **fields: object) -> TaskExecutionRecord:
    return TaskExecutionRecord.objects.create(task_id=task, trigger=trigger, status="pending", **fields)


def test_ready_runs_skip_what_cannot_start_in_sql_so_it_never_starves_the_rest() -> None:
    from scheduler_app.records import ready_runs, tasks_with_queued_manual_runs

    now = timezone.now()
    later = now + timedelta(hours=1)
    # 150 retries not due yet, and a fire kept by buffer_one behind a run still going: ahead in id order.
    waiting_retries = [queue("boom", "retry", scheduled_at=later, attempt=2) for _ in range(150)]
    TaskState.objects.filter(task_id="slow").update(running_count=1)
    buffered = queue("slow", "scheduled", scheduled_at=now)
    busy_manual = queue("slow", "manual")
    due_retry = queue("boom", "retry", scheduled_at=now - timedelta(seconds=1), attempt=2)
    manual = queue("tick", "manual")

    ready = ready_runs(now=now, limit=100)
    assert [row[0] for row in ready] == [due_retry.pk, manual.pk]
    assert [row[1:3] for row in ready] == [("boom", "retry"), ("tick", "manual")]
    assert ready[1][3] == TaskExecutionRecord.objects.get(pk=manual.pk).created_at
    assert waiting_retries[0].pk < buffered.pk < busy_manual.pk < due_retry.pk
    # A limit of one still yields the oldest ready run, not a waiting one.
    assert [row[0] for row in ready_runs(now=now, limit=1)] == [due_retry.pk]
    # A manual run of a busy task is ready when the task allows overlap, or once it waited too long.
    assert busy_manual.pk in [row[0] for row in ready_runs(now=now, limit=100, allow_overlap=["slow"])]
    expired = ready_runs(now=now, limit=100, expired_before=timezone.now())
    assert busy_manual.pk in [row[0] for row in expired]
    assert busy_manual.pk not in [row[0] for row in ready_runs(now=now, limit=100, expired_before=now - timedelta(1))]
    # Once the task is idle, its kept fire and its manual run are ready, in id order.
    TaskState.objects.filter(task_id="slow").update(running_count=0)
    ids = [row[0] for row in ready_runs(now=now, limit=100)]
    assert ids == [buffered.pk, busy_manual.pk, due_retry.pk, manual.pk]
    assert tasks_with_queued_manual_runs() == {"slow", "tick"}


def test_ready_runs_use_the_pending_index_on_sqlite() -> None:
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plan")
    from scheduler_app import records

    captured: list[str] = []
    with connection.execute_wrapper(
        lambda execute, sql, params, many, context: captured.append(sql) or execute(sql, params, many, context)
    ):
        records.ready_runs(now=timezone.now(), limit=10)
        with connection.cursor() as cursor:
            cursor.execute(records.newest_pending_sql())  # as the SQLite pickup check runs it (notify.py)
    for sql in captured:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + sql.replace("%s", "NULL"))
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
        assert "record_pending" in plan, plan


# -- outcomes: every column of the record, every counter of the state ------------------------------------


def _ended(record: TaskExecutionRecord, status: str, offset: int, **fields: object) -> RunOutcome:
    values: dict[str, object] = {
        "started_at": MOMENT + timedelta(minutes=offset),
        "finished_at": MOMENT + timedelta(minutes=offset, seconds=30),
        "duration_seconds": 30.0 + offset,
        "message": f"{status} {offset}",
        "error": "",
        "data": {},
        **fields,
    }
    return RunOutcome(record_id=record.pk, task_name=record.task_id, status=TaskStatus(status), **values)  # type: ignore[arg-type]


def test_outcomes_land_whole_and_move_each_tasks_counters_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler_app import records

    monkeypatch.setattr(records, "CHUNK", 2)  # several statements' worth of outcomes
    set_options("tick", {"overlap": "allow"})
    ledger = Ledger()
    ticks = [ledger.start_manual(config("tick")) for _ in range(2)]
    boom, garbage, slow, long = (ledger.start_manual(config(name)) for name in ("boom", "garbage", "slow", "long"))
    earlier = MOMENT - timedelta(days=1)
    TaskState.objects.filter(task_id__in=["tick", "boom", "garbage", "slow"]).update(
        consecutive_failures=2, fail_count=2, run_count=5, last_success_at=earlier
    )
    TaskState.objects.filter(task_id="garbage").update(running_count=0)  # its slot was already given back
    TaskExecutionRecord.objects.filter(pk=long.pk).update(status="interrupted")  # reaped meanwhile
    outcomes = [
        _ended(ticks[1], "success", 2, data={"rows": 2}),
        _ended(ticks[0], "success", 1, error="warned"),
        _ended(boom, "failed", 3, error="ValueError: boom"),
        _ended(garbage, "timeout", 4, started_at=None),
        _ended(slow, "skipped", 5),
        _ended(long, "success", 6),
    ]
    assert ledger.finish([(TaskExecutionRecord.objects.get(pk=o.record_id), o) for o in outcomes]) == [
        True,
        True,
        True,
        True,
        True,
        False,
    ]
    for outcome in outcomes[:5]:
        assert_holds_outcome(TaskExecutionRecord.objects.get(pk=outcome.record_id), outcome)
    assert TaskExecutionRecord.objects.get(pk=long.pk).status == "interrupted", "its verdict is kept"

    def counters(name: str) -> tuple[object, ...]:
        s = state(name)
        return (s.running_count, s.run_count, s.fail_count, s.consecutive_failures, s.last_result)

    assert counters("tick") == (0, 7, 2, 0, "success")
    assert counters("boom") == (0, 6, 3, 3, "failed")
    assert counters("garbage") == (0, 6, 3, 3, "timeout"), "a slot count never goes below 0"
    assert counters("slow") == (0, 6, 2, 2, "skipped")
    assert counters("long") == (1, 0, 0, 0, ""), "a dropped outcome leaves its task's state alone"
    # Per task, the times of the outcome written last (a task's outcomes in record order).
    times = {name: (state(name).last_run_at, state(name).last_finished_at) for name in ("tick", "boom", "slow")}
    assert times == {
        "tick": (outcomes[0].started_at, outcomes[0].finished_at),
        "boom": (outcomes[2].started_at, outcomes[2].finished_at),
        "slow": (outcomes[4].started_at, outcomes[4].finished_at),
    }
    assert (state("garbage").last_run_at, state("garbage").last_finished_at) == (None, outcomes[3].finished_at)
    assert state("tick").last_success_at == outcomes[0].finished_at
    assert {state(name).last_success_at for name in ("boom", "garbage", "slow")} == {earlier}


def test_a_batch_of_outcomes_is_one_read_one_record_write_and_one_state_write_per_kind() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    names = ("tick", "boom", "garbage", "slow", "long")
    ledger = Ledger()
    runs = [ledger.start_manual(config(name)) for name in names]
    statuses = ("success", "failed", "timeout", "skipped", "success")
    outcomes = [_ended(run, status, i) for i, (run, status) in enumerate(zip(runs, statuses, strict=True))]
    with CaptureQueriesContext(connection) as queries:
        assert ledger.finish(list(zip(runs, outcomes, strict=True))) == [True] * len(names)
    record_table, state_table = TaskExecutionRecord._meta.db_table, TaskState._meta.db_table
    # An executemany is one statement, logged as "N times: <sql>".
    sqls = [re.sub(r"^\d+ times: ", "", query["sql"]) for query in queries.captured_queries]
    statements = [" ".join(sql.split()[:2]) for sql in sqls]
    reads = [sql for sql in statements if sql.startswith("SELECT")]
    assert len(reads) == 1, "the running records are read in one statement"
    assert statements.count(f'UPDATE "{record_table}"') == 1, "every record in one statement"
    assert statements.count(f'UPDATE "{state_table}"') == 3, "the states in one statement per kind of outcome"


def test_a_burst_takes_one_slot_of_each_task_in_one_statement_per_overlap_rule() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for name in ("tick", "boom"):
        set_options(name, {"overlap": "allow"})
    TaskState.objects.filter(task_id="boom").update(running_count=2)  # overlapping runs elsewhere
    ledger = Ledger()
    names = ("tick", "boom", "slow", "garbage")
    with CaptureQueriesContext(connection) as queries:
        records = ledger.record_fires([Fire(config(name), MOMENT) for name in names])
    assert [r.status for r in records if r is not None] == ["running"] * 4
    assert {name: state(name).running_count for name in names} == {"tick": 1, "boom": 3, "slow": 1, "garbage": 1}
    claims = [
        query for query in queries.captured_queries if query["sql"].startswith(f'UPDATE "{TaskState._meta.db_table}"')
    ]
    assert len(claims) == 2, "one statement for the tasks that allow overlap, one for those that do not"


@pytest.mark.parametrize("recorded_before", [("tick",), ("garbage",), ("boom",), ("tick", "garbage")])
def test_each_fire_gets_its_own_records_id_whichever_of_its_burst_were_recorded_before(
    runner: TaskRunner, recorded_before: tuple[str, ...]
) -> None:
    # On SQLite the ids come from the row count, not from rows read back: a fire left out (first,
    # in the middle, last) must neither shift the others' ids nor be given one.
    names = ("tick", "boom", "garbage")
    for name in recorded_before:
        TaskExecutionRecord.objects.create(task_id=name, trigger="scheduled", status="success", scheduled_at=MOMENT)
    records = runner.ledger.record_fires([Fire(config(name), MOMENT) for name in names])
    for name, record in zip(names, records, strict=True):
        if name in recorded_before:
            assert record is None
            continue
        stored = TaskExecutionRecord.objects.get(pk=record.pk)
        assert (stored.task_id, stored.scheduled_at, stored.status) == (name, MOMENT, "running")
    assert TaskExecutionRecord.objects.filter(scheduled_at=MOMENT).count() == len(names)


def test_a_claim_takes_the_free_slots_only_and_none_of_a_task_without_a_state_row() -> None:
    from django.db import transaction

    from scheduler_app.records import claim_slots

    TaskState.objects.filter(task_id="slow").update(running_count=1)
    TaskState.objects.filter(task_id="garbage").delete()
    names = ["tick", "slow", "garbage", "boom"]
    with transaction.atomic():
        assert claim_slots(names, exclusive=True) == {"tick", "boom"}
    assert {name: s.running_count for name, s in TaskState.objects.in_bulk(names).items()} == {
        "tick": 1,
        "slow": 1,
        "boom": 1,
    }
    with transaction.atomic():
        assert claim_slots(names, exclusive=False) == {"tick", "slow", "boom"}
    assert {name: s.running_count for name, s in TaskState.objects.in_bulk(names).items()} == {
        "tick": 2,
        "slow": 2,
        "boom": 2,
    }
    with transaction.atomic():
        assert claim_slots(["tick", "boom"], exclusive=True) == set()


def test_a_bursts_times_are_written_as_djangos_own_adapter_writes_them() -> None:
    from zoneinfo import ZoneInfo

    from django.db import connection

    from scheduler_app.records import _datetimes

    to_db = _datetimes()
    values = [
        None,
        MOMENT,
        MOMENT.replace(microsecond=123456),
        datetime(2027, 3, 28, 1, 30, tzinfo=ZoneInfo("Europe/Paris")),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=ZoneInfo("Asia/Kolkata")),
    ]
    assert [to_db(value) for value in values] == [connection.ops.adapt_datetimefield_value(v) for v in values]


def test_a_bursts_insert_reaches_the_driver_rewritten_once_per_shape(runner: TaskRunner) -> None:
    from django.db import connection

    from scheduler_app import records

    # PostgreSQL's driver takes %s itself: nothing is rewritten there.
    rewritten = 1 if connection.vendor == "sqlite" else 0
    records._NATIVE_SQL.clear()
    first = runner.ledger.record_fires([Fire(config(name), MOMENT) for name in ("tick", "boom")])
    assert len(records._NATIVE_SQL) == rewritten and all("%s" not in sql for sql in records._NATIVE_SQL.values())
    again = runner.ledger.record_fires([Fire(config(name), MOMENT + timedelta(seconds=1)) for name in ("boom", "tick")])
    assert len(records._NATIVE_SQL) == rewritten, "the same shape, the same rewritten statement"
    stored = {r.pk: (r.task_id, r.scheduled_at) for r in TaskExecutionRecord.objects.all()}
    assert [stored[r.pk] for r in first + again] == [
        ("tick", MOMENT),
        ("boom", MOMENT),
        ("boom", MOMENT + timedelta(seconds=1)),
        ("tick", MOMENT + timedelta(seconds=1)),
    ]
