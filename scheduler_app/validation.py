"""Every rule about what a valid task and schedule is, in one place.

Code registration, ``manage.py check``, the API serializers and the admin forms all call these
functions, so that a rule is never written twice.
"""

from __future__ import annotations

import functools
import math
import re
import zoneinfo
from typing import Any

from scheduler_app.options import (
    CHOICE,
    DATETIME,
    OPTIONS,
    OPTIONS_BY_NAME,
    SECONDS,
    WHOLE,
    ScheduleType,
)

# The bounds are declared with the options (options.py imports nothing of the project) and are named
# here too, beside every rule that uses them.
from scheduler_app.options import MAX_DURATION_SECONDS as MAX_DURATION_SECONDS
from scheduler_app.options import MAX_INTERVAL_SECONDS as MAX_INTERVAL_SECONDS
from scheduler_app.options import MAX_JITTER_SECONDS as MAX_JITTER_SECONDS
from scheduler_app.options import MAX_RETRIES as MAX_RETRIES
from scheduler_app.options import MAX_TIMEOUT_SECONDS as MAX_TIMEOUT_SECONDS
from scheduler_app.options import MIN_SECONDS as MIN_SECONDS
from scheduler_app.tasks.base import BaseTask, OverlapPolicy, TaskSchedule

# The date bounds and their parsing live with the triggers built from them (a trigger needs them
# and this module imports triggers.py); they are named here too, beside the rules that use them.
from scheduler_app.triggers import CRON_ALIASES as CRON_ALIASES
from scheduler_app.triggers import EARLIEST_DATE as EARLIEST_DATE
from scheduler_app.triggers import LATEST_DATE as LATEST_DATE
from scheduler_app.triggers import CronSyntaxError, parse_cron
from scheduler_app.triggers import parse_datetime_option as parse_datetime_option

TASK_NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")
TASK_NAME_MAX_LENGTH = 100

# Text limits: the same in the API, the admin and code.
CRON_EXPRESSION_MAX_LENGTH = 200
TIMEZONE_MAX_LENGTH = 64
DISABLED_REASON_MAX_LENGTH = 1000
# Numbers typed as text (a form, a form-encoded API call): ASCII only, so that "٣" is no 3.
ASCII_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
ASCII_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
# Names zoneinfo can load that are not zones an operator means: the host's own zone under another
# name, a POSIX-rules template, and the "Factory" placeholder zone.
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


class ScheduleValidationError(ValueError):
    """A schedule that breaks one or more rules; ``errors`` maps each bad field to its message."""

    def __init__(self, errors: dict[str, str], subject: str | None = None) -> None:
        self.errors = errors
        self.subject = subject
        detail = "; ".join(f"{field}: {message}" for field, message in errors.items())
        super().__init__(f"{subject}: {detail}" if subject else detail)


