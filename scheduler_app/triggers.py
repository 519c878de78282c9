"""APScheduler triggers with standard crontab semantics and explicit daylight-saving rules.

APScheduler 3's own ``CronTrigger`` numbers weekdays from Monday and ANDs day-of-month with
day-of-week; crontab numbers from Sunday and ORs them. We evaluate expressions with croniter
on wall-clock time of the task's zone instead, and resolve wall times that do not exist (spring
gap: fire once at the first valid instant after it) or exist twice (autumn repeat: fire once, at
the first occurrence).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from croniter import croniter


def _exists(wall: datetime, zone: tzinfo) -> bool:
    roundtrip = wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return roundtrip == wall


def resolve_wall_time(wall: datetime, zone: tzinfo) -> datetime:
    """Map a naive wall-clock time in ``zone`` to one aware instant.

    A time in a spring-forward gap becomes the first valid instant after the gap; a repeated
    autumn time becomes its first occurrence (fold=0).
    """
    if _exists(wall, zone):
        return wall.replace(tzinfo=zone, fold=0)
    probe = wall.replace(second=0, microsecond=0)
    # Gaps are whole minutes long and at most a few hours (the largest real one is 24 h).
    for _ in range(60 * 25):
        probe += timedelta(minutes=1)
        if _exists(probe, zone):
            return probe.replace(tzinfo=zone, fold=0)
    raise ValueError(f"no valid wall time after {wall} in {zone}")


def next_cron_fire(expression: str, zone: tzinfo, after: datetime) -> datetime:
    """The first fire time of ``expression`` in ``zone`` strictly after the aware instant ``after``."""
    local_after = after.astimezone(zone).replace(tzinfo=None)
    iterator = croniter(expression, local_after)
    while True:
        instant = resolve_wall_time(iterator.get_next(datetime), zone)
        if instant > after:
            return instant


def next_fire_times(trigger: BaseTrigger, now: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times of a trigger after ``now`` (for previews)."""
    times: list[datetime] = []
    previous: datetime | None = None
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        times.append(fire)
        previous = fire
        now = fire
    return times


class CronTrigger(BaseTrigger):
    """Fires on a five-field crontab expression (or an @alias) in an IANA time zone, optionally
    only from ``start_date`` and until ``end_date``."""

    __slots__ = ("end_date", "expression", "start_date", "zone")

    def __init__(
        self, expression: str, timezone: str, start_date: datetime | None = None, end_date: datetime | None = None
    ) -> None:
        self.expression = expression.strip()
        self.zone = ZoneInfo(timezone)
        self.start_date = start_date
        self.end_date = end_date

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        after = previous_fire_time or now
        if self.start_date is not None and after < self.start_date:
            # A fire exactly at start_date counts: look from just before it.
            after = self.start_date - timedelta(microseconds=1)
        fire = next_cron_fire(self.expression, self.zone, after)
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

    def __str__(self) -> str:
        return f"cron[{self.expression} {self.zone.key}]"

    def __repr__(self) -> str:
        return f"<CronTrigger ({self.expression!r}, timezone={self.zone.key!r})>"


def make_interval_trigger(
    seconds: float, timezone: str, start_date: datetime | None = None, end_date: datetime | None = None
) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds, timezone=ZoneInfo(timezone), start_date=start_date, end_date=end_date)
