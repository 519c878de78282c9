"""Next-fire computation: crontab semantics and Debian cron's daylight-saving rules."""

from __future__ import annotations

import io
import pickle
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from scheduler_app import services
from scheduler_app.triggers import (
    CronTrigger,
    build_trigger,
    make_interval_trigger,
    next_cron_fire,
    next_fire_times,
    parse_cron,
    parse_datetime_option,
    resolve_wall_time,
)
from scheduler_app.validation import cron_expression_error

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
CHATHAM = ZoneInfo("Pacific/Chatham")
SANTIAGO = ZoneInfo("America/Santiago")


def fires(expression: str, zone: ZoneInfo, start: datetime, count: int) -> list[datetime]:
    return next_fire_times(CronTrigger(expression, zone.key), start, count)


def walls(times: list[datetime], zone: ZoneInfo) -> list[str]:
    """Wall time with its UTC offset, which tells the two passes of a repeated hour apart."""
    return [t.astimezone(zone).strftime("%H:%M%z") for t in times]


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


# -- the four cases of issue 13 -------------------------------------------------------------------


def test_autumn_wildcard_job_runs_in_both_passes_of_the_repeated_hour() -> None:
    # New York falls back on 2026-11-01: 01:00-02:00 occurs twice (EDT, then EST).
    quarter = fires("*/15 * * * *", NEW_YORK, datetime(2026, 11, 1, 5, 30, tzinfo=UTC), 8)
    assert walls(quarter, NEW_YORK) == [
        "01:45-0400",
        "01:00-0500",
        "01:15-0500",
        "01:30-0500",
        "01:45-0500",
        "02:00-0500",
        "02:15-0500",
        "02:30-0500",
    ]
    utc = [t.astimezone(UTC) for t in quarter]  # same-zone subtraction would compare wall times
    assert all(b - a == timedelta(minutes=15) for a, b in pairwise(utc))  # no 75-minute silence
    hourly = fires("@hourly", NEW_YORK, datetime(2026, 11, 1, 4, 30, tzinfo=UTC), 3)
    assert [t.astimezone(UTC).hour for t in hourly] == [5, 6, 7]


def test_spring_wildcard_job_does_not_invent_a_fire_after_the_gap() -> None:
    # Berlin springs from 02:00 CET to 03:00 CEST on 2026-03-29: 02:30 does not exist.
    half_past = fires("30 * * * *", BERLIN, datetime(2026, 3, 29, 0, 0, tzinfo=UTC), 3)
    assert walls(half_past, BERLIN) == ["01:30+0100", "03:30+0200", "04:30+0200"]


def test_day_of_month_and_day_of_week_are_anded_when_either_starts_with_a_star() -> None:
    zone = ZoneInfo("UTC")
    start = datetime(2026, 1, 1, tzinfo=zone)
    # Odd days that are Mondays, not every odd day or any Monday.
    odd_mondays = fires("0 0 */2 * 1", zone, start, 4)
    assert [d.date().isoformat() for d in odd_mondays] == ["2026-01-05", "2026-01-19", "2026-02-09", "2026-02-23"]
    assert [d.date().isoformat() for d in fires("0 0 */1 * 1", zone, start, 2)] == ["2026-01-05", "2026-01-12"]
    # The 1st of the month when it is a Sunday, Tuesday, Thursday or Saturday (*/2 = 0,2,4,6).
    firsts = fires("0 0 1 * */2", zone, start - timedelta(days=1), 3)
    assert [d.date().isoformat() for d in firsts] == ["2026-01-01", "2026-02-01", "2026-03-01"]
    assert all(d.isoweekday() % 7 in (0, 2, 4, 6) for d in firsts)


def test_day_fields_are_ored_when_neither_starts_with_a_star() -> None:
    zone = ZoneInfo("UTC")
    got = fires("0 0 1 * 1", zone, datetime(2026, 11, 28, tzinfo=zone), 3)
    assert [d.date().isoformat() for d in got] == ["2026-11-30", "2026-12-01", "2026-12-07"]


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4 *", "0 0 31 4,6,9,11 *", "0 0 30 2 */2"])
def test_never_firing_expression_is_refused_and_a_stored_one_has_no_next_fire(expression: str) -> None:
    message = cron_expression_error(expression)
    assert message is not None and "can never fire" in message
    # One stored before this rule (in the job store or a TaskConfig override) just never fires.
    trigger = CronTrigger(expression, "Europe/Berlin")
    assert trigger.get_next_fire_time(None, datetime(2026, 1, 1, tzinfo=UTC)) is None
    assert next_fire_times(trigger, datetime(2026, 1, 1, tzinfo=UTC), 5) == []


