"""Tasks the tests schedule in real scheduler processes. Each does something observable."""

import asyncio
import os
import time
from pathlib import Path

from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule


def every(seconds: int, allow_concurrent: bool = False) -> TaskSchedule:
    return TaskSchedule(
        schedule_type=ScheduleType.INTERVAL, interval_seconds=seconds, allow_concurrent=allow_concurrent
    )


class TickTask(BaseTask):
    name = "tick"
    description = "Returns at once; fires every second."
    schedule = every(1)

    async def run(self) -> TaskResult:
        return TaskResult.success("tick", pid=os.getpid())


class SlowTask(BaseTask):
    name = "slow"
    description = "Takes 2.5 s, fires every second, no concurrency: every other fire is skipped."
    schedule = every(1)

    async def run(self) -> TaskResult:
        await asyncio.sleep(2.5)
        return TaskResult.success("slow done")


class BoomTask(BaseTask):
    name = "boom"
    schedule = every(1)

    def run(self) -> TaskResult:
        raise ValueError("boom: the task blew up")


class HangTask(BaseTask):
    name = "hang"
    description = "A plain def that never returns; the runner gives up at its 1 s timeout."
    schedule = every(1)
    timeout = 1

    def run(self) -> TaskResult:
        time.sleep(3600)
        return TaskResult.success("unreachable")


class AsyncHangTask(BaseTask):
    name = "async_hang"
    schedule = every(1)
    timeout = 1

    async def run(self) -> TaskResult:
        await asyncio.sleep(3600)
        return TaskResult.success("unreachable")


class GarbageTask(BaseTask):
    name = "garbage"
    schedule = every(3600)

    def run(self):
        return 42


class LongTask(BaseTask):
    """Runs for TEST_LONG_TASK_SECONDS (default 30) and leaves a marker file while it runs."""

    name = "long"
    schedule = every(3600)
    enabled = False

    async def run(self) -> TaskResult:
        marker = os.environ.get("TEST_MARKER_FILE")
        if marker:
            Path(marker).write_text(str(os.getpid()))
        await asyncio.sleep(float(os.environ.get("TEST_LONG_TASK_SECONDS", "30")))
        return TaskResult.success("long done")


class CronTask(BaseTask):
    name = "nightly"
    schedule = TaskSchedule(schedule_type=ScheduleType.CRON, cron_expression="0 2 * * *")

    def run(self) -> TaskResult:
        return TaskResult.success("nightly done")


# -- the fleet (tests/test_fleet.py): the same kinds of task, run by django.tasks workers ---------------


class FleetTickTask(TickTask):
    name = "fleet_tick"
    description = "Returns at once with the pid that ran it, on the fleet's workers; fires every second."
    executor = "fleet"

    def run(self) -> TaskResult:
        marker = os.environ.get("TEST_MARKER_FILE")
        if marker:
            with open(marker, "a") as file:
                file.write(f"{os.getpid()}\n")
        return TaskResult.success("tick", pid=os.getpid())


class FleetSlowTask(BaseTask):
    name = "fleet_slow"
    description = "Takes 1.5 s, fires every second, no concurrency, on the fleet's workers."
    executor = "fleet"
    schedule = every(1)

    def run(self) -> TaskResult:
        time.sleep(1.5)
        return TaskResult.success("slow done", pid=os.getpid())


class FleetHangTask(HangTask):
    name = "fleet_hang"
    executor = "fleet"
    schedule = every(3600)
    enabled = False


class FleetLongTask(LongTask):
    name = "fleet_long"
    executor = "fleet"


class FleetBoomTask(BoomTask):
    name = "fleet_boom"
    executor = "fleet"
    schedule = every(3600)
