"""CPU per fire of our dispatch path, in one process: ``python -m benches.fire_cpu --tasks 1000 --rounds 5``.

Lateness on a shared machine swings with its load; the CPU our process spends per fire moves much
less, and it is what decides how many fires a second one scheduler keeps up with (all of its
threads share one core's worth of Python under the GIL). This drives the scheduler's own path
(``Dispatcher.run_fires``: missed-run policy, claim and record in chunks, hand-off to the worker
pool, the run, the finisher's outcome write) with N no-op tasks on a throw-away SQLite database,
one fire per task per round, and prints the process's CPU per fire (all threads), median of the
rounds. APScheduler's own loop is not in it (``benches.run`` measures the whole process).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kind", choices=["sync", "async"], default="sync")
    parser.add_argument(
        "--until-started",
        action="store_true",
        help="measure until every run's code has ended, with the outcomes held (what a burst waits for)",
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="fire-cpu-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}",
        DJANGO_SETTINGS_MODULE="benches.settings",
        BENCH_TASKS=str(args.tasks),
        BENCH_TASK_KIND=args.kind,
    )
    import django

    django.setup()
    from django.core.management import call_command

    from scheduler_app import runner as runner_module
    from scheduler_app.dispatch import Dispatcher
    from scheduler_app.models import TaskConfig
    from scheduler_app.registry import task_registry
    from scheduler_app.runner import TaskRunner
    from scheduler_app.task_rows import sync_task_rows

    call_command("migrate", verbosity=0)
    sync_task_rows(task_registry)
    configs = {config.name: config for config in TaskConfig.objects.all()}

    class Jobs:  # what the dispatcher asks of JobSync, from the rows read once
        allow_overlap: list[str] = []

        @staticmethod
        def config(name: str) -> TaskConfig | None:
            return configs.get(name)

    runner = TaskRunner()
    hold = threading.Event()
    if args.until_started:
        # The finisher holds the outcomes while "fires are claimed", as in a burst; released after each round.
        runner_module.FINISH_MAX_DEFER_SECONDS = 600.0
        runner.claims_waiting = hold.is_set
    dispatcher = Dispatcher(task_registry, runner, Jobs(), threading.Event(), lambda: True)  # type: ignore[arg-type]
    names = sorted(configs)
    base = datetime.now(UTC).replace(microsecond=0)
    per_fire = []
    for round_ in range(args.rounds + 1):
        at = base + timedelta(seconds=round_)
        batch = [(name, [at + timedelta(microseconds=i)], None) for i, name in enumerate(names)]
        hold.set()
        cpu, wall = time.process_time(), time.perf_counter()
        dispatcher.run_fires(batch)
        if args.until_started:
            deadline = time.monotonic() + 120
            while runner.in_flight() and time.monotonic() < deadline:
                time.sleep(0.001)
        else:
            hold.clear()
            if not runner.drain(120):
                sys.exit("the runs did not end within 120 s")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        hold.clear()
        if not runner.drain(120):
            sys.exit("the runs did not end within 120 s")
        if round_:  # the first round warms caches and starts the workers
            per_fire.append(cpu / len(names) * 1e6)
            print(f"round {round_}: {per_fire[-1]:.0f} us CPU per fire, {wall * 1000:.0f} ms wall")
    runner.close()
    what = "until the runs ended, outcomes held" if args.until_started else "until the outcomes were written"
    print(f"median: {statistics.median(per_fire):.0f} us CPU per fire ({args.tasks} tasks, {args.kind}, {what})")


if __name__ == "__main__":
    main()
