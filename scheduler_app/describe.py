"""Schedules and durations in plain words, for the admin and the API alike."""

from __future__ import annotations

from functools import lru_cache

from cron_descriptor import Options, get_description

from scheduler_app.options import ScheduleType
from scheduler_app.validation import CRON_ALIASES


@lru_cache(maxsize=4096)
def describe_cron(expression: str | None) -> str:
    """Plain English for a cron expression ("At 02:00"); empty when it cannot be described.

    Cached: cron-descriptor reloads its locale on every call, which made a list of 1,000 tasks
    spend most of its time here.
    """
    expression = (expression or "").strip()
    expression = CRON_ALIASES.get(expression.lower(), expression)
    if not expression:
        return ""
    options = Options()
    options.use_24hour_time_format = True
    try:
        return get_description(expression, options)
    except Exception:  # cron-descriptor raises several types; an odd text only loses the prose
        return ""


def describe_duration(seconds: float | None, empty: str = "\u2014") -> str:
    """3600 -> "1 hour", 90 -> "1 minute 30 seconds", 0.25 -> "0.25 seconds"."""
    if seconds is None:
        return empty
    if seconds < 60 and not float(seconds).is_integer():
        return f"{seconds:.3g} seconds"
    remaining = round(seconds)
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts[:2]) or "0 seconds"


def describe_interval(seconds: float | None) -> str:
    """3600 -> "every 1 hour" (empty without an interval)."""
    return f"every {describe_duration(seconds)}" if seconds else ""


def describe_schedule(schedule_type: str, cron: str | None, interval: float | None, zone: str) -> str:
    """A schedule in words, the same in the API and the admin: "At 02:00 (Europe/Berlin)", "every 1 hour".

    ``zone`` is the zone a cron expression is read in (the task's, else settings.TIME_ZONE).
    """
    if schedule_type == ScheduleType.CRON:
        described = describe_cron(cron) or f"cron {cron or ''}"
        return f"{described} ({zone})"
    return describe_interval(interval)