def test_february_29_is_not_a_never_firing_day() -> None:
    assert cron_expression_error("0 0 29 2 *") is None
    got = fires("0 0 29 2 *", ZoneInfo("UTC"), datetime(2026, 1, 1, tzinfo=UTC), 2)
    assert [d.date().isoformat() for d in got] == ["2028-02-29", "2032-02-29"]
    # ANDed with Sundays (*/7 = 0,7 starts with a star): the next Sunday 29 February is in 2032.
    sundays = fires("0 0 29 2 */7", ZoneInfo("UTC"), datetime(2026, 1, 1, tzinfo=UTC), 2)
    assert [d.date().isoformat() for d in sundays] == ["2032-02-29", "2060-02-29"]


# -- fixed-time jobs keep the once-only rules ---------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "gap_day", "expected_utc"),
    [
        # Berlin springs from 02:00 CET to 03:00 CEST on 2026-03-29: 02:30 does not exist.
        (BERLIN, datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        # New York springs from 02:00 EST to 03:00 EDT on 2026-03-08.
        (NEW_YORK, datetime(2026, 3, 7, 12, tzinfo=UTC), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    ],
)
def test_spring_fixed_job_runs_once_right_after_the_gap(
    zone: ZoneInfo, gap_day: datetime, expected_utc: datetime
) -> None:
    daily = fires("30 2 * * *", zone, gap_day, 3)
    assert daily[0] == expected_utc  # 03:00 local, the end of the gap
    assert walls(daily, zone)[0].startswith("03:00")
    assert [w[:5] for w in walls(daily[1:], zone)] == ["02:30", "02:30"]
    # A fixed minute list is a fixed-time job too: 02:00 and 02:45 both run once, at 03:00.
    listed = fires("0,45 2,3 * * *", zone, expected_utc - timedelta(hours=2), 3)
    assert [w[:5] for w in walls(listed, zone)] == ["03:00", "03:45", "02:00"]


@pytest.mark.parametrize(
    ("zone", "day_before", "expression", "wall"),
    [
        # Berlin falls back on 2026-10-25: 02:00-03:00 occurs twice.
        (BERLIN, datetime(2026, 10, 24, 12, tzinfo=UTC), "30 2 * * *", "02:30"),
        # New York falls back on 2026-11-01: 01:00-02:00 occurs twice.
        (NEW_YORK, datetime(2026, 10, 31, 12, tzinfo=UTC), "30 1 * * *", "01:30"),
    ],
)
def test_autumn_fixed_job_runs_once_in_the_first_pass(
    zone: ZoneInfo, day_before: datetime, expression: str, wall: str
) -> None:
    daily = fires(expression, zone, day_before, 3)
    assert [w[:5] for w in walls(daily, zone)] == [wall] * 3
    gaps = [(b - a) for a, b in pairwise(daily)]
    assert all(timedelta(hours=23) <= gap <= timedelta(hours=25) for gap in gaps)
    assert daily[0].fold == 0
    # Asking from inside the repeated hour's second pass never refires the same wall time.
    second_pass = daily[0] + timedelta(hours=1)
    assert next_cron_fire(expression, zone, second_pass) == daily[1]


def test_macros_are_the_jobs_cron_makes_of_them() -> None:
    # @hourly is a wildcard job (HR_STAR); @daily a fixed-time job: on Santiago's spring day
    # midnight does not exist and @daily runs once at 01:00.
    assert parse_cron("@hourly").wildcard and not parse_cron("@daily").wildcard
    daily = fires("@daily", SANTIAGO, datetime(2026, 9, 5, 12, tzinfo=UTC), 2)
    assert walls(daily, SANTIAGO) == ["01:00-0300", "00:00-0300"]


# -- odd zones -------------------------------------------------------------------------------------


def test_lord_howe_half_hour_shift() -> None:
    # 2026-10-04 02:00 +10:30 becomes 02:30 +11:00; 2027-04-04 02:00 +11:00 becomes 01:30 +10:30.
    spring = datetime(2026, 10, 3, 15, 0, tzinfo=UTC)  # 01:30 local
    assert walls(fires("*/15 * * * *", LORD_HOWE, spring, 3), LORD_HOWE) == ["01:45+1030", "02:30+1100", "02:45+1100"]
    assert walls(fires("15 2 * * *", LORD_HOWE, spring, 2), LORD_HOWE) == ["02:30+1100", "02:15+1100"]
    autumn = datetime(2027, 4, 3, 14, 0, tzinfo=UTC)  # 01:00 +11:00
    assert walls(fires("*/15 * * * *", LORD_HOWE, autumn, 5), LORD_HOWE) == [
        "01:15+1100",
        "01:30+1100",
        "01:45+1100",
        "01:30+1030",
        "01:45+1030",
    ]
    assert walls(fires("45 1 * * *", LORD_HOWE, autumn, 2), LORD_HOWE) == ["01:45+1100", "01:45+1030"]


def test_chatham_quarter_hour_offsets() -> None:
    # 2026-09-27 02:45 +12:45 becomes 03:45 +13:45; 2027-04-04 03:45 +13:45 becomes 02:45 +12:45.
    spring = datetime(2026, 9, 26, 12, 0, tzinfo=UTC)  # 00:45 local
    assert walls(fires("0 * * * *", CHATHAM, spring, 3), CHATHAM) == ["01:00+1245", "02:00+1245", "04:00+1345"]
    assert walls(fires("0 3 * * *", CHATHAM, spring, 2), CHATHAM) == ["03:45+1345", "03:00+1345"]
    autumn = datetime(2027, 4, 3, 12, 0, tzinfo=UTC)  # 01:45 +13:45
    assert walls(fires("0 * * * *", CHATHAM, autumn, 4), CHATHAM) == [
        "02:00+1345",
        "03:00+1345",
        "03:00+1245",
        "04:00+1245",
    ]
    assert walls(fires("0 3 * * *", CHATHAM, autumn, 2), CHATHAM) == ["03:00+1345", "03:00+1245"]


def test_santiago_gap_and_repeat_at_midnight() -> None:
    # 2026-09-06 00:00 -04 becomes 01:00 -03; 2027-04-04 00:00 -03 becomes 2027-04-03 23:00 -04.
    spring = datetime(2026, 9, 6, 2, 0, tzinfo=UTC)  # 22:00 on the 5th
    assert walls(fires("*/30 * * * *", SANTIAGO, spring, 5), SANTIAGO) == [
        "22:30-0400",
        "23:00-0400",
        "23:30-0400",
        "01:00-0300",
        "01:30-0300",
    ]
    autumn = datetime(2027, 4, 4, 1, 0, tzinfo=UTC)  # 22:00 -03 on the 3rd
    assert walls(fires("30 23 * * *", SANTIAGO, autumn, 2), SANTIAGO) == ["23:30-0300", "23:30-0400"]
    first, second = (t.astimezone(UTC) for t in fires("30 23 * * *", SANTIAGO, autumn, 2))
    assert second - first == timedelta(hours=25)
    assert walls(fires("30 * * * *", SANTIAGO, autumn, 3), SANTIAGO) == ["22:30-0300", "23:30-0300", "23:30-0400"]


def test_kolkata_half_hour_offset_without_dst() -> None:
    zone = ZoneInfo("Asia/Kolkata")
    got = fires("0 9 * * 1-5", zone, datetime(2026, 11, 27, tzinfo=UTC), 2)  # Friday, then Monday
    assert [t.astimezone(UTC).strftime("%a %H:%M") for t in got] == ["Fri 03:30", "Mon 03:30"]


def test_a_jump_to_an_offset_with_seconds_skips_the_whole_minute_it_lands_in() -> None:
    # Monrovia left its mean time (-00:44:30) for GMT at 1972-01-07 00:44:30 UTC: the wall clock
    # jumped from 00:00 to 00:44:30, so 00:44 never came round and the next :44 is 01:44.
    monrovia = ZoneInfo("Africa/Monrovia")
    got = fires("44 * * * *", monrovia, datetime(1972, 1, 7, tzinfo=UTC), 2)
    assert [t.astimezone(UTC) for t in got] == [
        datetime(1972, 1, 7, 0, 28, 30, tzinfo=UTC),  # 23:44 on the 6th, at -00:44:30
        datetime(1972, 1, 7, 1, 44, tzinfo=UTC),
    ]


@pytest.fixture
def host_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets the machine's own zone (TZ) for one test, and restores it after."""

    def set_zone(posix: str) -> None:
        monkeypatch.setenv("TZ", posix)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("host", ["UTC0", "<+14>-14", "<-12>+12"])
def test_fire_times_do_not_depend_on_the_machines_zone(host_zone: Callable[[str], None], host: str) -> None:
    host_zone(host)
    assert next_cron_fire("0 12 * * *", BERLIN, datetime(2026, 7, 1, 9, 30, tzinfo=UTC)) == datetime(
        2026, 7, 1, 10, 0, tzinfo=UTC
    )
    # Changes of offset close to a new year in UTC, where the host's calendar is already in the
    # next year or still in the last: Singapore went from +07:30 to +08:00 at 1981-12-31 16:00 UTC.
    singapore = next_cron_fire("15 0 * * *", ZoneInfo("Asia/Singapore"), datetime(1981, 12, 31, 15, 30, tzinfo=UTC))
    assert singapore == datetime(1981, 12, 31, 16, 15, tzinfo=UTC)
    # Lima sprang from -05 to -04 at 1986-01-01 05:00 UTC (00:00 local): 00:30 ran when the gap ended.
    lima = next_cron_fire("30 0 * * *", ZoneInfo("America/Lima"), datetime(1985, 12, 31, 12, tzinfo=UTC))
    assert lima == datetime(1986, 1, 1, 5, 0, tzinfo=UTC)


# -- the end of the calendar -----------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("expression", ["* * * * *", "0 0 1 1 *", "0 0 29 2 *", "*/15 * * * *"])
def test_no_overflow_near_the_end_of_the_calendar(zone: str, expression: str) -> None:
    near_max = datetime.max.replace(tzinfo=UTC)
    for start in (datetime(9999, 1, 1, tzinfo=UTC), near_max - timedelta(days=1), near_max):
        trigger = CronTrigger(expression, zone, start_date=start)
        result = next_fire_times(trigger, datetime(2026, 1, 1, tzinfo=UTC), 3)
        assert all(t >= start for t in result)
        assert CronTrigger(expression, zone).get_next_fire_time(None, near_max) is None


def test_the_last_year_of_the_calendar_is_reached_from_the_year_before() -> None:
    assert next_cron_fire("0 0 1 1 *", ZoneInfo("UTC"), datetime(9998, 6, 1, tzinfo=UTC)) == datetime(
        9999, 1, 1, tzinfo=UTC
    )


# -- other callers ---------------------------------------------------------------------------------


def test_resolve_wall_time() -> None:
    assert resolve_wall_time(datetime(2026, 7, 1, 12, 0), BERLIN) == datetime(2026, 7, 1, 12, 0, tzinfo=BERLIN)
    assert resolve_wall_time(datetime(2026, 3, 29, 2, 30), BERLIN) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert resolve_wall_time(datetime(2026, 9, 27, 3, 0), CHATHAM) == datetime(2026, 9, 26, 14, 0, tzinfo=UTC)
    repeated = resolve_wall_time(datetime(2026, 10, 25, 2, 30), BERLIN)
    assert repeated.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the first pass
    # The first pass even when the wall time comes marked as the second one (fold=1).
    assert resolve_wall_time(datetime(2026, 10, 25, 2, 30, fold=1), BERLIN).utcoffset() == timedelta(hours=2)
    # In the task's zone, as its wall clock reads it: a time in the gap runs when the gap ends.
    gap = resolve_wall_time(datetime(2026, 3, 29, 2, 30), BERLIN)
    assert (gap.replace(tzinfo=None), gap.utcoffset()) == (datetime(2026, 3, 29, 3, 0), timedelta(hours=2))


def test_cron_trigger_pickles_for_the_job_store() -> None:
    trigger = CronTrigger("0 2 * * *", "Europe/Berlin")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    trigger.get_next_fire_time(None, now)  # the parsed fields are a cache, never pickled
    restored = pickle.loads(pickle.dumps(trigger))
    assert restored.get_next_fire_time(None, now) == trigger.get_next_fire_time(None, now)
    assert str(restored) == "cron[0 2 * * * Europe/Berlin]"


# A trigger pickled by the previous implementation (state version 2), as DjangoJobStore holds it.
STORED_VERSION_2 = (
    b"\x80\x05\x95\xe7\x00\x00\x00\x00\x00\x00\x00\x8c\x16scheduler_app.triggers\x94\x8c\x0bCronTrigger\x94\x93"
    b"\x94)\x81\x94}\x94(\x8c\x07version\x94K\x02\x8c\nexpression\x94\x8c\x0c*/15 * * * *\x94\x8c\x08timezone"
    b"\x94\x8c\x10America/New_York\x94\x8c\nstart_date\x94\x8c\x08datetime\x94\x8c\x08datetime\x94\x93\x94C\n"
    b"\x07\xea\x01\x01\x00\x00\x00\x00\x00\x00\x94h\x0b\x8c\x08timezone\x94\x93\x94h\x0b\x8c\ttimedelta\x94\x93"
    b"\x94K\x00K\x00K\x00\x87\x94R\x94\x85\x94R\x94\x86\x94R\x94\x8c\x08end_date\x94Nub."
)


def test_a_stored_version_2_trigger_loads_and_follows_the_new_rules() -> None:
    trigger = pickle.loads(STORED_VERSION_2)
    assert isinstance(trigger, CronTrigger)
    assert trigger.start_date == datetime(2026, 1, 1, tzinfo=UTC)
    got = next_fire_times(trigger, datetime(2026, 11, 1, 5, 40, tzinfo=UTC), 2)
    assert walls(got, NEW_YORK) == ["01:45-0400", "01:00-0500"]
    assert pickle.loads(pickle.dumps(trigger)).__getstate__() == trigger.__getstate__()


def test_a_trigger_pickles_in_the_stored_format_with_its_dates() -> None:
    """What the job store holds keeps its format (the version-2 keys and values), end_date included."""

    class Raw:
        def __setstate__(self, state: dict[str, object]) -> None:
            self.state = state

    class RawUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            return Raw if name == "CronTrigger" else super().find_class(module, name)

    stored = RawUnpickler(io.BytesIO(STORED_VERSION_2)).load().state
    fresh = CronTrigger("*/15 * * * *", "America/New_York", start_date=datetime(2026, 1, 1, tzinfo=UTC))
    assert fresh.__getstate__() == stored
    end = datetime(2027, 6, 1, tzinfo=UTC)
    bounded = pickle.loads(pickle.dumps(CronTrigger("0 2 * * *", "UTC", end_date=end)))
    assert bounded.end_date == end
    assert bounded.get_next_fire_time(None, datetime(2027, 5, 31, 3, 0, tzinfo=UTC)) is None


def test_interval_trigger_still_built_here() -> None:
    trigger = make_interval_trigger(90, "UTC", start_date=datetime(2026, 1, 1, tzinfo=UTC))
    assert trigger.get_next_fire_time(None, datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)


def test_interval_trigger_keeps_its_interval_and_zone() -> None:
    start = datetime(2026, 1, 1, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    trigger = make_interval_trigger(90, "Asia/Tokyo", start_date=start)
    first = trigger.get_next_fire_time(None, start)
    second = trigger.get_next_fire_time(first, first)
    assert (first, second - first) == (start, timedelta(seconds=90))
    assert str(first.tzinfo) == str(second.tzinfo) == "Asia/Tokyo", "fire times are shown in the task's zone"


@pytest.mark.django_db(transaction=True)
def test_an_interval_task_fires_in_its_own_zone_whatever_zone_its_start_date_was_written_in() -> None:
    services.set_schedule("tick", schedule_type="interval", interval_seconds=90, timezone_name="Asia/Tokyo")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    unbounded = build_trigger(services.get_task("tick"))
    config = services.set_options("tick", {"start_date": "2026-01-01T00:00:00+00:00"})  # stored in UTC
    for trigger in (unbounded, build_trigger(config)):
        fire = trigger.get_next_fire_time(None, now)
        assert fire is not None and str(fire.tzinfo) == "Asia/Tokyo", "fire times are shown in the task's zone"


@pytest.mark.django_db(transaction=True)
def test_a_cron_row_stored_without_its_expression_never_fires_and_names_none() -> None:
    from scheduler_app.models import TaskConfig

    services.set_schedule("tick", schedule_type="cron", cron_expression="0 * * * *", timezone_name="UTC")
    TaskConfig.objects.filter(name="tick").update(cron_expression_override="")  # as if stored before validation
    trigger = build_trigger(services.get_task("tick"))
    assert isinstance(trigger, CronTrigger) and str(trigger) == "cron[ UTC]"
    assert trigger.get_next_fire_time(None, datetime.now(UTC)) is None


@pytest.mark.django_db(transaction=True)
def test_build_trigger_ends_the_schedule_at_the_end_date() -> None:
    config = services.set_options("tick", {"end_date": "2020-01-01T00:00:00+00:00"})
    assert build_trigger(config).get_next_fire_time(None, datetime.now(UTC)) is None
    config = services.clear_options("tick")
    assert build_trigger(config).get_next_fire_time(None, datetime.now(UTC)) is not None


@pytest.mark.django_db(transaction=True)
def test_build_trigger_follows_the_effective_schedule_within_its_dates() -> None:
    services.set_schedule("tick", schedule_type="cron", cron_expression="0 * * * *", timezone_name="UTC")
    config = services.set_options(
        "tick", {"start_date": "2030-01-01T01:30:00+00:00", "end_date": "2030-01-01T04:00:00+00:00"}
    )
    hours = next_fire_times(build_trigger(config), datetime(2029, 12, 31, tzinfo=UTC), 10)
    assert hours == [datetime(2030, 1, 1, hour, tzinfo=UTC) for hour in (2, 3, 4)]
    config = services.set_schedule("tick", schedule_type="interval", interval_seconds=90)
    times = next_fire_times(build_trigger(config), datetime(2030, 1, 1, 2, tzinfo=UTC), 3)
    # Anchored to the start date: every fire is a whole number of intervals after it.
    assert (times[0] - datetime(2030, 1, 1, 1, 30, tzinfo=UTC)).total_seconds() % 90 == 0
    assert [b - a for a, b in pairwise(times)] == [timedelta(seconds=90)] * 2
    assert times[-1] <= datetime(2030, 1, 1, 4, tzinfo=UTC)


def test_next_fire_times_lists_distinct_fires_in_order() -> None:
    now = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
    quarter = next_fire_times(CronTrigger("*/15 * * * *", "UTC"), now, 3)
    assert quarter == [now + timedelta(minutes=minutes) for minutes in (15, 30, 45)], "strictly after now"
    interval = next_fire_times(make_interval_trigger(600, "UTC", start_date=now), now, 3)
    assert interval == [now, now + timedelta(minutes=10), now + timedelta(minutes=20)]


class _NoOffset(tzinfo):
    """A zone that knows no offset (``utcoffset`` None): an aware-looking but naive time."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None


def test_start_and_end_dates_are_read_and_bounded_with_their_reasons() -> None:
    """What a start_date or end_date may be, and the reason a refused one is given (API and admin show it)."""
    assert parse_datetime_option(None) is None and parse_datetime_option("") is None  # no date: unbounded
    assert parse_datetime_option("2030-01-01T01:00:00+01:00") == datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError) as not_a_date:
        parse_datetime_option(20300101)
    assert str(not_a_date.value) == "expected an ISO 8601 date-time"
    offset_rule = "needs a time zone offset, e.g. 2027-01-01T00:00:00+00:00"
    for naive in ("2030-01-01T00:00:00", datetime(2030, 1, 1), datetime(2030, 1, 1, tzinfo=_NoOffset())):
        with pytest.raises(ValueError) as without_offset:
            parse_datetime_option(naive)
        assert str(without_offset.value) == offset_rule, naive
    # The bounds: the first instant of 1970 is in, the first of 3000 (UTC) is out.
    first = parse_datetime_option("1970-01-01T00:00:00+00:00")
    assert first == datetime(1970, 1, 1, tzinfo=UTC)
    bound_rule = "must lie from 1970 to 2999 (UTC), so that every fire time derived from it exists in every time zone"
    for outside in ("3000-01-01T00:00:00+00:00", "1969-12-31T23:59:59+00:00"):
        with pytest.raises(ValueError) as out_of_range:
            parse_datetime_option(outside)
        assert str(out_of_range.value) == bound_rule, outside


def test_a_start_date_on_a_fire_time_fires_there_once_and_nothing_fires_before_it() -> None:
    start = datetime(2030, 1, 1, 1, 0, tzinfo=UTC)
    hourly = next_fire_times(CronTrigger("0 * * * *", "UTC", start_date=start), datetime(2029, 12, 31, tzinfo=UTC), 3)
    assert hourly == [start, start + timedelta(hours=1), start + timedelta(hours=2)]
    # A microsecond after a whole minute: that minute is before the start, the next one is not.
    late = start + timedelta(microseconds=1)
    minutely = CronTrigger("* * * * *", "UTC", start_date=late).get_next_fire_time(None, start - timedelta(days=1))
    assert minutely == start + timedelta(minutes=1)
