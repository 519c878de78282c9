"""The writes of every run, batched and hand-written: claim + record of fires, and run outcomes.

These statements are the hot path of the scheduler (two per fire). Through the ORM each cost about
0.5 ms of query compilation, which made a burst of 200 simultaneous fires take 300 ms to start; here
a whole burst is one INSERT ... RETURNING and one UPDATE ... RETURNING in one transaction, and the
outcomes of many runs are written in one transaction. The SQL is portable between SQLite (>= 3.35,
for RETURNING) and PostgreSQL; table and column names come from the models. Callers own the
transaction (``db.write_transaction``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache, partial
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Model
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from scheduler_app.models import FAILURE_STATUSES, SchedulerProcess, TaskExecutionRecord, TaskState, Trigger
from scheduler_app.tasks.base import TaskStatus

# Rows per statement: far below SQLite's limit of 32,766 bound parameters.
CHUNK = 500


def _table(model: type[Model]) -> str:
    return _quoted(connection.vendor, model, None)


def _column(model: type[Model], name: str) -> str:
    return _quoted(connection.vendor, model, name)


@lru_cache(maxsize=256)
def _quoted(vendor: str, model: type[Model], field: str | None) -> str:
    """A table's (``field`` None) or a column's quoted name: a burst's statements name ~20, and
    each lookup through the model's options and the connection cost more than the rest of them."""
    return connection.ops.quote_name(model._meta.db_table if field is None else model._meta.get_field(field).column)


def _datetime(value: datetime | None) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _datetimes() -> Callable[[datetime | None], Any]:
    """``_datetime`` for one batch: the connection's adapter looked up once, and each instant
    adapted once (the fires of a burst share their time; a finisher batch shares its end)."""
    adapt = connection.ops.adapt_datetimefield_value
    if connection.vendor == "sqlite" and settings.USE_TZ:
        adapt = partial(_sqlite_datetime, connection.timezone, adapt)
    adapted: dict[datetime | None, Any] = {}

    def to_db(value: datetime | None) -> Any:
        try:
            return adapted[value]
        except KeyError:
            result = adapted[value] = adapt(value)
            return result

    return to_db


def _sqlite_datetime(zone: tzinfo, adapt: Callable[[datetime | None], Any], value: datetime | None) -> Any:
    """What SQLite's adapter makes of an aware datetime (the text of the naive time in the
    connection's zone), without asking the settings and the connection again for each of a burst's
    fires; anything else goes to ``adapt``."""
    if value is None or value.utcoffset() is None:
        return adapt(value)
    return str(value.astimezone(zone).replace(tzinfo=None))


def _json(value: Any) -> Any:
    return TaskExecutionRecord._meta.get_field("data").get_db_prep_value(value, connection)


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


@lru_cache(maxsize=1024)
def _insert_sql(vendor: str, fields: tuple[str, ...], returning: tuple[str, ...], rows: int) -> str:
    """The INSERT of ``rows`` fire records (``_insert_fires``), built once per shape (and per
    database vendor, whose quoting it holds)."""
    record = TaskExecutionRecord
    columns = ", ".join(_column(record, name) for name in fields)
    row = f"({_placeholders(len(fields))})"
    sql = f"INSERT INTO {_table(record)} ({columns}) VALUES {', '.join([row] * rows)} ON CONFLICT DO NOTHING"
    return f"{sql} RETURNING {', '.join(_column(record, name) for name in returning)}" if returning else sql


@dataclass
class NewRun:
    """A fire to record as running (or skipped when its task is busy)."""

    task_name: str
    scheduled_at: datetime
    allow_overlap: bool
    jitter_seconds: float | None = None


@dataclass
class MissedFire:
    task_name: str
    scheduled_at: datetime
    reason: str


def _fire_fields(now: datetime, worker: SchedulerProcess | None, worker_label: str) -> dict[str, Any]:
    """The columns every fire's record shares, as database values."""
    return {
        "trigger": Trigger.SCHEDULED.value,
        "created_at": _datetime(now),
        "error": "",
        "data": _json({}),
        "origin": "scheduler",
        "worker": None if worker is None else SchedulerProcess._meta.pk.get_db_prep_value(worker.pk, connection),
        "worker_label": worker_label,
        "attempt": 1,
    }


