"""APScheduler triggers with the semantics of real cron (Vixie/Debian cron, crontab(5)).

APScheduler 3's own ``CronTrigger`` numbers weekdays from Monday and always ANDs day-of-month with
day-of-week; croniter accepts syntax cron refuses and knows nothing of cron's daylight-saving rules.
So the expression is parsed here, strictly as crontab(5) describes it, and fire times follow what
Debian cron's main loop does when the wall clock jumps:

* Day of month and day of week are ORed only when neither field starts with ``*`` (entry.c sets
  DOM_STAR/DOW_STAR from the first character; find_jobs ANDs the two when either flag is set).
* A *wildcard* job (minute or hour field starts with ``*``; ``@hourly`` too) follows the wall clock:
  a time inside a spring gap does not exist, so it is not run; a repeated autumn time runs in both
  occurrences.
* A *fixed-time* job (neither field starts with ``*``) runs a time skipped by a spring gap once, right
  after the jump, and a repeated autumn time once, in its first occurrence.
* Jumps that cron treats differently are followed too: a jump forward of 1-4 minutes runs every job
  for each skipped minute; one of three hours or more runs nothing for the skipped minutes; a jump
  backward of more than three hours runs fixed-time jobs again.
"""

from __future__ import annotations

import calendar
import contextlib
import functools
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler_app.options import ScheduleType

# The @ macros of Vixie/Debian cron and the five fields each stands for. Their star flags agree with
# entry.c: @hourly has HR_STAR (a wildcard job); the others are fixed-time jobs. @reboot is no schedule.
# start_date and end_date lie in [EARLIEST_DATE, LATEST_DATE) whatever their offset.
EARLIEST_DATE = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_DATE = datetime(3000, 1, 1, tzinfo=UTC)

CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, low, high, names or None); day of week allows 7 for Sunday, as cron does.
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTH_NAMES),
    ("day of week", 0, 7, DAY_NAMES),
)
# Days each month can have (February 29 in leap years).
_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_TOKEN = re.compile(r"^(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?$")
# Debian cron's wake-up kinds by the minutes the wall clock moved since the last minute it handled.
_SMALL_JUMP_MINUTES = 5  # up to this: every job is run for each skipped minute
_LARGE_JUMP_MINUTES = 180  # beyond this (either way): cron resets, nothing is caught up or held back
_MINUTE = timedelta(minutes=1)
# Offsets are sampled at this step to find their changes: the closest two changes of one zone in the
# tz database (tzdata 2026) are four days apart.
_TRANSITION_PROBE = timedelta(hours=12)


class CronSyntaxError(ValueError):
    """An expression real cron would refuse, or one that can never fire."""


