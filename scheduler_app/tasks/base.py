"""The seed's task API: ``BaseTask``, ``TaskSchedule``, ``ScheduleType`` and ``TaskResult``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


class ScheduleType(StrEnum):
    CRON = "cron"
    INTERVAL = "interval"


@dataclass(frozen=True)
class TaskSchedule:
    """When a task fires.

    Construction never raises: a schedule is validated when its task is registered (and by
    ``manage.py check``), so that the error can name the task.
    """

    schedule_type: ScheduleType | str
    cron_expression: str | None = None
    interval_seconds: int | None = None
    allow_concurrent: bool = False
    # IANA zone name for cron expressions; None means settings.TIME_ZONE.
    timezone: str | None = None

    def validation_errors(self) -> dict[str, str]:
        from scheduler_app.validation import schedule_errors

        return schedule_errors(
            schedule_type=self.schedule_type,
            cron_expression=self.cron_expression,
            interval_seconds=self.interval_seconds,
            timezone=self.timezone,
        )

    @property
    def type(self) -> ScheduleType:
        return ScheduleType(self.schedule_type)

    def describe(self) -> str:
        if self.type is ScheduleType.CRON:
            return f"cron {self.cron_expression}" + (f" ({self.timezone})" if self.timezone else "")
        return f"every {self.interval_seconds}s"


class TaskStatus(StrEnum):
    """Status of one execution record."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    MISSED = "missed"


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

    @abstractmethod
    def run(self) -> TaskResult | Awaitable[TaskResult]:
        """Do the work and return a ``TaskResult``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'name', '?')!r}>"