def _insert_fires(cursor: Any, rows: Sequence[dict[str, Any]], returning: Sequence[str]) -> list[tuple[Any, ...]]:
    """Insert records of scheduled fires (field name: database value, the same fields in every row).

    A fire that already has a record (the unique fire constraint) is left out; the ``returning``
    values of those inserted come back (a field other than ``id`` as the row gave it), in no
    promised order.
    """
    fields = tuple(rows[0]) if rows else ()
    vendor = connection.vendor
    inserted: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        params = [values[name] for values in chunk for name in fields]
        if vendor == "sqlite":
            inserted += _insert_counted(cursor, fields, chunk, params, returning)
            continue
        cursor.execute(_insert_sql(vendor, fields, tuple(returning), len(chunk)), params)
        inserted += cursor.fetchall()
    return inserted


# Statements as SQLite's driver takes them (``?``), by the statement Django would be given (``%s``).
_NATIVE_SQL: dict[str, str] = {}


def _execute_native(cursor: Any, sql: str, params: list[Any]) -> None:
    """SQLite: ``cursor.execute(sql, params)`` for a statement built once per shape (``_insert_sql``).

    Django's SQLite cursor rewrites every ``%s`` into ``?`` with a regular expression on each call:
    ~0.45 ms for a 200-fire INSERT, with the GIL held (a tenth of a busy dispatcher's share). The
    rewritten text is kept and given to the driver itself, unless the connection logs its queries
    or wraps its executions: then the statement goes Django's way, which those hook.
    """
    wrapper = connection  # pragma: no mutate start (the same statement, by Django's way or the driver's)
    if wrapper.queries_logged or wrapper.execute_wrappers:
        cursor.execute(sql, params)
        return
    native = _NATIVE_SQL.get(sql)
    if native is None:
        if len(_NATIVE_SQL) >= 2048:
            _NATIVE_SQL.clear()
        native = _NATIVE_SQL[sql] = cursor.cursor.convert_query(sql)
    # pragma: no mutate end
    with wrapper.wrap_database_errors:
        sqlite3.Cursor.execute(cursor.cursor, native, params)


def _insert_counted(
    cursor: Any, fields: tuple[str, ...], chunk: Sequence[dict[str, Any]], params: list[Any], returning: Sequence[str]
) -> list[tuple[Any, ...]]:
    """SQLite: ``_insert_fires``'s INSERT without RETURNING, the ids known from the row count.

    Python's sqlite3 gives up the GIL for every row it steps through, RETURNING rows included: a
    200-fire claim handed the GIL to the scheduler's other threads 200 times, and waited up to a
    switch interval (5 ms) to get it back each time they kept it (BENCHMARKS.md, session 7). One
    INSERT statement numbers the rows it adds one after the other, in the order given, under the
    write lock the transaction holds: when it added every row, their ids are the ``rowcount`` ones
    that end at ``lastrowid``, in order. When it left some out (another process recorded those
    fires; a row left out still takes a number), the rows above the largest id before it are read.
    """
    record = TaskExecutionRecord
    id_column = _column(record, "id")
    cursor.execute(f"SELECT MAX({id_column}) FROM {_table(record)}")
    before = cursor.fetchone()[0] or 0
    _execute_native(cursor, _insert_sql("sqlite", fields, (), len(chunk)), params)
    if cursor.rowcount == len(chunk):
        first = cursor.lastrowid - len(chunk) + 1
        return [
            tuple(first + index if name == "id" else values[name] for name in returning)
            for index, values in enumerate(chunk)
        ]
    cursor.execute(
        f"SELECT {', '.join(_column(record, name) for name in returning)} FROM {_table(record)} WHERE {id_column} > %s",
        [before],
    )
    return cursor.fetchall()