@dataclass(frozen=True)
class CronSpec:
    """A parsed expression: the values each field allows and the flags cron derives from stars."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    day_or: bool  # neither day field starts with '*': either day field may match
    wildcard: bool  # minute or hour field starts with '*': follows the wall clock at DST changes

    def day_matches(self, day: date) -> bool:
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        return (dom or dow) if self.day_or else (dom and dow)

    def never_fires_reason(self) -> str | None:
        if self.day_or:
            return None  # any listed weekday comes round
        if any(day <= _MAX_DAYS[month - 1] for month in self.months for day in self.days):
            return None  # that day of that month falls on every weekday over the years
        days = sorted(self.days)
        listed = ", ".join(str(d) for d in days)
        months = " or ".join(calendar.month_name[m] for m in sorted(self.months))
        which = f"day {listed} never occurs" if len(days) == 1 else f"days {listed} never occur"
        return f"it can never fire: {which} in {months}"


def _value(text: str, field: int) -> int:
    name, low, high, names = _FIELDS[field]
    if text.isdigit():
        number = int(text)
        if not low <= number <= high:
            raise CronSyntaxError(f"{name} {number} is out of range {low}-{high}")
        return number
    if names and text in names:
        return names.index(text) + (1 if names is MONTH_NAMES else 0)
    if text in MONTH_NAMES or text in DAY_NAMES:
        raise CronSyntaxError(f"{text.upper()!r} is not a {name} name")
    raise CronSyntaxError(f"{text!r} is not a valid {name}")


def _parse_field(text: str, field: int) -> set[int]:
    name, low, high, names = _FIELDS[field]
    values: set[int] = set()
    for item in text.lower().split(","):
        if not item:
            raise CronSyntaxError(f"empty list item in the {name} field {text!r}")
        for char, meaning in (("?", "'?'"), ("#", "'#' (nth weekday)")):
            if char in item:
                raise CronSyntaxError(f"{meaning} is not crontab syntax and is not supported; use '*' or a list")
        if re.search(r"(^|[^a-z])(l|w|lw)($|[^a-z])|\dl|\dw", item):
            raise CronSyntaxError("'L' (last) and 'W' (nearest weekday) are not crontab syntax and are not supported")
        match = _TOKEN.match(item)
        if match is None:
            raise CronSyntaxError(f"{item!r} is not valid in the {name} field")
        star, first, last, step_text = match.groups()
        if star:
            start, end = low, high
        else:
            start = _value(first, field)
            if last is None and step_text is not None:
                raise CronSyntaxError(
                    f"step {item!r} needs '*' or a range before the '/', e.g. {first}-{high}/{step_text}"
                )
            end = start if last is None else _value(last, field)
            if end < start:
                top, bottom = (names[-1], names[0]) if names and not first.isdigit() else (str(high), str(low))
                upper = first if first == top else f"{first}-{top}"
                lower = last if last == bottom else f"{bottom}-{last}"
                raise CronSyntaxError(
                    f"range {item!r} is reversed; cron ranges go from low to high (write {upper},{lower})"
                )
        step = 1
        if step_text is not None:
            step = int(step_text)
            if not 1 <= step <= high:
                raise CronSyntaxError(f"step {step} in the {name} field must be from 1 to {high}")
        values.update(range(start, end + 1, step))
    return values


def parse_cron(expression: str) -> CronSpec:
    """Parse a five-field crontab(5) expression or an @ macro; raise CronSyntaxError saying why not."""
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in CRON_ALIASES:
            raise CronSyntaxError(f"unknown cron alias {text!r}; known: {', '.join(sorted(CRON_ALIASES))}")
        text = CRON_ALIASES[text.lower()]
    fields = text.split()
    if len(fields) != 5:
        extra = "; a seconds or a year field is not supported" if len(fields) in (6, 7) else ""
        raise CronSyntaxError(
            f"cron expression {text!r} has {len(fields)} fields; expected 5 "
            f"(minute hour day-of-month month day-of-week){extra}"
        )
    try:
        minutes, hours, days, months, weekdays = (_parse_field(f, i) for i, f in enumerate(fields))
        spec = CronSpec(
            minutes=tuple(sorted(minutes)),
            hours=tuple(sorted(hours)),
            days=frozenset(days),
            months=frozenset(months),
            weekdays=frozenset(d % 7 for d in weekdays),
            day_or=not (fields[2].startswith("*") or fields[4].startswith("*")),
            wildcard=fields[0].startswith("*") or fields[1].startswith("*"),
        )
        if reason := spec.never_fires_reason():
            raise CronSyntaxError(reason)
    except CronSyntaxError as exc:
        raise CronSyntaxError(f"invalid cron expression {text!r}: {exc}") from None
    return spec


def _next_wall(spec: CronSpec, start: datetime) -> datetime | None:
    """The first wall-clock minute at or after the naive ``start`` that the fields match, or None
    when there is none before the year 10000."""
    day = start.date()
    first_time = (start.hour, start.minute)
    while True:
        if day.month not in spec.months:
            year, month = day.year, day.month + 1
            # pragma: no mutate start (equivalent: only months outside the spec are skipped, so a month
            # 12 or 13 moved to the next January by a shifted bound lands on the same month)
            while month > 12 or month not in spec.months:
                if month > 12:
                    # pragma: no mutate end
                    year, month = year + 1, 1
                else:
                    month += 1
            if year > 9999:
                return None
            day, first_time = date(year, month, 1), (0, 0)
            continue
        if spec.day_matches(day):
            for hour in spec.hours:
                if hour < first_time[0]:
                    continue
                for minute in spec.minutes:
                    if (hour, minute) >= first_time:
                        return datetime(day.year, day.month, day.day, hour, minute)
        if day == date.max:
            return None
        day, first_time = day + timedelta(days=1), (0, 0)


def _offset_at(instant: datetime, zone: tzinfo) -> timedelta:
    return instant.astimezone(zone).utcoffset() or timedelta(0)


def _bisect_transition(zone: tzinfo, low: datetime, high: datetime, offset: timedelta) -> datetime:
    # Offsets change on whole seconds: bisect on them.
    low_s, high_s = math.floor(low.timestamp()), math.ceil(high.timestamp())
    while high_s - low_s > 1:
        middle = (low_s + high_s) // 2
        if _offset_at(datetime.fromtimestamp(middle, UTC), zone) != offset:
            high_s = middle
        else:
            low_s = middle
    return datetime.fromtimestamp(high_s, UTC)


@functools.lru_cache(maxsize=4096)
def _transitions_in_year(zone: tzinfo, year: int) -> tuple[datetime, ...]:
    """The instants in (1 January ``year``, 1 January ``year + 1``] (UTC) at which the zone's offset
    changes. Cached: a rarely firing expression looks across decades, and zoneinfo has no public
    list of transitions."""
    low = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else datetime.max.replace(tzinfo=UTC)
    offset = _offset_at(low, zone)
    found: list[datetime] = []
    while low < end:
        high = end if end - low <= _TRANSITION_PROBE else low + _TRANSITION_PROBE
        new_offset = _offset_at(high, zone)
        if new_offset != offset:
            found.append(_bisect_transition(zone, low, high, offset))
            offset = new_offset
        low = high
    return tuple(found)


def _next_transition(zone: tzinfo, start: datetime, end: datetime) -> datetime | None:
    """The first instant in (start, end] at which the zone's UTC offset changes."""
    for year in range(start.astimezone(UTC).year, end.astimezone(UTC).year + 1):
        for moment in _transitions_in_year(zone, year):
            if moment > start:
                return moment if moment <= end else None
    return None


