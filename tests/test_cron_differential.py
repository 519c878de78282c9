"""The trigger, fire by fire, against two independent readings of cron.

Around daylight-saving transitions the oracle is a minute-by-minute simulation of Debian cron's main
loop (cron.c): the clock is read each real minute as local minutes since the epoch, the jump since the
last minute handled picks one of cron's wake-up kinds, and find_jobs applies the star rules. Away from
transitions, and over long spans, the second oracle is cronsim (the engine of healthchecks.io), which
is known to be wrong around the 30- and 45-minute transitions of Lord Howe and Chatham.

Neither oracle imports scheduler_app.triggers: the simulator reads the fields through cronsim's parser
and decides wildcard/fixed and AND/OR from the text as entry.c does.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError

from scheduler_app.triggers import CronTrigger, next_fire, parse_cron
from scheduler_app.validation import cron_expression_error

MINUTE = timedelta(minutes=1)
MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}


# -- the simulator ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A crontab entry as entry.c keeps it: the allowed values and the star flags."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    dom_or_dow_star: bool
    wild: bool  # MIN_STAR or HR_STAR

    @classmethod
    def parse(cls, expression: str) -> Entry:
        expression = MACROS.get(expression, expression)
        fields = expression.split()
        parsed = CronSim(expression, datetime(2000, 1, 1))
        return cls(
            minutes=frozenset(parsed.minutes),
            hours=frozenset(parsed.hours),
            days=frozenset(parsed.days),
            months=frozenset(parsed.months),
            weekdays=frozenset(int(d) % 7 for d in parsed.weekdays),
            dom_or_dow_star=fields[2].startswith("*") or fields[4].startswith("*"),
            wild=fields[0].startswith("*") or fields[1].startswith("*"),
        )

    def matches(self, wall: datetime) -> bool:
        """find_jobs' test of one virtual minute (given as the naive wall time it stands for)."""
        dom = wall.day in self.days
        dow = wall.isoweekday() % 7 in self.weekdays
        day = (dom and dow) if self.dom_or_dow_star else (dom or dow)
        return wall.minute in self.minutes and wall.hour in self.hours and wall.month in self.months and day


def clock_minutes(instant: datetime, zone: ZoneInfo) -> int:
    """cron's clockTime: (time + GMToff) / 60, local minutes since the epoch."""
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return int(instant.timestamp() + offset.total_seconds()) // 60


def minute_wall(minutes: int) -> datetime:
    """The naive wall time a virtual minute stands for (find_jobs reads it with gmtime)."""
    return datetime(1970, 1, 1) + timedelta(minutes=minutes)


def debian_find_jobs_calls(
    zone: ZoneInfo, start: datetime, end: datetime
) -> Iterator[tuple[datetime, int, bool, bool]]:
    """(real instant, virtual minute, doWild, doNonWild) for each find_jobs call of cron's main loop
    while the clock runs from ``start`` to ``end``, waking at each real minute."""
    virtual = clock_minutes(start, zone)
    now = start
    while now < end:
        now += MINUTE
        running = clock_minutes(now, zone)
        diff = running - virtual
        if diff == 1:
            virtual = running
            yield now, virtual, True, True
        elif 0 < diff <= 5:  # woke up late: every job for each minute
            while virtual < running:
                virtual += 1
                yield now, virtual, True, True
        elif 5 < diff <= 180:  # DST begins: wildcard jobs now, fixed-time jobs for each skipped minute
            yield now, running, True, False
            while virtual < running:
                virtual += 1
                yield now, virtual, False, True
        elif -180 < diff <= 0:  # DST ends: wildcard jobs only; virtual time waits for the clock
            yield now, running, True, False
        else:  # the clock jumped a lot: start over
            virtual = running
            yield now, running, True, True