def begin_scheduled(
    runs: Sequence[NewRun], *, now: datetime, worker: SchedulerProcess | None, worker_label: str, busy_message: str
) -> dict[str, tuple[int, bool]]:
    """Record fires and claim their tasks' running slots, in the caller's transaction.

    Each task appears at most once in ``runs``. Returns {task: (record id, claimed)} for the fires
    recorded here; a fire another process already recorded (the unique fire constraint) is absent.
    A fire whose task is busy (and does not allow overlap) is recorded ``skipped`` with ``busy_message``.
    """
    names = [run.task_name for run in runs]
    assert len(set(names)) == len(names), "one fire per task per call"
    shared = _fire_fields(now, worker, worker_label)
    now_db = shared["created_at"]
    to_db = _datetimes()
    rows = [
        {
            **shared,
            "task": run.task_name,
            "status": TaskStatus.RUNNING.value,
            "scheduled_at": to_db(run.scheduled_at),
            "started_at": now_db,
            "message": "",
            "jitter_seconds": run.jitter_seconds,
        }
        for run in runs
    ]
    record = TaskExecutionRecord
    with connection.cursor() as cursor:
        recorded: dict[str, int] = {task: record_id for record_id, task in _insert_fires(cursor, rows, ("id", "task"))}
        if not recorded:
            return {}
        by_name = {run.task_name: run for run in runs if run.task_name in recorded}
        claimed = claim_slots([n for n, r in by_name.items() if not r.allow_overlap], exclusive=True)
        # pragma: no mutate start (exclusive is only tested for truth: None is as False)
        claimed |= claim_slots([n for n, r in by_name.items() if r.allow_overlap], exclusive=False)
        # pragma: no mutate end
        busy = [recorded[name] for name in recorded if name not in claimed]
        for start in range(0, len(busy), CHUNK):
            chunk = busy[start : start + CHUNK]
            cursor.execute(
                f"UPDATE {_table(record)} SET {_column(record, 'status')} = %s, "
                f"{_column(record, 'finished_at')} = %s, "
                f"{_column(record, 'duration_seconds')} = %s, "
                f"{_column(record, 'message')} = %s "
                f"WHERE {_column(record, 'id')} IN ({_placeholders(len(chunk))})",
                [TaskStatus.SKIPPED.value, now_db, 0.0, busy_message, *chunk],
            )
    return {name: (record_id, name in claimed) for name, record_id in recorded.items()}


def record_missed(
    fires: Sequence[MissedFire], *, now: datetime, worker: SchedulerProcess | None, worker_label: str
) -> list[int | None]:
    """Record fires that will not run as ``missed``, in the caller's transaction.

    Returns each fire's new record id, or None where the fire already has a record (it ran, or was
    recorded missed before): a fire never gets two.
    """
    shared = _fire_fields(now, worker, worker_label)
    to_db = _datetimes()
    rows = [
        {
            **shared,
            "task": fire.task_name,
            "status": TaskStatus.MISSED.value,
            "scheduled_at": to_db(fire.scheduled_at),
            "finished_at": shared["created_at"],
            "message": fire.reason,
        }
        for fire in fires
    ]
    with connection.cursor() as cursor:
        inserted = _insert_fires(cursor, rows, ("id", "task", "scheduled_at"))
    # Matched back by (task, fire time) as stored.
    ids = {(task, _instant(scheduled)): record_id for record_id, task, scheduled in inserted}
    return [ids.get((fire.task_name, fire.scheduled_at)) for fire in fires]


def _instant(value: Any) -> datetime:
    """A stored datetime as the driver returns it (SQLite: text or naive UTC) as an aware datetime."""
    if isinstance(value, str):
        value = parse_datetime(value)  # pragma: no mutate (Django gives datetimes; for text drivers)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value


def claim_slots(names: Sequence[str], *, exclusive: bool) -> set[str]:
    """Take a running slot of each task, atomically: the database, not this process, is the judge.

    ``exclusive``: the only slot (a task that does not allow overlap), else one more. Returns the
    names of the tasks whose slot was taken.
    """
    taken: set[str] = set()
    table, task, count = _table(TaskState), _column(TaskState, "task"), _column(TaskState, "running_count")
    condition = f" AND {count} = 0" if exclusive else ""
    # pragma: no mutate start (an exclusive claim takes a count of 0 only: 1 is count + 1)
    value = "1" if exclusive else f"{count} + 1"
    # pragma: no mutate end
    counted = connection.vendor == "sqlite"
    with connection.cursor() as cursor:
        for start in range(0, len(names), CHUNK):
            chunk = list(names[start : start + CHUNK])
            if counted:
                taken |= _claim_counted(cursor, chunk, exclusive)
                continue
            cursor.execute(
                f"UPDATE {table} SET {count} = {value} "
                f"WHERE {task} IN ({_placeholders(len(chunk))}){condition} RETURNING {task}",
                chunk,
            )
            taken.update(row[0] for row in cursor.fetchall())
    return taken


