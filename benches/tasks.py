"""Generated no-op tasks for benchmark processes, sized by environment variables.

``SCHEDULER["TASKS"]`` takes dotted paths, so the classes are created as attributes of this
module when it is imported: ``BENCH_TASKS`` of them, firing every ``BENCH_INTERVAL`` seconds.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from benches.jobs import phase_offset
from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule

COUNT = int(os.environ.get("BENCH_TASKS", "0"))
INTERVAL = int(os.environ.get("BENCH_INTERVAL", "1"))
# "async" is the form the design prefers; "sync" is a plain def.
KIND = os.environ.get("BENCH_TASK_KIND", "async")
# Seconds a "sync" task's run takes (the pickup scenario's 50 ms task); 0 returns at once.
SLEEP = float(os.environ.get("BENCH_TASK_SLEEP", "0"))
# aligned | spread100 | uniform (benches.jobs.PHASES): each task's start_date is a whole second in the
# past plus its phase. Unset: no start_date, every task in phase with the process's start.
PHASES = os.environ.get("BENCH_PHASES", "")
PHASE_BASE = datetime(2026, 1, 1, tzinfo=UTC)


class _AsyncNoop(BaseTask):
    description = "Benchmark no-op."

    async def run(self) -> TaskResult:
        return TaskResult.success("ok")


class _SyncNoop(BaseTask):
    description = "Benchmark no-op."

    def run(self) -> TaskResult:
        if SLEEP:
            time.sleep(SLEEP)
        return TaskResult.success("ok")


def task_name(index: int) -> str:
    return f"noop_{index:05d}"


def _build() -> list[str]:
    base = _AsyncNoop if KIND == "async" else _SyncNoop
    paths = []
    for index in range(COUNT):
        start = PHASE_BASE + timedelta(seconds=phase_offset(index, COUNT, PHASES, INTERVAL)) if PHASES else None
        schedule = TaskSchedule(
            schedule_type=ScheduleType.INTERVAL, interval_seconds=INTERVAL, allow_concurrent=False, start_date=start
        )
        class_name = f"Noop{index:05d}"
        globals()[class_name] = type(class_name, (base,), {"name": task_name(index), "schedule": schedule})
        paths.append(f"{__name__}.{class_name}")
    return paths


TASK_PATHS = _build()