def simulated_fires(expression: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    entry = Entry.parse(expression)
    fires: list[datetime] = []
    for instant, virtual, do_wild, do_fixed in debian_find_jobs_calls(zone, start, end):
        runs = (do_wild if entry.wild else do_fixed) and entry.matches(minute_wall(virtual))
        if runs and (not fires or fires[-1] != instant):  # several virtual minutes, one run
            fires.append(instant)
    return fires


def trigger_fires(expression: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    trigger = CronTrigger(expression, zone.key)
    fires: list[datetime] = []
    previous: datetime | None = None
    while True:
        fire = trigger.get_next_fire_time(previous, start)
        if fire is None or fire > end:
            return fires
        fires.append(fire.astimezone(UTC))
        previous = fire


def local(times: list[datetime], zone: ZoneInfo) -> list[str]:
    return [t.astimezone(zone).strftime("%m-%d %H:%M%z") for t in times]


# -- the simulator against hand-worked examples ----------------------------------------------------


NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def test_simulator_autumn_wildcard_runs_both_passes() -> None:
    start = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    fires = simulated_fires("*/15 * * * *", NEW_YORK, start, start + timedelta(hours=1, minutes=45))
    assert local(fires, NEW_YORK) == [
        "11-01 01:45-0400",
        "11-01 01:00-0500",
        "11-01 01:15-0500",
        "11-01 01:30-0500",
        "11-01 01:45-0500",
        "11-01 02:00-0500",
        "11-01 02:15-0500",
    ]


def test_simulator_autumn_fixed_runs_first_pass_only() -> None:
    start = datetime(2026, 10, 31, 12, tzinfo=UTC)
    fires = simulated_fires("30 1 * * *", NEW_YORK, start, start + timedelta(days=2))
    assert local(fires, NEW_YORK) == ["11-01 01:30-0400", "11-02 01:30-0500"]


def test_simulator_spring_wildcard_skips_the_gap_and_fixed_runs_after_it() -> None:
    start = datetime(2026, 3, 28, 23, tzinfo=UTC)  # 00:00 CET on the 29th
    end = start + timedelta(hours=4)
    assert local(simulated_fires("30 * * * *", BERLIN, start, end), BERLIN) == [
        "03-29 00:30+0100",
        "03-29 01:30+0100",
        "03-29 03:30+0200",
        "03-29 04:30+0200",
    ]
    assert local(simulated_fires("30 2 * * *", BERLIN, start, end), BERLIN) == ["03-29 03:00+0200"]


def test_simulator_day_rule() -> None:
    zone = ZoneInfo("UTC")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    fires = simulated_fires("0 0 */2 * 1", zone, start, start + timedelta(days=40))
    assert [f.date().isoformat() for f in fires] == ["2026-01-05", "2026-01-19", "2026-02-09"]


# -- generated expressions --------------------------------------------------------------------------

ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # 30-minute shift
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/Santiago",  # gap at midnight
    "America/Havana",  # gap at midnight, repeat at 01:00
    "Antarctica/Troll",  # two-hour shift
    "America/St_Johns",  # -03:30
    "Australia/Sydney",
    "Africa/Casablanca",  # offsets change around Ramadan
]
MINUTE_FIELDS = ["0", "30", "45", "*/15", "*/5", "10,40", "0-59/20", "15-45/15", "*/30", "5", "59"]
HOUR_FIELDS = ["*", "0", "1", "2", "3", "23", "*/2", "1-3", "0,2", "2-4/2", "*/3", "22-23", "0-1"]
DAY_FIELDS = ["*", "*", "*", "*/2", "1-15", "*/1"]
MONTH_FIELDS = ["*", "*", "*", "*/2"]
WEEKDAY_FIELDS = ["*", "*", "*", "0", "sun", "1-5", "mon-fri", "*/2", "6,0", "7"]


def generated_expression(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return rng.choice(list(MACROS))
    if rng.random() < 0.04:
        return f"* {rng.choice(['1', '2', '0', '3'])} * * *"  # every minute of an hour
    return " ".join(
        rng.choice(choices) for choices in (MINUTE_FIELDS, HOUR_FIELDS, DAY_FIELDS, MONTH_FIELDS, WEEKDAY_FIELDS)
    )


def transitions(zone: ZoneInfo, first: date, last: date) -> list[datetime]:
    """The instants the zone's UTC offset changes between two dates (hourly probe, then to the minute)."""
    found: list[datetime] = []
    probe = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC)
    previous = probe.astimezone(zone).utcoffset()
    while probe < end:
        probe += timedelta(hours=1)
        offset = probe.astimezone(zone).utcoffset()
        if offset != previous:
            moment = probe - timedelta(hours=1)
            while moment.astimezone(zone).utcoffset() == previous:
                moment += MINUTE
            found.append(moment)
            previous = offset
    return found


WINDOWS = [
    (zone, moment) for zone in ZONES for moment in transitions(ZoneInfo(zone), date(2026, 1, 1), date(2028, 1, 1))
]


def test_every_sampled_zone_has_transitions_to_check() -> None:
    assert {zone for zone, _ in WINDOWS} == set(ZONES)
    assert len(WINDOWS) >= 2 * len(ZONES)


@pytest.mark.parametrize(("zone_name", "moment"), WINDOWS, ids=[f"{z}-{m:%Y%m%d}" for z, m in WINDOWS])
def test_trigger_agrees_with_debian_cron_around_transitions(zone_name: str, moment: datetime) -> None:
    zone = ZoneInfo(zone_name)
    rng = random.Random(f"{zone_name}{moment.isoformat()}")
    # A day either side: daily fixed-time jobs show both their normal and their shifted fire.
    start, end = moment - timedelta(hours=26), moment + timedelta(hours=26)
    expressions = {generated_expression(rng) for _ in range(24)} | {"*/15 * * * *", "30 2 * * *", "0 * * * *"}
    for expression in sorted(expressions):
        expected = simulated_fires(expression, zone, start, end)
        assert local(trigger_fires(expression, zone, start, end), zone) == local(expected, zone), expression


# -- cronsim away from transitions and over long spans ---------------------------------------------

LONG_SPAN_DAY_FIELDS = ["*", "1", "15", "29", "30", "31", "1,15", "*/2", "*/10", "28-31", "13"]
LONG_SPAN_MONTH_FIELDS = ["*", "2", "feb", "1,7", "*/3", "jan-mar", "4-12/4", "12", "2,4"]
LONG_SPAN_WEEKDAY_FIELDS = ["*", "0", "1", "fri", "5", "1-5", "*/2", "6-7", "0,3", "wed-fri"]


def long_span_expression(rng: random.Random) -> str:
    return " ".join(
        rng.choice(choices)
        for choices in (
            ["0", "30", "*/20", "7"],
            ["0", "12", "*/6", "23"],
            LONG_SPAN_DAY_FIELDS,
            LONG_SPAN_MONTH_FIELDS,
            LONG_SPAN_WEEKDAY_FIELDS,
        )
    )


def cronsim_fires(expression: str, start: datetime, count: int) -> list[datetime]:
    iterator = CronSim(MACROS.get(expression, expression), start)
    return [next(iterator) for _ in range(count)]


def test_trigger_agrees_with_cronsim_over_years_in_zones_without_dst() -> None:
    rng = random.Random(13)
    checked = 0
    for _ in range(300):
        expression = long_span_expression(rng)
        zone = ZoneInfo(rng.choice(["UTC", "Asia/Kolkata", "Asia/Kathmandu", "Etc/GMT+11", "Asia/Tokyo"]))
        start = datetime(rng.randint(2026, 2090), rng.randint(1, 12), rng.randint(1, 28), tzinfo=zone)
        try:
            expected = cronsim_fires(expression, start, 12)
        except CronSimError:  # can never fire: refused here too, and a stored one has no next fire
            assert cron_expression_error(expression) is not None, expression
            assert CronTrigger(expression, zone.key).get_next_fire_time(None, start) is None
            continue
        got = [CronTrigger(expression, zone.key).get_next_fire_time(None, start)]
        for _ in range(11):
            got.append(CronTrigger(expression, zone.key).get_next_fire_time(got[-1], start))
        assert got == expected, expression
        checked += 1
    assert checked > 250


@pytest.mark.parametrize("zone_name", ZONES)
def test_trigger_agrees_with_cronsim_between_transitions(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    rng = random.Random(zone_name)
    # Mid-June and mid-December are months away from every transition of these zones.
    for start in (datetime(2026, 6, 10, tzinfo=zone), datetime(2026, 12, 10, tzinfo=zone)):
        end = start + timedelta(days=30)
        for _ in range(15):
            expression = rng.choice([generated_expression(rng), long_span_expression(rng)])
            if cron_expression_error(expression):
                continue  # never fires; checked against cronsim above
            expected = [t for t in cronsim_fires(expression, start, 40) if t <= end]
            got = [t for t in trigger_fires(expression, zone, start, end)]
            assert got[: len(expected)] == expected, expression


# -- the edges of cron's wake-up kinds ---------------------------------------------------------------

# Forward jumps of odd sizes in the tz database: small ones (cron runs every job for each skipped
# minute) and exactly three hours (cron starts over: nothing skipped is caught up).
ODD_JUMPS = [
    ("America/St_Lucia", date(1911, 12, 31)),  # +4 min (local mean time to AST)
    ("Asia/Yerevan", date(1924, 5, 1)),  # +2 min
    ("Antarctica/Casey", date(2009, 10, 17)),  # +3 h
    ("America/Danmarkshavn", date(1995, 12, 31)),  # +3 h
]
EDGE_EXPRESSIONS = ["* * * * *", "*/15 * * * *", "0 * * * *", "1-3 * * * *", "* 0 * * *", "0 0 * * *", "1 0 * * *"]
EDGE_EXPRESSIONS += ["2 0 * * *", "0 1 * * *", "30 1 * * *", "0 2 * * *", "30 2 * * *", "59 23 * * *"]


@pytest.mark.parametrize(("zone_name", "day"), ODD_JUMPS, ids=[zone for zone, _ in ODD_JUMPS])
def test_trigger_agrees_with_debian_cron_at_odd_sized_jumps(zone_name: str, day: date) -> None:
    zone = ZoneInfo(zone_name)
    [moment] = transitions(zone, day, day + timedelta(days=2))
    start, end = moment - timedelta(hours=26), moment + timedelta(hours=26)
    for expression in EDGE_EXPRESSIONS:
        expected = simulated_fires(expression, zone, start, end)
        assert local(trigger_fires(expression, zone, start, end), zone) == local(expected, zone), expression


def zone_jumping_forward(minutes: int, at: datetime) -> ZoneInfo:
    """A zone (a TZif file of one transition) whose clock jumps from UTC to UTC+``minutes`` at ``at``."""
    return zone_with_one_transition(0, minutes, at)


def zone_with_one_transition(before_minutes: int, after_minutes: int, at: datetime) -> ZoneInfo:
    """A zone (a TZif file of one transition) at UTC+``before_minutes`` until ``at``, then UTC+``after_minutes``."""
    names = b"AAA\0BBB\0"
    header = b"TZif" + b"\0" * 16 + struct.pack(">6l", 0, 0, 0, 1, 2, len(names))
    types = struct.pack(
        ">lBBlBB", before_minutes * 60, int(before_minutes > after_minutes), 0, after_minutes * 60, 1, 4
    )
    data = struct.pack(">lB", int(at.timestamp()), 1) + types
    return ZoneInfo.from_file(io.BytesIO(header + data + names))


def rule_fires(expression: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    spec, fires = parse_cron(expression), [start]
    while (fire := next_fire(spec, zone, fires[-1])) is not None and fire <= end:
        fires.append(fire)
    return fires[1:]


@pytest.mark.parametrize("minutes", [4, 5, 6, 179, 180, 181])
def test_the_rule_agrees_with_debian_cron_at_the_edges_of_its_wake_up_kinds(minutes: int) -> None:
    # No zone jumps by exactly 5 minutes, where cron stops running wildcard jobs for each skipped minute.
    moment = datetime(2026, 3, 1, tzinfo=UTC)
    zone = zone_jumping_forward(minutes, moment)
    assert (moment - MINUTE).astimezone(zone).utcoffset() == timedelta(0)
    assert moment.astimezone(zone).utcoffset() == timedelta(minutes=minutes)
    start, end = moment - timedelta(hours=26), moment + timedelta(hours=26)
    for expression in EDGE_EXPRESSIONS:
        expected = simulated_fires(expression, zone, start, end)
        assert local(rule_fires(expression, zone, start, end), zone) == local(expected, zone), expression


@pytest.mark.parametrize("minutes", [179, 180, 181])
def test_the_rule_agrees_with_debian_cron_when_the_clock_goes_back_about_three_hours(minutes: int) -> None:
    # Up to three hours back, cron holds fixed-time jobs in the repeated wall times; beyond, it resets.
    moment = datetime(2026, 10, 1, tzinfo=UTC)
    zone = zone_with_one_transition(minutes, 0, moment)
    assert (moment - MINUTE).astimezone(zone).utcoffset() == timedelta(minutes=minutes)
    assert moment.astimezone(zone).utcoffset() == timedelta(0)
    start, end = moment - timedelta(hours=26), moment + timedelta(hours=26)
    for expression in EDGE_EXPRESSIONS:
        expected = simulated_fires(expression, zone, start, end)
        assert local(rule_fires(expression, zone, start, end), zone) == local(expected, zone), expression


# -- to the second ---------------------------------------------------------------------------------


@pytest.mark.parametrize("day", [date(1990, 4, 1), date(2007, 3, 11)])
def test_a_job_caught_up_at_a_transition_off_the_hour_fires_on_its_exact_instant(day: date) -> None:
    # Until 2011 Newfoundland moved its clocks at 00:01 local time (03:31 UTC in spring): a fixed-time
    # job in the skipped hour runs the very minute the gap ends, not a second later. (``local`` above
    # shows minutes only, so compare the instants themselves.)
    zone = ZoneInfo("America/St_Johns")
    [moment] = transitions(zone, day, day + timedelta(days=1))
    assert (moment.hour, moment.minute) == (3, 31)
    start, end = moment - timedelta(hours=26), moment + timedelta(hours=26)
    for expression in ["1 0 * * *", "30 0 * * *", "0 1 * * *", "*/15 * * * *"]:
        assert trigger_fires(expression, zone, start, end) == simulated_fires(expression, zone, start, end), expression
    assert moment in trigger_fires("30 0 * * *", zone, start, end)