def _claim_counted(cursor: Any, names: list[str], exclusive: bool) -> set[str]:
    """SQLite: ``claim_slots`` for one chunk without RETURNING (one row stepped per task is one
    hand-over of the GIL, as in ``_insert_counted``); the caller's transaction holds the write lock,
    so what this reads first still holds when it writes.

    The busy tasks are read first (usually none); the update of the others, when it changed as
    many rows, took them all; fewer means some tasks have no state row, and those left are read.
    """
    table, task, count = _table(TaskState), _column(TaskState, "task"), _column(TaskState, "running_count")
    if exclusive:
        cursor.execute(
            f"SELECT {task} FROM {table} WHERE {task} IN ({_placeholders(len(names))}) AND {count} <> 0", names
        )
        busy = {row[0] for row in cursor.fetchall()}
        names = [name for name in names if name not in busy]
        if not names:
            return set()
    # pragma: no mutate start (an exclusive claim takes a count of 0 only: 1 is count + 1)
    value = "1" if exclusive else f"{count} + 1"
    # pragma: no mutate end
    cursor.execute(f"UPDATE {table} SET {count} = {value} WHERE {task} IN ({_placeholders(len(names))})", names)
    if cursor.rowcount == len(names):
        return set(names)
    cursor.execute(f"SELECT {task} FROM {table} WHERE {task} IN ({_placeholders(len(names))})", names)
    return {row[0] for row in cursor.fetchall()}


@dataclass
class RunOutcome:
    """How one run ended, to be written to its record and its task's state."""

    record_id: int
    task_name: str
    status: TaskStatus
    started_at: datetime | None
    finished_at: datetime
    duration_seconds: float | None
    message: str
    error: str
    data: dict[str, Any]


def finish_runs(outcomes: Sequence[RunOutcome]) -> list[bool]:
    """Write outcomes of ``running`` records and release their slots, in the caller's transaction.

    Returns, per outcome, whether it was written: a record no longer ``running`` (another process
    decided the run was dead) keeps that verdict and its task's state is left alone. A fixed number
    of statements whatever the batch size (``executemany`` is one round trip on PostgreSQL).
    """
    record = TaskExecutionRecord
    record_table, id_column, status_column = _table(record), _column(record, "id"), _column(record, "status")
    # Locked (on PostgreSQL) so that no reaper turns them `interrupted` between this read and the writes.
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    running: set[int] = set()
    with connection.cursor() as cursor:
        ids = sorted(outcome.record_id for outcome in outcomes)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            cursor.execute(
                f"SELECT {id_column} FROM {record_table} "
                f"WHERE {id_column} IN ({_placeholders(len(chunk))}) AND {status_column} = %s{lock}",
                [*chunk, TaskStatus.RUNNING.value],
            )
            running.update(row[0] for row in cursor.fetchall())
        todo = [outcome for outcome in outcomes if outcome.record_id in running]
        if todo:
            _write_records(cursor, todo)
            _write_states(cursor, todo)
    return [outcome.record_id in running for outcome in outcomes]


def _write_records(cursor: Any, outcomes: list[RunOutcome]) -> None:
    record = TaskExecutionRecord
    fields = ("status", "started_at", "finished_at", "duration_seconds", "message", "error", "data")
    to_db = _datetimes()
    no_data = _json({})
    cursor.executemany(
        f"UPDATE {_table(record)} SET "
        + ", ".join(f"{_column(record, name)} = %s" for name in fields)
        + f" WHERE {_column(record, 'id')} = %s",
        [
            [
                outcome.status.value,
                to_db(outcome.started_at),
                to_db(outcome.finished_at),
                outcome.duration_seconds,
                outcome.message,
                outcome.error,
                no_data if outcome.data == {} else _json(outcome.data),  # pragma: no mutate (no_data is _json({}))
                outcome.record_id,
            ]
            for outcome in outcomes
        ],
    )


def _write_states(cursor: Any, outcomes: list[RunOutcome]) -> None:
    """One running slot back and the counters of each outcome; rows in name order (no lock cycles)."""
    state = TaskState
    count, failures = _column(state, "running_count"), _column(state, "consecutive_failures")
    common = (
        f"UPDATE {_table(state)} SET {count} = CASE WHEN {count} > 0 THEN {count} - 1 ELSE 0 END, "
        f"{_column(state, 'run_count')} = {_column(state, 'run_count')} + 1, "
        f"{_column(state, 'last_result')} = %s, {_column(state, 'last_run_at')} = %s, "
        f"{_column(state, 'last_finished_at')} = %s"
    )
    where = f" WHERE {_column(state, 'task')} = %s"
    statements = {
        "success": f"{common}, {_column(state, 'last_success_at')} = %s, {failures} = 0{where}",
        "failure": (
            f"{common}, {_column(state, 'fail_count')} = {_column(state, 'fail_count')} + 1, "
            f"{failures} = {failures} + 1{where}"
        ),
        "other": common + where,
    }
    params: dict[str, list[list[Any]]] = {kind: [] for kind in statements}
    to_db = _datetimes()
    for outcome in sorted(outcomes, key=lambda outcome: (outcome.task_name, outcome.record_id)):
        finished = to_db(outcome.finished_at)
        values = [outcome.status.value, to_db(outcome.started_at), finished]
        if outcome.status == TaskStatus.SUCCESS:
            params["success"].append([*values, finished, outcome.task_name])
        elif outcome.status in FAILURE_STATUSES:
            params["failure"].append([*values, outcome.task_name])
        else:
            params["other"].append([*values, outcome.task_name])
    for kind, rows in params.items():
        if rows:
            cursor.executemany(statements[kind], rows)


