from __future__ import annotations

import pytest

from scheduler_app.validation import (
    ScheduleValidationError,
    cron_expression_error,
    interval_error,
    schedule_errors,
    task_name_error,
    timeout_error,
    timezone_error,
)


@pytest.mark.parametrize(
    "expression", ["0 * * * *", "0 2 * * *", "0 0 * * 0", "0 0 1 * *", "*/5 1-3 * * mon-fri", "@daily"]
)
def test_valid_cron_expressions(expression: str) -> None:
    assert cron_expression_error(expression) is None


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("61 * * * *", "invalid cron expression"),
        ("* * * *", "has 4 fields; expected 5"),
        ("0 0 0 * * *", "has 6 fields"),
        ("", "needs a cron expression"),
        (None, "needs a cron expression"),
        ("@sometimes", "unknown cron alias"),
    ],
)
def test_invalid_cron_expressions_are_explained(expression: object, fragment: str) -> None:
    message = cron_expression_error(expression)
    assert message is not None and fragment in message


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (1, True),
        (3600, True),
        (2.0, True),
        (0, False),
        (-5, False),
        (1.5, False),
        (2**31, False),
        (True, False),
        ("60", False),
        (None, False),
    ],
)
def test_interval_must_be_a_positive_whole_number(value: object, ok: bool) -> None:
    assert (interval_error(value) is None) is ok


def test_schedule_errors_name_the_field() -> None:
    assert schedule_errors(schedule_type="cron", cron_expression="bad") == {
        "cron_expression": "cron expression 'bad' has 1 fields; expected 5 (minute hour day-of-month month day-of-week)"
    }
    assert set(schedule_errors(schedule_type="interval", interval_seconds=0)) == {"interval_seconds"}
    assert set(schedule_errors(schedule_type="weekly")) == {"schedule_type"}
    assert set(schedule_errors(schedule_type="cron", cron_expression="0 * * * *", timezone="Mars/Olympus")) == {
        "timezone"
    }
    assert schedule_errors(schedule_type="interval", interval_seconds=60, timezone="Europe/Berlin") == {}


def test_names_timeouts_and_zones() -> None:
    assert task_name_error("sync_inventory") is None
    assert "lowercase" in (task_name_error("Sync-Inventory") or "")
    assert task_name_error("") is not None
    assert timeout_error(None) is None and timeout_error(30) is None
    assert timeout_error(0) is not None and timeout_error("30") is not None
    assert timezone_error("America/New_York") is None and timezone_error("Nowhere/City") is not None


def test_validation_error_carries_fields_and_subject() -> None:
    error = ScheduleValidationError({"cron_expression": "bad"}, subject="task 'x'")
    assert error.errors == {"cron_expression": "bad"}
    assert str(error) == "task 'x': cron_expression: bad"
