"""Deliberately broken task definitions, for the registration errors and system checks."""

from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule


class BadCronTask(BaseTask):
    name = "bad_cron"
    schedule = TaskSchedule(schedule_type=ScheduleType.CRON, cron_expression="61 * * * *")

    def run(self) -> TaskResult:
        return TaskResult.success()


class ZeroIntervalTask(BaseTask):
    name = "zero_interval"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=0)

    def run(self) -> TaskResult:
        return TaskResult.success()


class UnknownTypeTask(BaseTask):
    name = "unknown_type"
    schedule = TaskSchedule(schedule_type="fortnightly")

    def run(self) -> TaskResult:
        return TaskResult.success()


class BadNameTask(BaseTask):
    name = "Bad-Name"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60)

    def run(self) -> TaskResult:
        return TaskResult.success()


class TickTwinTask(BaseTask):
    """Uses the name of tests.tasks.TickTask."""

    name = "tick"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60)

    def run(self) -> TaskResult:
        return TaskResult.success()


class NotATask:
    name = "not_a_task"


class NowhereTask(BaseTask):
    """Runs on a backend that settings.TASKS does not have."""

    name = "runs_nowhere"
    executor = "nowhere"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60)

    def run(self) -> TaskResult:
        return TaskResult.success()


class ImmediateTask(BaseTask):
    """Runs on the "default" backend of the test settings: ImmediateBackend, which has no workers."""

    name = "runs_immediately"
    executor = "default"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60)

    def run(self) -> TaskResult:
        return TaskResult.success()
