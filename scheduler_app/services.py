"""The operations people perform on tasks. The API, the admin and the commands all call these, so
each rule (validation, "enable", "trigger") is written once."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from scheduler_app.exceptions import TaskBusy, TaskNotFound
from scheduler_app.ledger import Ledger
from scheduler_app.models import TaskConfig, TaskExecutionRecord
from scheduler_app.notify import announce_pending
from scheduler_app.registry import TaskRegistry, task_registry
from scheduler_app.task_rows import sync_task_rows as sync_task_rows
from scheduler_app.tasks.base import OPTION_DEFAULTS, OverlapPolicy, ScheduleType
from scheduler_app.validation import (
    ScheduleValidationError,
    disabled_reason_error,
    options_errors,
    parse_datetime_option,
    schedule_errors,
    timeout_error,
)

logger = logging.getLogger("scheduler_app.services")

__all__ = [
    "clear_options",
    "clear_schedule",
    "disable_task",
    "enable_task",
    "get_task",
    "registered_tasks",
    "request_run",
    "set_options",
    "set_schedule",
    "set_timeout",
    "sync_task_rows",
]


def registered_tasks(registry: TaskRegistry | None = None) -> QuerySet[TaskConfig]:
    """Configuration rows of the registered tasks, with their state, in one query."""
    registry = registry or task_registry
    return TaskConfig.objects.filter(name__in=registry.names()).select_related("state").order_by("name")


def get_task(name: str, registry: TaskRegistry | None = None) -> TaskConfig:
    registry = registry or task_registry
    if name not in registry:
        raise TaskNotFound(name, registry.names())
    config = registered_tasks(registry).filter(name=name).first()
    if config is None:
        sync_task_rows(registry)
        config = registered_tasks(registry).get(name=name)
    return config


def _change(name: str, user: Any, message: str, **changes: Any) -> TaskConfig:
    config = get_task(name)
    # (A default of None instead of False is as false: an equivalent mutant.)
    authenticated = getattr(user, "is_authenticated", False)  # pragma: no mutate
    with transaction.atomic():
        TaskConfig.objects.filter(name=name).update(
            **changes,
            revision=F("revision") + 1,
            updated_at=timezone.now(),
            updated_by=user if authenticated else None,
        )
        if authenticated:
            LogEntry.objects.log_actions(
                user_id=user.pk,
                queryset=TaskConfig.objects.filter(name=name),
                action_flag=CHANGE,
                change_message=message,
                single_object=True,  # pragma: no mutate (only what log_actions returns; the entry is the same)
            )
    logger.info("task %s: %s (by %s)", name, message, getattr(user, "username", None) or "code")
    config.refresh_from_db()
    return config


def enable_task(name: str, user: Any = None) -> TaskConfig:
    return _change(name, user, "Enabled.", enabled_override=True, disabled_reason="")


def disable_task(name: str, user: Any = None, reason: str = "") -> TaskConfig:
    """Disable ``name``; ``reason`` is shown with it. Raises ``ScheduleValidationError`` for a bad reason."""
    if error := disabled_reason_error(reason):
        raise ScheduleValidationError({"reason": error}, subject=f"task {name!r}")
    message = f"Disabled: {reason}" if reason else "Disabled."
    return _change(name, user, message, enabled_override=False, disabled_reason=reason or "")


def set_schedule(
    name: str,
    *,
    schedule_type: str,
    cron_expression: str | None = None,
    interval_seconds: int | None = None,
    timezone_name: str | None = None,
    user: Any = None,
) -> TaskConfig:
    """Override the code's schedule; raises ``ScheduleValidationError`` naming each bad field."""
    config = get_task(name)
    errors = schedule_errors(
        schedule_type=schedule_type,
        cron_expression=cron_expression,
        interval_seconds=interval_seconds,
        timezone=timezone_name,
    )
    if errors:
        raise ScheduleValidationError(errors, subject=f"task {name!r}")
    kind = ScheduleType(schedule_type)
    cron = cron_expression.strip() if kind is ScheduleType.CRON and cron_expression else ""
    interval = int(interval_seconds) if kind is ScheduleType.INTERVAL and interval_seconds else None
    # The zone belongs to a cron schedule's meaning: the audit trail says which one it runs in.
    zone = timezone_name or config.default_timezone or settings.TIME_ZONE
    described = f"cron {cron!r} in {zone}" if kind is ScheduleType.CRON else f"every {interval}s"
    return _change(
        name,
        user,
        f"Schedule overridden: {described}.",
        schedule_type_override=kind.value,
        cron_expression_override=cron,
        interval_seconds_override=interval,
        timezone_override=timezone_name or "",
    )


