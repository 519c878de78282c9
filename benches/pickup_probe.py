"""Pickup scenario helper, run in a subprocess with ``benches.settings`` beside a real ``runscheduler``.

``trigger --count K --seed S`` posts K manual triggers of ``noop_00000`` through the API (Django's
test client, a superuser's session: the whole view, ``request_run`` and its NOTIFY), at random gaps,
waits until every accepted run has ended, and prints one JSON line: per trigger the HTTP status, and
for each accepted run its final status, message, request -> started latency and record created ->
started (the pickup alone).
"""

from __future__ import annotations

import argparse
import json
import random
import time


def trigger(count: int, seed: int, gap: tuple[float, float], settle: float) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    from scheduler_app.models import TaskExecutionRecord

    user = User.objects.create_superuser("bench", password="bench-pw")
    client = Client()
    client.force_login(user)
    # Loads the URLconf, views and serializers, so that the first trigger is not timed with them.
    client.get("/scheduler/tasks/noop_00000")
    rng = random.Random(seed)
    sent: list[tuple[float, int, int | None]] = []
    for _ in range(count):
        time.sleep(rng.uniform(*gap))
        at = time.time()
        response = client.post("/scheduler/tasks/noop_00000/trigger")
        record_id = response.json().get("id") if response.status_code == 202 else None
        sent.append((at, response.status_code, record_id))
    accepted = [record_id for _, _, record_id in sent if record_id is not None]
    deadline = time.monotonic() + settle
    open_runs = TaskExecutionRecord.objects.filter(pk__in=accepted, status__in=["pending", "running"])
    while open_runs.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    records = {r.pk: r for r in TaskExecutionRecord.objects.filter(pk__in=accepted)}
    runs = []
    for at, code, record_id in sent:
        run: dict[str, object] = {"http": code}
        record = records.get(record_id) if record_id is not None else None
        if record is not None:
            run.update(status=record.status, message=record.message)
            if record.started_at is not None and record.status not in ("skipped", "pending"):
                run["latency_ms"] = (record.started_at.timestamp() - at) * 1000
                # From the commit of the pending record: the pickup alone, without the request's own work.
                run["pickup_ms"] = (record.started_at - record.created_at).total_seconds() * 1000
        runs.append(run)
    print(json.dumps({"runs": runs}), flush=True)


def main() -> None:
    import django

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("trigger")
    run.add_argument("--count", type=int, default=30)
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--gap", default="0.25,0.75", help="min,max seconds between two triggers")
    run.add_argument("--settle", type=float, default=30.0, help="seconds to wait for the runs to end")
    args = parser.parse_args()
    django.setup()
    low, high = (float(part) for part in args.gap.split(","))
    trigger(args.count, args.seed, (low, high), args.settle)


if __name__ == "__main__":
    main()