def task_name_error(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "a task needs a non-empty string `name`"
    if len(name) > TASK_NAME_MAX_LENGTH:
        return f"task name {name!r} is longer than {TASK_NAME_MAX_LENGTH} characters"
    if not TASK_NAME_PATTERN.match(name):
        return f"task name {name!r} may contain only lowercase letters, digits and underscores"
    return None


def cron_expression_error(expression: Any) -> str | None:
    """Why ``expression`` is not a crontab(5) expression that can fire (None when it is one).

    Exactly crontab(5) and the @ macros are accepted; extensions of other cron dialects (``?``,
    ``L``, ``W``, ``#``, seconds or year fields, reversed ranges) are refused by name.
    """
    if not isinstance(expression, str) or not expression.strip():
        return "a cron schedule needs a cron expression, e.g. '0 2 * * *'"
    expression = expression.strip()
    try:
        parse_cron(expression)
    except CronSyntaxError as exc:
        return str(exc)
    return None


def interval_error(interval_seconds: Any) -> str | None:
    if isinstance(interval_seconds, float) and interval_seconds.is_integer():
        interval_seconds = int(interval_seconds)
    if isinstance(interval_seconds, bool) or not isinstance(interval_seconds, int):
        return (
            "an interval schedule needs `interval_seconds`, a whole number of seconds greater than 0 "
            f"(got {interval_seconds!r})"
        )
    if interval_seconds <= 0:
        return f"interval_seconds must be greater than 0 (got {interval_seconds})"
    if interval_seconds > MAX_INTERVAL_SECONDS:
        return f"interval_seconds must be at most {MAX_INTERVAL_SECONDS} (got {interval_seconds})"
    return None


@functools.cache
def known_zones() -> frozenset[str]:
    """The IANA zones an operator may name (read once: a scan of the tz database)."""
    return frozenset(zoneinfo.available_timezones()) - NOT_ZONES


def timezone_error(name: Any) -> str | None:
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        return "timezone must be an IANA zone name such as 'Europe/Berlin'"
    # A membership test, not ZoneInfo(name): a folder of the tz database ("Europe") would raise
    # IsADirectoryError there, and "localtime" would load the host's zone.
    if len(name) > TIMEZONE_MAX_LENGTH or name not in known_zones():
        return f"unknown time zone {name[:TIMEZONE_MAX_LENGTH]!r}; use an IANA name such as 'Europe/Berlin'"
    return None


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def timeout_error(timeout: Any) -> str | None:
    if timeout is None:
        return None
    if not _is_number(timeout):
        return "timeout must be a number of seconds"
    if timeout <= 0:
        return f"timeout must be greater than 0 (got {timeout})"
    if not MIN_SECONDS <= timeout <= MAX_TIMEOUT_SECONDS:
        return f"timeout must be from {MIN_SECONDS:g} to {MAX_TIMEOUT_SECONDS} seconds (30 days) (got {timeout:g})"
    return None


def text_error(field: str, value: Any, max_length: int) -> str | None:
    """Free text: a string of at most ``max_length`` characters, without NUL (PostgreSQL refuses it)."""
    if not isinstance(value, str):
        return f"{field} must be text"
    if "\x00" in value:
        return f"{field} must not contain NUL characters"
    if len(value) > max_length:
        return f"{field} must be at most {max_length} characters (got {len(value)})"
    return None


def disabled_reason_error(reason: Any) -> str | None:
    if reason is None:
        return None
    return text_error("reason", reason, DISABLED_REASON_MAX_LENGTH)


def schedule_errors(
    *,
    schedule_type: Any,
    cron_expression: Any = None,
    interval_seconds: Any = None,
    timezone: Any = None,
) -> dict[str, str]:
    """Return {field: message} for every rule the schedule breaks (empty when valid)."""
    errors: dict[str, str] = {}
    try:
        kind = ScheduleType(schedule_type)
    except ValueError:
        choices = ", ".join(repr(t.value) for t in ScheduleType)
        errors["schedule_type"] = f"unknown schedule type {schedule_type!r}; expected one of {choices}"
        return errors
    if kind is ScheduleType.CRON:
        too_long = isinstance(cron_expression, str) and (
            text_error("cron_expression", cron_expression, CRON_EXPRESSION_MAX_LENGTH)
        )
        if message := too_long or cron_expression_error(cron_expression):
            errors["cron_expression"] = message
    elif message := interval_error(interval_seconds):
        errors["interval_seconds"] = message
    if message := timezone_error(timezone):
        errors["timezone"] = message
    return errors


def task_schedule_errors(schedule: TaskSchedule) -> dict[str, str]:
    """Return {field: message} for every rule a code-defined ``TaskSchedule`` breaks."""
    errors = schedule_errors(
        schedule_type=schedule.schedule_type,
        cron_expression=schedule.cron_expression,
        interval_seconds=schedule.interval_seconds,
        timezone=schedule.timezone,
    )
    errors.update(options_errors({option.name: getattr(schedule, option.name) for option in OPTIONS}))
    overlap = schedule.overlap
    contradicts = overlap is not None and schedule.allow_concurrent and overlap != OverlapPolicy.ALLOW
    if contradicts and "overlap" not in errors:
        errors["overlap"] = f"overlap={str(overlap)!r} contradicts allow_concurrent=True; set only one"
    return errors


def task_errors(task: Any) -> list[str]:
    """Every problem of a task instance, as sentences (empty when the task is valid)."""
    problems: list[str] = []
    if not isinstance(task, BaseTask):
        return [f"{task!r} is not a BaseTask subclass instance"]
    if message := task_name_error(getattr(task, "name", None)):
        problems.append(message)
    schedule = getattr(task, "schedule", None)
    if not isinstance(schedule, TaskSchedule):
        problems.append("`schedule` must be a TaskSchedule")
    else:
        problems.extend(f"{field}: {message}" for field, message in task_schedule_errors(schedule).items())
    if message := timeout_error(task.timeout):  # BaseTask defines it (None: the default timeout)
        problems.append(message)
    return problems


def _whole_number(value: Any) -> int | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _seconds_in_range(value: Any, low: float, high: float) -> float | None:
    if not _is_number(value) or not low <= value <= high:
        return None
    return float(value)


def _option_error(key: str, value: Any) -> str | None:
    """Why ``value`` is no value of the option ``key`` (its kind and bounds are options.py's)."""
    option = OPTIONS_BY_NAME[key]
    if value is None and option.none_allowed:
        return None
    if option.kind == WHOLE:
        number = _whole_number(value)
        if number is None or not option.low <= number <= option.high:  # type: ignore[operator]
            return f"{key} must be {option.rule}"
    elif option.kind == SECONDS:
        if _seconds_in_range(value, option.low, option.high) is None:  # type: ignore[arg-type]
            return f"{key} must be {option.rule}"
    elif option.kind == CHOICE:
        try:
            option.choices(value)  # type: ignore[misc]
        except ValueError:
            allowed = ", ".join(repr(choice) for choice in option.choice_values)
            return f"unknown {key} {value!r}; expected one of {allowed}"
    elif option.kind == DATETIME:
        try:
            parse_datetime_option(value)
        except (ValueError, TypeError) as exc:
            return f"{key}: {exc}"
    return None


def options_errors(options: dict[str, Any]) -> dict[str, str]:
    """Return {field: message} for the schedule's policy fields (jitter, overlap, catch-up, retries,
    start and end); only the keys present are checked."""
    errors: dict[str, str] = {}
    for key, value in options.items():
        if key not in OPTIONS_BY_NAME:
            errors[key] = f"unknown schedule option; known: {', '.join(OPTIONS_BY_NAME)}"
        elif message := _option_error(key, value):
            errors[key] = message
    delay, cap = options.get("retry_delay_seconds"), options.get("retry_max_delay_seconds")
    valid_pair = "retry_delay_seconds" not in errors and "retry_max_delay_seconds" not in errors
    if valid_pair and delay and cap and cap < delay:
        errors["retry_max_delay_seconds"] = "retry_max_delay_seconds must be at least retry_delay_seconds"
    dates = {key: options.get(key) for key in ("start_date", "end_date") if key in options and key not in errors}
    start, end = (parse_datetime_option(dates.get(key)) for key in ("start_date", "end_date"))
    if start and end and end <= start:
        errors["end_date"] = "end_date must be after start_date"
    return errors


def config_errors(config: Any) -> dict[str, str]:
    """Every rule a task's stored, effective configuration breaks (a ``TaskConfig``, duck-typed).

    Values are checked when written; this catches what was stored before a rule existed (or
    written straight into the database), so that the scheduler can leave that one task out.
    """
    errors = schedule_errors(
        schedule_type=config.schedule_type,
        cron_expression=config.cron_expression,
        interval_seconds=config.interval_seconds,
        timezone=config.timezone,
    )
    errors.update(options_errors(config.options))
    if message := timeout_error(config.timeout_seconds):
        errors["timeout"] = message
    return errors
