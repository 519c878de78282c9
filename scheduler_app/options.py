"""The schedule's policy options, declared once.

Each option's name, type, default, bounds, choices and help text live here and nowhere else: the
defaults (``OPTION_DEFAULTS``), ``validation.options_errors``, the admin form's fields, the API's
``OptionsSerializer`` and the README's table all derive from ``OPTIONS``. This module imports no other
module of the project, so that everything else can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ScheduleType(StrEnum):
    CRON = "cron"
    INTERVAL = "interval"


class OverlapPolicy(StrEnum):
    """What a fire does while the previous run of its task is still going."""

    SKIP = "skip"  # record the fire as skipped (the seed's allow_concurrent=False)
    ALLOW = "allow"  # run alongside (the seed's allow_concurrent=True)
    BUFFER_ONE = "buffer_one"  # run once more right after the current run; further fires are skipped


class CatchUp(StrEnum):
    """What happens to fires missed within the catch-up window (downtime, a blocked scheduler)."""

    ONCE = "once"  # the newest missed fire runs once; the others are recorded as missed
    NONE = "none"  # no late fire runs; all are recorded as missed


class RetryBackoff(StrEnum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


# Bounds. Every number an operator or a task class can set is bounded so that whatever is derived
# from it (now + a retry delay, start_date + an interval, a watchdog's wait, a catch-up window as a
# timedelta) stays representable in every time zone, far from datetime's year 9999.
#
# Stored in a 32-bit integer column on every database backend; about 68 years.
MAX_INTERVAL_SECONDS = 2_147_483_647
# The catch-up window and the retry delays: the same 68 years.
MAX_DURATION_SECONDS = MAX_INTERVAL_SECONDS
# A run's time limit: 30 days (a thread waits on it; a "run" longer than a month is not one).
MAX_TIMEOUT_SECONDS = 30 * 86_400
# The shortest timeout or retry delay: a millisecond.
MIN_SECONDS = 0.001
MAX_JITTER_SECONDS = 86_400
MAX_RETRIES = 100

# Option kinds: how a value is typed, checked and shown.
WHOLE = "whole"  # an integer (a float with no fraction is accepted)
SECONDS = "seconds"  # a finite number
CHOICE = "choice"  # one of an enum's values
DATETIME = "datetime"  # an aware datetime, or its ISO 8601 text


@dataclass(frozen=True)
class Option:
    name: str
    kind: str
    default: object
    help_text: str
    label: str
    low: float | None = None
    high: float | None = None
    choices: type[StrEnum] | None = None
    # None is a value of its own (e.g. overlap: "from allow_concurrent"), not "the default".
    none_allowed: bool = False
    # The sentence "<name> must be <rule>" when a value breaks the bounds (WHOLE and SECONDS).
    rule: str = ""
    placeholder: str = ""

    @property
    def choice_values(self) -> list[str]:
        return [c.value for c in self.choices] if self.choices else []


OPTIONS: tuple[Option, ...] = (
    Option(
        "jitter_seconds",
        WHOLE,
        0,
        "Random delay, up to this many seconds, before each scheduled run.",
        "Jitter (seconds)",
        low=0,
        high=MAX_JITTER_SECONDS,
        rule=f"a whole number from 0 to {MAX_JITTER_SECONDS}",
    ),
    Option(
        "overlap",
        CHOICE,
        None,
        "A fire while the previous run goes on: skip it, allow it, or buffer one; unset: from allow_concurrent.",
        "Overlap",
        choices=OverlapPolicy,
        none_allowed=True,
    ),
    Option(
        "catch_up",
        CHOICE,
        CatchUp.ONCE.value,
        "Fires missed within the catch-up window: the newest runs once, or none runs.",
        "Catch up",
        choices=CatchUp,
    ),
    Option(
        "catch_up_window_seconds",
        WHOLE,
        None,
        "How late a fire may still run; unset: SCHEDULER['MISFIRE_GRACE_SECONDS'].",
        "Catch-up window (seconds)",
        low=0,
        high=MAX_DURATION_SECONDS,
        none_allowed=True,
        rule=f"a whole number of seconds from 0 to {MAX_DURATION_SECONDS}",
    ),
    Option(
        "max_retries",
        WHOLE,
        0,
        "Retries after a failure or timeout.",
        "Retries",
        low=0,
        high=MAX_RETRIES,
        rule=f"a whole number from 0 to {MAX_RETRIES}",
    ),
    Option(
        "retry_backoff",
        CHOICE,
        RetryBackoff.EXPONENTIAL.value,
        "fixed: every retry waits the retry delay; exponential: 1x, 2x, 4x ...",
        "Retry backoff",
        choices=RetryBackoff,
    ),
    Option(
        "retry_delay_seconds",
        SECONDS,
        10,
        "The first retry's delay.",
        "Retry delay (seconds)",
        low=MIN_SECONDS,
        high=MAX_DURATION_SECONDS,
        rule=f"a number of seconds greater than 0, from {MIN_SECONDS:g} to {MAX_DURATION_SECONDS}",
    ),
    Option(
        "retry_max_delay_seconds",
        SECONDS,
        3600,
        "The longest retry delay (the cap of the backoff).",
        "Longest retry delay (seconds)",
        low=MIN_SECONDS,
        high=MAX_DURATION_SECONDS,
        rule=f"a number of seconds greater than 0, from {MIN_SECONDS:g} to {MAX_DURATION_SECONDS}",
    ),
    Option(
        "start_date",
        DATETIME,
        None,
        "No fire before this time (ISO 8601 with an offset).",
        "Start date",
        placeholder="2027-01-01T00:00:00+00:00",
    ),
    Option(
        "end_date",
        DATETIME,
        None,
        "No fire after this time (ISO 8601 with an offset).",
        "End date",
        placeholder="2027-12-31T23:59:59+00:00",
    ),
)

OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}

# The schedule's policy fields, stored as JSON in TaskConfig (code defaults and overrides).
OPTION_DEFAULTS: dict[str, object] = {option.name: option.default for option in OPTIONS}