def _ceil_minute(wall: datetime, inclusive: bool) -> datetime:
    # pragma: no mutate start (microsecond=0: the callers' inclusive walls are on whole seconds, and of the
    # exclusive one only the hour and minute are read; second=0 is pinned by the Monrovia test)
    floor = wall.replace(second=0, microsecond=0)
    # pragma: no mutate end
    return floor if inclusive and floor == wall else floor + _MINUTE


def _held_back(spec: CronSpec, wall: datetime, zone: tzinfo, offset: timedelta) -> bool:
    """A fixed-time job is not run again in the second pass of a repeated autumn time (cron keeps
    its virtual clock still while the wall clock catches up), unless the clock went back so far
    that cron resets instead."""
    if spec.wildcard:
        return False
    first = wall.replace(tzinfo=zone, fold=0).utcoffset()
    second = wall.replace(tzinfo=zone, fold=1).utcoffset()
    if first is None or second is None or first <= second or offset != second:
        return False  # not a repeated time, or its first occurrence
    return first - second <= timedelta(minutes=_LARGE_JUMP_MINUTES)


def _caught_up_at_jump(spec: CronSpec, jump: timedelta) -> bool:
    """Whether cron runs this job's skipped wall times right after a jump forward of ``jump``."""
    minutes = jump / _MINUTE
    if minutes < _SMALL_JUMP_MINUTES:
        return True
    return minutes < _LARGE_JUMP_MINUTES and not spec.wildcard


def next_fire(spec: CronSpec, zone: tzinfo, after: datetime) -> datetime | None:
    """The first instant strictly after the aware ``after`` at which cron would run ``spec`` in
    ``zone``; None when there is none (past the year 9999)."""
    try:
        instant = after.astimezone(UTC)
        offset = _offset_at(instant, zone)
        # pragma: no mutate start (inclusive is only tested for truth: None is as False)
        start = _ceil_minute((instant + offset).replace(tzinfo=None), inclusive=False)
        # pragma: no mutate end
        # Walk the spans of constant UTC offset: inside one, wall time maps to instants one to one.
        while True:
            wall = _next_wall(spec, start)
            if wall is None:
                return None
            candidate = (wall - offset).replace(tzinfo=UTC)
            jump_at = _next_transition(zone, instant, candidate)
            if jump_at is None:
                if _held_back(spec, wall, zone, offset):
                    start = wall + _MINUTE
                    continue
                return candidate
            new_offset = _offset_at(jump_at, zone)
            jump = new_offset - offset
            # ``wall`` is at or after where the old offset ends; before the new one starts it was skipped.
            # pragma: no mutate start (a transition changes the offset, so jump is never 0; a ``wall`` right at
            # the new offset's start is fired at jump_at by the next turn too)
            skipped = jump > timedelta(0) and wall < (jump_at + new_offset).replace(tzinfo=None)
            # pragma: no mutate end
            if skipped and _caught_up_at_jump(spec, jump):
                return jump_at
            instant, offset = jump_at, new_offset
            start = _ceil_minute((jump_at + new_offset).replace(tzinfo=None), inclusive=True)
    except OverflowError:
        return None


def resolve_wall_time(wall: datetime, zone: tzinfo) -> datetime:
    """Map a naive wall-clock time in ``zone`` to the one instant a fixed-time job runs it.

    A time in a spring-forward gap becomes the instant the gap ends; a repeated autumn time
    becomes its first occurrence (fold=0).
    """
    first = wall.replace(tzinfo=zone, fold=0)
    # Through any other zone: UTC, or the host's (astimezone(None)), is the same round trip.
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:  # pragma: no mutate
        return first
    # The gap time read with the offsets before and after the gap: the jump lies between.
    # Instants: in UTC or in the host's zone (astimezone(None)) compare the same.
    before, after = wall.replace(tzinfo=zone, fold=1).astimezone(UTC), first.astimezone(UTC)  # pragma: no mutate
    jump_at = _next_transition(zone, before, after)
    if jump_at is None:
        # Unreachable (a time that does not round-trip lies in a gap, which ends in a transition).
        raise ValueError(f"no valid wall time after {wall} in {zone}")  # pragma: no mutate
    return jump_at.astimezone(zone)