def _pending_literal() -> str:
    # A literal, not a parameter: SQLite uses the partial index `record_pending` only when the
    # query's own condition implies the index's, which a bound parameter never does.
    return f"'{TaskStatus.PENDING.value}'"


def ready_runs(
    *, now: datetime, limit: int, allow_overlap: Sequence[str] = (), expired_before: datetime | None = None
) -> list[tuple[int, str, str, datetime]]:
    """Queued runs that can start now, oldest first: (record id, task, trigger, created_at).

    One query on the pending index, so that queued work that cannot start yet (retries not due,
    fires kept by ``buffer_one`` or manual runs whose task is busy) never fills the ``limit`` and
    holds back what can. Ready are: retries that are due (they are skipped if their task is busy);
    a fire kept by ``buffer_one`` once its task is idle (normally the run it waits for starts it);
    a manual run when its task is idle, allows overlap (``allow_overlap``: task names), or when it
    was created before ``expired_before`` (it waited long enough: it starts or is given up).
    """
    record, state = TaskExecutionRecord, TaskState
    r_task, r_trigger = f"r.{_column(record, 'task')}", f"r.{_column(record, 'trigger')}"
    idle = f"COALESCE(s.{_column(state, 'running_count')}, 0) = 0"
    manual = [idle]
    params: list[Any] = [Trigger.RETRY.value, _datetime(now), Trigger.SCHEDULED.value, Trigger.MANUAL.value]
    if allow_overlap:
        manual.append(f"{r_task} IN ({_placeholders(len(allow_overlap))})")
        params += list(allow_overlap)
    if expired_before is not None:
        manual.append(f"r.{_column(record, 'created_at')} <= %s")
        params.append(_datetime(expired_before))
    scheduled_at = f"r.{_column(record, 'scheduled_at')}"
    sql = (
        f"SELECT r.{_column(record, 'id')}, {r_task}, {r_trigger}, r.{_column(record, 'created_at')} "
        f"FROM {_table(record)} r LEFT JOIN {_table(state)} s ON s.{_column(state, 'task')} = {r_task} "
        f"WHERE r.{_column(record, 'status')} = {_pending_literal()} AND ("
        f"({r_trigger} = %s AND ({scheduled_at} IS NULL OR {scheduled_at} <= %s)) "
        f"OR ({r_trigger} = %s AND {idle}) "
        f"OR ({r_trigger} = %s AND ({' OR '.join(manual)}))"  # pragma: no mutate (SQL keywords ignore case)
        f") ORDER BY r.{_column(record, 'id')} LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        return [(row[0], row[1], row[2], _instant(row[3])) for row in cursor.fetchall()]


def tasks_with_queued_manual_runs() -> set[str]:
    """Tasks with a queued manual run (one that waits for its task's current run, or about to start)."""
    record = TaskExecutionRecord
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT {_column(record, 'task')} FROM {_table(record)} "
            f"WHERE {_column(record, 'status')} = {_pending_literal()} AND {_column(record, 'trigger')} = %s",
            [Trigger.MANUAL.value],
        )
        return {row[0] for row in cursor.fetchall()}


def newest_pending_sql() -> str:
    """The id of the newest queued record, one index probe: a cheap sign that a run was queued."""
    record = TaskExecutionRecord
    return (
        f"SELECT MAX({_column(record, 'id')}) FROM {_table(record)} "
        f"WHERE {_column(record, 'status')} = {_pending_literal()}"
    )


def newest_pending_id() -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(newest_pending_sql())
        row = cursor.fetchone()
    return row[0] if row else None
