"""Baselines: APScheduler 3 alone (memory store) and django-apscheduler as its README sets it up.

README setup: ``BlockingScheduler(timezone=settings.TIME_ZONE)``, ``add_jobstore(DjangoJobStore(),
"default")`` (which also records every run as a ``DjangoJobExecution``), ``add_job(..., max_instances=1,
replace_existing=True)``, APScheduler's default executor and job defaults.

Measurement only: ``run_job`` is wrapped to note when each fire starts and finishes, which APScheduler
does not tell its jobs. Writes a JSON file with the fires and prints ``READY <epoch>`` once started.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["memory", "django"], required=True)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--first-fire", type=float, default=2.0, help="seconds from start to the first fire")
    parser.add_argument("--out", required=True)
    parser.add_argument("--phases", default="aligned", help="aligned | spread100 | uniform (benches.jobs)")
    parser.add_argument("--kind", choices=["sync", "async"], default="sync", help="the job: a def, or a loop per run")
    args = parser.parse_args()

    if args.store == "django":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benches.settings")
        import django

        django.setup()

    import apscheduler.executors.pool as pool
    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_SCHEDULER_STARTED
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    fires: list[tuple[str, float, float | None, float | None]] = []
    original_run_job = pool.run_job

    def timed_run_job(job: Any, alias: str, run_times: list[datetime], logger_name: str) -> list[Any]:
        events = []
        for run_time in run_times:
            started = time.time()
            result = original_run_job(job, alias, [run_time], logger_name)
            ran = bool(result) and result[0].code == EVENT_JOB_EXECUTED
            fires.append((job.id, run_time.timestamp(), started if ran else None, time.time() if ran else None))
            events.extend(result)
        return events

    pool.run_job = timed_run_job

    if args.store == "django":
        from django.conf import settings
        from django_apscheduler.jobstores import DjangoJobStore

        scheduler = BlockingScheduler(timezone=settings.TIME_ZONE)
        scheduler.add_jobstore(DjangoJobStore(), "default")
    else:
        scheduler = BlockingScheduler(timezone="UTC")

    from benches.jobs import phase_offset

    first = datetime.fromtimestamp(math.ceil(time.time()) + args.first_fire, UTC)
    job = "benches.jobs:async_noop" if args.kind == "async" else "benches.jobs:noop"
    for index in range(args.tasks):
        start = first + timedelta(seconds=phase_offset(index, args.tasks, args.phases, args.interval))
        scheduler.add_job(
            job,
            trigger=IntervalTrigger(seconds=args.interval, start_date=start, timezone=UTC),
            id=f"noop_{index:05d}",
            max_instances=1,
            replace_existing=True,
        )

    def started(_: Any) -> None:
        print(f"READY {time.time():.6f}", flush=True)

    scheduler.add_listener(started, EVENT_SCHEDULER_STARTED)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    def stopper() -> None:
        stop.wait()
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    threading.Thread(target=stopper, daemon=True).start()
    scheduler.start()
    with open(args.out, "w") as handle:
        json.dump({"fires": list(fires), "first_fire": first.timestamp(), "interval": args.interval}, handle)
    print(f"STOPPED {len(fires)} fires", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
