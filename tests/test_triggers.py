"""Next-fire computation: crontab semantics and daylight-saving rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from scheduler_app.triggers import CronTrigger, next_cron_fire, next_fire_times, resolve_wall_time

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def fires(expression: str, zone: ZoneInfo, start: datetime, count: int) -> list[datetime]:
    return next_fire_times(CronTrigger(expression, zone.key), start, count)


def test_seed_examples_mean_what_the_seed_says() -> None:
    zone = ZoneInfo("UTC")
    start = datetime(2026, 11, 28, 12, 30, tzinfo=zone)  # a Saturday
    assert fires("0 * * * *", zone, start, 2) == [start.replace(hour=13, minute=0), start.replace(hour=14, minute=0)]
    assert fires("0 2 * * *", zone, start, 2) == [
        datetime(2026, 11, 29, 2, tzinfo=zone),
        datetime(2026, 11, 30, 2, tzinfo=zone),
    ]
    # 0 = Sunday in crontab (APScheduler 3's own CronTrigger would say Monday).
    weekly = fires("0 0 * * 0", zone, start, 2)
    assert [d.strftime("%A %H:%M") for d in weekly] == ["Sunday 00:00", "Sunday 00:00"]
    assert weekly[0] == datetime(2026, 11, 29, tzinfo=zone)
    assert fires("0 0 1 * *", zone, start, 2) == [datetime(2026, 12, 1, tzinfo=zone), datetime(2027, 1, 1, tzinfo=zone)]


def test_day_of_month_and_weekday_are_ored_like_crontab() -> None:
    zone = ZoneInfo("UTC")
    got = fires("0 0 1 * 1", zone, datetime(2026, 11, 28, tzinfo=zone), 3)
    assert [d.date().isoformat() for d in got] == ["2026-11-30", "2026-12-01", "2026-12-07"]


@pytest.mark.parametrize(
    ("zone", "gap_day", "expected_utc"),
    [
        # Berlin springs from 02:00 CET to 03:00 CEST on 2026-03-29: 02:30 does not exist.
        (BERLIN, datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        # New York springs from 02:00 EST to 03:00 EDT on 2026-03-08.
        (NEW_YORK, datetime(2026, 3, 7, 12, tzinfo=UTC), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    ],
)
def test_spring_gap_fires_once_at_the_first_valid_instant(
    zone: ZoneInfo, gap_day: datetime, expected_utc: datetime
) -> None:
    daily = fires("30 2 * * *", zone, gap_day, 3)
    assert daily[0] == expected_utc  # 03:00 local, the end of the gap
    assert daily[0].astimezone(zone).strftime("%H:%M") == "03:00"
    assert [d.astimezone(zone).strftime("%H:%M") for d in daily[1:]] == ["02:30", "02:30"]
    # Every 15 minutes through the gap: 02:00-02:45 collapse into one fire at 03:00, then 03:15.
    quarter = [
        d.astimezone(zone).strftime("%H:%M")
        for d in fires("*/15 * * * *", zone, expected_utc - timedelta(minutes=20), 4)
    ]
    assert quarter == ["01:45", "03:00", "03:15", "03:30"]


@pytest.mark.parametrize(
    ("zone", "day_before", "expression", "wall"),
    [
        # Berlin falls back on 2026-10-25: 02:00-03:00 occurs twice.
        (BERLIN, datetime(2026, 10, 24, 12, tzinfo=UTC), "30 2 * * *", "02:30"),
        # New York falls back on 2026-11-01: 01:00-02:00 occurs twice.
        (NEW_YORK, datetime(2026, 10, 31, 12, tzinfo=UTC), "30 1 * * *", "01:30"),
    ],
)
def test_autumn_repeat_fires_once(zone: ZoneInfo, day_before: datetime, expression: str, wall: str) -> None:
    daily = fires(expression, zone, day_before, 3)
    assert [d.astimezone(zone).strftime("%H:%M") for d in daily] == [wall] * 3
    gaps = [(b - a) for a, b in pairwise(daily)]
    # Fires are a day apart in wall time; the repeated hour is not fired twice.
    assert all(timedelta(hours=23) <= gap <= timedelta(hours=25) for gap in gaps)
    assert daily[0].fold == 0
    # Asking from inside the repeated hour's second pass never refires the same wall time.
    second_pass = daily[0] + timedelta(hours=1)
    assert next_cron_fire(expression, zone, second_pass) == daily[1]


def test_resolve_wall_time_of_a_normal_instant_is_identity() -> None:
    wall = datetime(2026, 7, 1, 12, 0)
    assert resolve_wall_time(wall, BERLIN) == datetime(2026, 7, 1, 12, 0, tzinfo=BERLIN)


def test_cron_trigger_pickles_for_the_job_store() -> None:
    import pickle

    trigger = CronTrigger("0 2 * * *", "Europe/Berlin")
    restored = pickle.loads(pickle.dumps(trigger))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert restored.get_next_fire_time(None, now) == trigger.get_next_fire_time(None, now)
    assert str(restored) == "cron[0 2 * * * Europe/Berlin]"
