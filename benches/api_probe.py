"""API scenario helper, run in a subprocess with ``benches.settings``.

``populate --rows R`` creates the task rows of the ``BENCH_TASKS`` generated tasks and R history
records spread over them.
``measure --requests K`` times the API pages in process with Django's test client, as a staff user,
and counts SQL queries per request; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

PAGES = {
    "status": "/scheduler/status",
    "task_list": "/scheduler/tasks",
    "history": "/scheduler/tasks/noop_00000/history",
}


def populate(rows: int) -> None:
    from django.db import connection, transaction

    from scheduler_app.models import TaskExecutionRecord, TaskState
    from scheduler_app.registry import task_registry
    from scheduler_app.services import sync_task_rows

    sync_task_rows()
    names = task_registry.names()
    # Raw batched INSERTs built from the model's own fields and defaults, so that a field added to
    # the model later still gets its default; a million ORM objects would take minutes.
    template = TaskExecutionRecord(
        task_id=names[0], trigger="scheduled", status="success", duration_seconds=0.001, message="ok",
        origin="scheduler", worker_label="bench:1",
    )  # fmt: skip
    fields = [f for f in TaskExecutionRecord._meta.concrete_fields if not f.primary_key]
    varying = {"task", "scheduled_at", "created_at", "started_at", "finished_at"}
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = f"INSERT INTO {connection.ops.quote_name(TaskExecutionRecord._meta.db_table)} ({columns}) VALUES ("
    sql += ", ".join(["%s"] * len(fields)) + ")"
    constant = {f.name: f.get_db_prep_save(getattr(template, f.attname), connection) for f in fields}
    start = datetime.now(UTC) - timedelta(seconds=rows)
    adapt = connection.ops.adapt_datetimefield_value
    batch = 20_000
    with transaction.atomic(), connection.cursor() as cursor:
        for offset in range(0, rows, batch):
            params = []
            for index in range(offset, min(rows, offset + batch)):
                at = adapt(start + timedelta(seconds=index))
                values = {"task": names[index % len(names)], "scheduled_at": at, "created_at": at,
                          "started_at": at, "finished_at": at}  # fmt: skip
                params.append(tuple(values[f.name] if f.name in varying else constant[f.name] for f in fields))
            cursor.executemany(sql, params)
        TaskState.objects.update(run_count=rows // max(1, len(names)), last_result="success")
    print(json.dumps({"tasks": len(names), "rows": TaskExecutionRecord.objects.count()}), flush=True)


def measure(requests: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
    client = Client()
    client.force_login(user)
    results: dict[str, dict[str, object]] = {}
    for page, url in PAGES.items():
        for _ in range(2):
            client.get(url)
        times = []
        queries = []
        status = None
        for _ in range(requests):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - started) * 1000)
            status = response.status_code
            queries.append(len(captured.captured_queries))
        times.sort()
        results[page] = {
            "url": url,
            "status": status,
            "p50_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
            "queries": statistics.median(queries),
        }
    print(json.dumps(results), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["populate", "measure"])
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benches.settings")
    import django

    django.setup()
    if args.action == "populate":
        populate(args.rows)
    else:
        measure(args.requests)


if __name__ == "__main__":
    main()