def next_cron_fire(expression: str, zone: tzinfo, after: datetime) -> datetime | None:
    """The first fire time of ``expression`` in ``zone`` strictly after the aware instant ``after``."""
    return next_fire(parse_cron(expression), zone, after)


def next_fire_times(trigger: BaseTrigger, now: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times of a trigger after ``now`` (for previews)."""
    times: list[datetime] = []
    previous: datetime | None = None  # pragma: no mutate (both triggers read any false previous as none)
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        times.append(fire)
        previous = fire
        now = fire  # pragma: no mutate (APScheduler's contract; both triggers ignore now once given previous)
    return times


class CronTrigger(BaseTrigger):
    """Fires on a five-field crontab expression (or an @ macro) in an IANA time zone, optionally
    only from ``start_date`` and until ``end_date``."""

    __slots__ = ("_spec", "end_date", "expression", "start_date", "zone")

    def __init__(
        self, expression: str, timezone: str, start_date: datetime | None = None, end_date: datetime | None = None
    ) -> None:
        self.expression = expression.strip()
        self.zone = ZoneInfo(timezone)
        self.start_date = start_date
        self.end_date = end_date
        self._spec: CronSpec | None = None

    def _parsed(self) -> CronSpec | None:
        if self._spec is None:
            try:
                self._spec = parse_cron(self.expression)
            except CronSyntaxError:
                return None  # stored before validation refused it (e.g. one that can never fire)
        return self._spec

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        spec = self._parsed()
        if spec is None:
            return None
        after = previous_fire_time or now
        if self.start_date is not None and after < self.start_date:
            # A fire exactly at start_date counts: look from just before it.
            after = self.start_date - timedelta(microseconds=1)
        fire = next_fire(spec, self.zone, after)
        if fire is None:
            return None
        # A fire at the very end of the calendar would stay in UTC. Defensive: with tzdata's zones none comes
        # this close (east of UTC, next_fire's year-9999 transition search overflows first and gives none).
        with contextlib.suppress(OverflowError):  # pragma: no mutate (see above: nothing reaches it)
            fire = fire.astimezone(self.zone)
        if self.end_date is not None and fire > self.end_date:
            return None
        return fire

    def __getstate__(self) -> dict[str, object]:
        return {
            "version": 2,
            "expression": self.expression,
            "timezone": self.zone.key,
            "start_date": self.start_date,
            "end_date": self.end_date,
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        self.expression = str(state["expression"])
        self.zone = ZoneInfo(str(state["timezone"]))
        self.start_date = state.get("start_date")  # type: ignore[assignment]
        self.end_date = state.get("end_date")  # type: ignore[assignment]
        self._spec = None

    def __str__(self) -> str:
        return f"cron[{self.expression} {self.zone.key}]"

    def __repr__(self) -> str:
        return f"<CronTrigger ({self.expression!r}, timezone={self.zone.key!r})>"


def make_interval_trigger(
    seconds: float, timezone: str, start_date: datetime | None = None, end_date: datetime | None = None
) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds, timezone=ZoneInfo(timezone), start_date=start_date, end_date=end_date)


class ScheduleSpec(Protocol):
    """What a trigger is built from (a ``TaskConfig``; not imported: models import the validation,
    which imports this module)."""

    schedule_type: str
    cron_expression: str | None
    interval_seconds: int | None
    timezone: str

    @property
    def options(self) -> dict[str, Any]: ...


def build_trigger(config: ScheduleSpec) -> BaseTrigger:
    """The trigger of a task's configuration: its cron expression or interval, within its start and end dates."""
    options = config.options
    start = parse_datetime_option(options.get("start_date"))
    end = parse_datetime_option(options.get("end_date"))
    if config.schedule_type == ScheduleType.CRON:
        return CronTrigger(config.cron_expression or "", config.timezone, start_date=start, end_date=end)
    # (None only in a row stored before validation: APScheduler runs an interval of 0 s as 1 s, as `or 1` would.)
    seconds = int(config.interval_seconds or 0)  # pragma: no mutate
    return make_interval_trigger(seconds, config.timezone, start_date=start, end_date=end)


def parse_datetime_option(value: Any) -> datetime | None:
    """An aware datetime from a datetime or an ISO 8601 string; None for None/""; raises ValueError."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError("expected an ISO 8601 date-time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("needs a time zone offset, e.g. 2027-01-01T00:00:00+00:00")
    if not EARLIEST_DATE <= value < LATEST_DATE:
        raise ValueError(
            f"must lie from {EARLIEST_DATE.year} to {LATEST_DATE.year - 1} (UTC), so that every fire time "
            "derived from it exists in every time zone"
        )
    return value
