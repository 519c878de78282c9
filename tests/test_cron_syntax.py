"""What cron syntax is accepted: exactly crontab(5) plus the @ macros, each extension refused by name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler_app.triggers import CronTrigger, next_fire_times, parse_cron
from scheduler_app.validation import CRON_ALIASES, cron_expression_error

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday


def first_fires(expression: str, count: int = 3) -> list[str]:
    return [t.strftime("%a %d %b %H:%M") for t in next_fire_times(CronTrigger(expression, "UTC"), START, count)]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*/20 13 * * *", ["Sat 28 Nov 13:00", "Sat 28 Nov 13:20", "Sat 28 Nov 13:40"]),
        ("5-15/5 13 * * *", ["Sat 28 Nov 13:05", "Sat 28 Nov 13:10", "Sat 28 Nov 13:15"]),
        ("0 9 * * MON-FRI", ["Mon 30 Nov 09:00", "Tue 01 Dec 09:00", "Wed 02 Dec 09:00"]),
        ("0 9 * * mon-fri/2", ["Mon 30 Nov 09:00", "Wed 02 Dec 09:00", "Fri 04 Dec 09:00"]),
        ("0 0 * * 7", ["Sun 29 Nov 00:00", "Sun 06 Dec 00:00", "Sun 13 Dec 00:00"]),
        ("0 0 * * 5-7", ["Sun 29 Nov 00:00", "Fri 04 Dec 00:00", "Sat 05 Dec 00:00"]),
        ("0 0 1 Jan,jul *", ["Fri 01 Jan 00:00", "Thu 01 Jul 00:00", "Sat 01 Jan 00:00"]),
        ("0 0 1 dec,jan-feb *", ["Tue 01 Dec 00:00", "Fri 01 Jan 00:00", "Mon 01 Feb 00:00"]),
        ("30 23 31 * *", ["Thu 31 Dec 23:30", "Sun 31 Jan 23:30", "Wed 31 Mar 23:30"]),
        ("0 12 1,15 * *", ["Tue 01 Dec 12:00", "Tue 15 Dec 12:00", "Fri 01 Jan 12:00"]),
        ("\t0  12 1,15 * * ", ["Tue 01 Dec 12:00", "Tue 15 Dec 12:00", "Fri 01 Jan 12:00"]),
    ],
)
def test_crontab_syntax_is_accepted(expression: str, expected: list[str]) -> None:
    assert cron_expression_error(expression) is None
    assert first_fires(expression) == expected


@pytest.mark.parametrize("alias", sorted(CRON_ALIASES))
def test_macros_are_accepted_in_any_case(alias: str) -> None:
    assert cron_expression_error(alias) is None
    assert cron_expression_error(alias.upper()) is None
    assert first_fires(alias, 2) == first_fires(CRON_ALIASES[alias], 2)


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("5-1 * * * *", "range '5-1' is reversed"),
        ("0 0 * * fri-mon", "write fri-sat,sun-mon"),
        ("0 0 1 dec-feb *", "range 'dec-feb' is reversed; cron ranges go from low to high (write dec,jan-feb)"),
        ("50-10 * * * *", "(write 50-59,0-10)"),
        ("0 0 ? * *", "'?' is not crontab syntax"),
        ("0 0 L * *", "'L' (last) and 'W' (nearest weekday) are not crontab syntax"),
        ("0 0 LW * *", "'L' (last)"),
        ("0 0 15W * *", "'W' (nearest weekday)"),
        ("0 0 * * 5L", "'L' (last)"),
        ("0 0 * * 1#2", "'#' (nth weekday) is not crontab syntax"),
        ("0 0 0 * * *", "has 6 fields; expected 5"),
        ("0 0 0 * * * 2026", "a seconds or a year field is not supported"),
        ("5/10 * * * *", "needs '*' or a range before the '/'"),
        ("*/0 * * * *", "step 0 in the minute field must be from 1 to 59"),
        ("61 * * * *", "minute 61 is out of range 0-59"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month 0 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12"),
        ("0 0 * * 8", "day of week 8 is out of range 0-7"),
        ("0 0 * mon *", "'MON' is not a month name"),
        ("0 0 * * jan", "'JAN' is not a day of week name"),
        ("1,,2 * * * *", "empty list item"),
        ("*/2-5 * * * *", "'*/2-5' is not valid in the minute field"),
        ("0 0 31 2 *", "it can never fire: day 31 never occurs in February"),
        ("0 0 30,31 2 *", "it can never fire: days 30, 31 never occur in February"),
        ("5x * * * *", "'5x' is not a valid minute"),
        ("@reboot", "unknown cron alias '@reboot'"),
    ],
)
def test_syntax_beyond_crontab_is_refused_by_name(expression: str, fragment: str) -> None:
    message = cron_expression_error(expression)
    assert message is not None and fragment in message, message
    if not expression.startswith("@"):
        assert message.startswith(f"invalid cron expression {expression!r}") or "fields" in message


_FIELDS_RULE = "expected 5 (minute hour day-of-month month day-of-week)"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 31 2,4 *", "it can never fire: day 31 never occurs in February or April"),
        ("0 0 L * *", "'L' (last) and 'W' (nearest weekday) are not crontab syntax and are not supported"),
        # Numbers get numbers back, names get names.
        ("0 0 * 12-1 *", "range '12-1' is reversed; cron ranges go from low to high (write 12,1)"),
        ("0 0 * * fri-sun", "range 'fri-sun' is reversed; cron ranges go from low to high (write fri-sat,sun)"),
    ],
)
def test_a_refusal_reads_in_full(expression: str, message: str) -> None:
    """The whole text, as the API, the admin and the commands show it."""
    assert cron_expression_error(expression) == f"invalid cron expression {expression!r}: {message}"


def test_a_refused_alias_or_field_count_reads_in_full() -> None:
    known = "@annually, @daily, @hourly, @midnight, @monthly, @weekly, @yearly"
    assert cron_expression_error("@reboot") == f"unknown cron alias '@reboot'; known: {known}"
    for expression in ("0 0 0 * * *", "0 0 0 * * * 2026"):
        count = len(expression.split())
        assert cron_expression_error(expression) == (
            f"cron expression {expression!r} has {count} fields; {_FIELDS_RULE}; "
            "a seconds or a year field is not supported"
        )
    assert cron_expression_error("0 0 *") == f"cron expression '0 0 *' has 3 fields; {_FIELDS_RULE}"


def test_star_flags_follow_the_first_character() -> None:
    # entry.c looks at the first character only: */2 is a star, 0-23 is not.
    assert parse_cron("*/5 2 * * *").wildcard and parse_cron("5 */2 * * *").wildcard
    assert not parse_cron("0-59 0-23 * * *").wildcard
    assert parse_cron("0 0 1-31 * 0-7").day_or  # both restricted in form, if not in effect
    assert parse_cron("0 0 */2 * 1").day_or is False
    assert parse_cron("0 0 1 * 1").day_or is True