def clear_schedule(name: str, user: Any = None) -> TaskConfig:
    """Go back to the schedule defined in code."""
    return _change(
        name,
        user,
        "Schedule reset to the code default.",
        schedule_type_override="",
        cron_expression_override="",
        interval_seconds_override=None,
        timezone_override="",
    )


def set_timeout(name: str, timeout: float | None, user: Any = None) -> TaskConfig:
    """Override the run time limit; None goes back to the code's (or the settings') default."""
    if message := timeout_error(timeout):
        raise ScheduleValidationError({"timeout": message}, subject=f"task {name!r}")
    label = f"Timeout overridden: {timeout:g}s." if timeout is not None else "Timeout reset to the default."
    return _change(name, user, label, timeout_override=timeout)


def set_options(name: str, options: dict[str, Any], user: Any = None) -> TaskConfig:
    """Override schedule policies (jitter, overlap, catch_up, catch_up_window_seconds, max_retries,
    retry_backoff, retry_delay_seconds, retry_max_delay_seconds, start_date, end_date); a key set
    to None goes back to the code's value. Raises ``ScheduleValidationError`` naming each bad field."""
    config = get_task(name)
    changes = dict(options)  # the choices are StrEnums: stored and shown as their values
    override = dict(config.options_override or {})
    for key, value in changes.items():
        if value is None:
            override.pop(key, None)
        else:
            override[key] = value
    # A None resets that key to the code's value: nothing to check but the key's name.
    errors = options_errors({k: v for k, v in changes.items() if v is not None or k not in OPTION_DEFAULTS})
    if not errors:
        effective = {**OPTION_DEFAULTS, **(config.default_options or {}), **override}
        errors = options_errors(effective)
    if errors:
        raise ScheduleValidationError(errors, subject=f"task {name!r}")
    for key in ("start_date", "end_date"):
        if override.get(key) is not None:
            override[key] = parse_datetime_option(override[key]).isoformat()  # type: ignore[union-attr]
    described = ", ".join(f"{key}={value}" for key, value in sorted(changes.items()))
    return _change(name, user, f"Schedule options set: {described}.", options_override=override)


def clear_options(name: str, user: Any = None) -> TaskConfig:
    """Go back to the schedule policies defined in code."""
    return _change(name, user, "Schedule options reset to the code defaults.", options_override={})


def request_run(name: str, user: Any = None, origin: str = "api") -> TaskExecutionRecord:
    """Queue a manual run as a ``pending`` record; the active scheduler starts it at once.

    It never runs the task in the calling process. A task that is running and does not allow
    concurrent runs is refused with ``TaskBusy``; a disabled task may still be run by hand. A run
    accepted here always runs: if a scheduled fire took the task by the time the scheduler picks
    it up, it waits for that run to end (at most ``MANUAL_RUN_MAX_WAIT``).
    """
    config = get_task(name)
    if config.overlap_policy != OverlapPolicy.ALLOW and config.state.running_count:
        raise TaskBusy(name)
    record = Ledger().queue_manual(name, user=user, origin=origin)
    # (A default of None instead of False is as false: an equivalent mutant.)
    if getattr(user, "is_authenticated", False):  # pragma: no mutate
        LogEntry.objects.log_actions(
            user_id=user.pk,
            queryset=TaskConfig.objects.filter(name=name),
            action_flag=CHANGE,
            change_message=f"Run requested (record {record.pk}).",
            single_object=True,  # pragma: no mutate (only what log_actions returns; the entry is the same)
        )
    logger.info("task %s: manual run %s queued by %s", name, record.pk, getattr(user, "username", origin))
    announce_pending()
    return record
