"""The seed's task API: ``BaseTask``, ``TaskSchedule``, ``ScheduleType`` and ``TaskResult``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

# The schedule's enums and option defaults are declared in options.py; they are part of the task API.
from scheduler_app.options import OPTION_DEFAULTS as OPTION_DEFAULTS
from scheduler_app.options import CatchUp as CatchUp
from scheduler_app.options import OverlapPolicy as OverlapPolicy
from scheduler_app.options import RetryBackoff as RetryBackoff
from scheduler_app.options import ScheduleType as ScheduleType


@dataclass(frozen=True)
class TaskSchedule:
    """When a task fires, and what happens at the edges (overlap, downtime, failures).

    Construction never raises: a schedule is validated when its task is registered (and by
    ``manage.py check``), so that the error can name the task.
    """

    schedule_type: ScheduleType | str
    cron_expression: str | None = None
    interval_seconds: int | None = None
    allow_concurrent: bool = False
    # IANA zone name for cron expressions; None means settings.TIME_ZONE.
    timezone: str | None = None
    # Each fire waits a random 0..jitter_seconds, to spread tasks that share a minute.
    jitter_seconds: int = 0
    # None: "allow" when allow_concurrent, else "skip".
    overlap: OverlapPolicy | str | None = None
    catch_up: CatchUp | str = CatchUp.ONCE
    # Fires later than this are recorded as missed; None: SCHEDULER["MISFIRE_GRACE_SECONDS"].
    catch_up_window_seconds: int | None = None
    # A failed or timed-out run is tried again up to max_retries times, each attempt its own record.
    max_retries: int = 0
    retry_backoff: RetryBackoff | str = RetryBackoff.EXPONENTIAL
    retry_delay_seconds: float = 10
    retry_max_delay_seconds: float = 3600
    # No fire before start_date or after end_date (aware datetimes).
    start_date: datetime | None = None
    end_date: datetime | None = None

    def options(self) -> dict[str, object]:
        """The policy fields as JSON-ready values (what TaskConfig stores)."""
        values: dict[str, object] = {}
        for key in OPTION_DEFAULTS:
            value = getattr(self, key)
            if isinstance(value, StrEnum):
                value = value.value
            elif isinstance(value, datetime):
                value = value.isoformat()
            values[key] = value
        return values

    @property
    def type(self) -> ScheduleType:
        return ScheduleType(self.schedule_type)


class TaskStatus(StrEnum):
    """Status of one execution record."""

    PENDING = "pending"
    # Handed to a django.tasks backend (SCHEDULER["EXECUTOR"]): its task's slot is held, a worker has not
    # started it yet.
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    MISSED = "missed"


# Runs not ended yet: never a task's last result.
OPEN_STATUSES = (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING)
# Statuses whose duration is the time a task's code ran (skipped and missed runs ran nothing).
RAN_STATUSES = (TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.INTERRUPTED)


@dataclass
class TaskResult:
    """What ``BaseTask.run()`` returns: an outcome, a message, and a JSON object of data."""

    status: TaskStatus
    message: str = ""
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, message: str = "", **data: Any) -> TaskResult:
        return cls(TaskStatus.SUCCESS, message=message, data=data)

    @classmethod
    def failed(cls, error: str, message: str = "", **data: Any) -> TaskResult:
        return cls(TaskStatus.FAILED, message=message, error=error, data=data)

    @classmethod
    def skipped(cls, message: str = "", **data: Any) -> TaskResult:
        return cls(TaskStatus.SKIPPED, message=message, data=data)

    @property
    def is_success(self) -> bool:
        return self.status == TaskStatus.SUCCESS


class BaseTask(ABC):
    """A unit of scheduled work. Subclass it, set the class attributes, implement ``run()``.

    ``run`` may be ``async def`` (preferred) or a plain ``def``; it returns a ``TaskResult``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    schedule: ClassVar[TaskSchedule]
    enabled: ClassVar[bool] = True
    # Seconds before a run is stopped and recorded as ``timeout``; None: SCHEDULER["DEFAULT_TIMEOUT"].
    timeout: ClassVar[float | None] = None
    # Failed or timed-out runs in a row before an alert; None: SCHEDULER["ALERT_AFTER_FAILURES"], 0: never.
    alert_after_failures: ClassVar[int | None] = None
    # Where runs execute: "local" (this scheduler's worker threads) or the alias of a django.tasks backend
    # in settings.TASKS (README: Scaling out); None: SCHEDULER["EXECUTOR"].
    executor: ClassVar[str | None] = None

    @abstractmethod
    def run(self) -> TaskResult | Awaitable[TaskResult]:
        """Do the work and return a ``TaskResult``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'name', '?')!r}>"
