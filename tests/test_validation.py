"""The rules of ``validation.py``, and every write path (API, admin form, admin action, code) applying them alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from scheduler_app.validation import (
    MAX_DURATION_SECONDS,
    MAX_TIMEOUT_SECONDS,
    ScheduleValidationError,
    config_errors,
    cron_expression_error,
    disabled_reason_error,
    interval_error,
    options_errors,
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


@pytest.mark.parametrize("expression", ["", "   ", None, 5])
def test_a_missing_cron_expression_is_asked_for_with_an_example(expression: object) -> None:
    assert cron_expression_error(expression) == "a cron schedule needs a cron expression, e.g. '0 2 * * *'"


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


def test_an_interval_that_is_not_a_whole_number_says_what_is_expected_and_what_came() -> None:
    # The text every surface shows (API 400, admin form, `manage.py check`).
    expected = "an interval schedule needs `interval_seconds`, a whole number of seconds greater than 0"
    assert interval_error(1.5) == f"{expected} (got 1.5)"
    assert interval_error("60") == f"{expected} (got '60')"
    assert interval_error(0) == "interval_seconds must be greater than 0 (got 0)"


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


def test_config_errors_judge_every_stored_field() -> None:
    """What the scheduler asks of a stored configuration: every field, by the same rules as on input."""
    broken = SimpleNamespace(
        schedule_type="cron",
        cron_expression="61 * * * *",
        interval_seconds=None,
        timezone="Nowhere/City",
        options={"jitter_seconds": -1},
        timeout_seconds=0,
    )
    assert config_errors(broken) == {
        "cron_expression": cron_expression_error("61 * * * *"),
        "timezone": timezone_error("Nowhere/City"),
        "jitter_seconds": options_errors({"jitter_seconds": -1})["jitter_seconds"],
        "timeout": timeout_error(0),
    }
    interval = SimpleNamespace(
        schedule_type="interval", cron_expression="", interval_seconds=0, timezone="", options={}, timeout_seconds=5
    )
    assert config_errors(interval) == {"interval_seconds": interval_error(0)}
    fine = SimpleNamespace(
        schedule_type="interval", cron_expression="", interval_seconds=60, timezone="UTC", options={}, timeout_seconds=5
    )
    assert config_errors(fine) == {}


def test_validation_error_carries_fields_and_subject() -> None:
    error = ScheduleValidationError({"cron_expression": "bad"}, subject="task 'x'")
    assert error.errors == {"cron_expression": "bad"}
    assert str(error) == "task 'x': cron_expression: bad"
    assert error.subject == "task 'x'"
    bare = ScheduleValidationError({"timezone": "unknown", "timeout": "too long"})
    assert str(bare) == "timezone: unknown; timeout: too long" and bare.subject is None


# -- the bounds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Europe", "America", "America/Argentina", "localtime", "posixrules", "Factory"])
def test_only_real_iana_zones_are_zones(name: str) -> None:
    message = timezone_error(name)
    assert message is not None and "unknown time zone" in message


def test_zone_names_are_exact() -> None:
    assert timezone_error("Pacific/Kiritimati") is None and timezone_error("UTC") is None
    assert timezone_error("europe/berlin") is not None and timezone_error("Europe/Berlin\x00") is not None
    assert timezone_error("A" * 1000) is not None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"start_date": "9999-12-31T23:00:00+00:00"}, "start_date"),
        ({"start_date": "9999-12-31T23:59:59-14:00"}, "start_date"),
        ({"end_date": "0001-01-01T00:00:00+14:00"}, "end_date"),
        ({"start_date": "2999-12-31T23:59:59-14:00"}, "start_date"),  # 3000-01-01 in UTC
        ({"catch_up_window_seconds": 99999999999999}, "catch_up_window_seconds"),
        ({"catch_up_window_seconds": MAX_DURATION_SECONDS + 1}, "catch_up_window_seconds"),
        ({"retry_delay_seconds": 1e300}, "retry_delay_seconds"),
        ({"retry_max_delay_seconds": float("inf")}, "retry_max_delay_seconds"),
        ({"retry_delay_seconds": float("nan")}, "retry_delay_seconds"),
        ({"retry_delay_seconds": True}, "retry_delay_seconds"),
        ({"jitter_seconds": True}, "jitter_seconds"),
    ],
)
def test_options_out_of_bounds(options: dict[str, Any], field: str) -> None:
    assert field in options_errors(options)


def test_bounds_keep_every_derived_date_representable_in_every_zone() -> None:
    """The extremes the rules let through, combined, still give dates in every zone."""
    from zoneinfo import ZoneInfo

    assert options_errors({"start_date": "2999-12-31T23:59:59+00:00", "end_date": "2999-12-31T23:59:59.5+00:00"}) == {}
    latest = datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)
    for derived in (
        latest + timedelta(seconds=MAX_DURATION_SECONDS),  # an interval or retry delay after the latest start
        datetime.now(UTC) - timedelta(seconds=MAX_DURATION_SECONDS),  # a catch-up window back from now
        datetime.now(UTC) + timedelta(seconds=MAX_TIMEOUT_SECONDS),
    ):
        for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):
            assert derived.astimezone(ZoneInfo(zone)).year < 9999


def test_timeouts_and_reasons() -> None:
    assert timeout_error(MAX_TIMEOUT_SECONDS) is None and timeout_error(0.001) is None
    for bad in (MAX_TIMEOUT_SECONDS + 1, 1e300, float("inf"), float("nan"), True, 0.0001):
        assert timeout_error(bad) is not None, bad
    assert timeout_error("30") == "timeout must be a number of seconds"
    assert timeout_error(0) == "timeout must be greater than 0 (got 0)"  # refused as not positive, not as out of range
    assert disabled_reason_error("x" * 1000) is None and disabled_reason_error("") is None
    assert "at most 1000" in (disabled_reason_error("x" * 1001) or "")
    assert "NUL" in (disabled_reason_error("a\x00b") or "")


def test_a_task_class_out_of_bounds_is_refused_at_registration() -> None:
    from scheduler_app.exceptions import InvalidTaskError
    from scheduler_app.registry import TaskRegistry
    from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule

    class Forever(BaseTask):
        name = "forever"
        schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60)
        timeout = 1e300

        def run(self) -> TaskResult:
            return TaskResult.success()

    class FarFuture(Forever):
        name = "far_future"
        timeout = None
        schedule = TaskSchedule(
            schedule_type=ScheduleType.CRON,
            cron_expression="0 * * * *",
            timezone="Pacific/Kiritimati",
            start_date=datetime(9999, 12, 31, tzinfo=UTC),
        )

    for task, fragment in ((Forever, "timeout must be from"), (FarFuture, "start_date")):
        with pytest.raises(InvalidTaskError, match=fragment):
            TaskRegistry().register(task)


# -- every path refuses the same values: the API and the admin form side by side ----------------------

OPTIONS = "/scheduler/tasks/tick/options"
SCHEDULE = "/scheduler/tasks/tick/schedule"
# (the API call, the field the 400 names; the admin form's changes, the field its error is on)
BAD_INPUT = {
    "start_date_9999_utc": (
        ("patch", "/scheduler/tasks/tick/options", {"start_date": "9999-12-31T23:00:00+00:00"}, "start_date"),
        ({"start_date": "9999-12-31T23:00:00+00:00"}, "start_date"),
    ),
    "start_date_9999_minus_14": (
        ("patch", "/scheduler/tasks/tick/options", {"start_date": "9999-12-31T23:59:59-14:00"}, "start_date"),
        ({"start_date": "9999-12-31T23:59:59-14:00"}, "start_date"),
    ),
    "catch_up_window_huge": (
        (
            "patch",
            "/scheduler/tasks/tick/options",
            {"catch_up_window_seconds": 99999999999999},
            "catch_up_window_seconds",
        ),
        ({"catch_up_window_seconds": "99999999999999"}, "catch_up_window_seconds"),
    ),
    "retry_delay_1e300": (
        ("patch", "/scheduler/tasks/tick/options", {"retry_delay_seconds": 1e300}, "retry_delay_seconds"),
        ({"retry_delay_seconds": "1e300"}, "retry_delay_seconds"),
    ),
    "timeout_1e300": (
        ("put", "/scheduler/tasks/tick/timeout", {"timeout_seconds": 1e300}, "timeout_seconds"),
        ({"timeout_override": "1e300"}, "timeout_override"),
    ),
    "timeout_31_days": (
        ("put", "/scheduler/tasks/tick/timeout", {"timeout_seconds": 31 * 86400}, "timeout_seconds"),
        ({"timeout_override": str(31 * 86400)}, "timeout_override"),
    ),
    "interval_arabic_indic_digit": (
        (
            "put",
            "/scheduler/tasks/tick/schedule",
            {"schedule_type": "interval", "interval_seconds": "٣"},
            "interval_seconds",
        ),
        ({"schedule_type_override": "interval", "interval_seconds_override": "٣"}, "interval_seconds_override"),
    ),
    "reason_200kb": (
        ("post", "/scheduler/tasks/tick/disable", {"reason": "x" * 200_000}, "reason"),
        ({"enabled": "", "disabled_reason": "x" * 200_000}, "disabled_reason"),
    ),
    "reason_nul": (
        ("post", "/scheduler/tasks/tick/disable", {"reason": "a\x00b"}, "reason"),
        ({"enabled": "", "disabled_reason": "a\x00b"}, "disabled_reason"),
    ),
    **{
        f"zone_{zone}": (
            (
                "put",
                "/scheduler/tasks/tick/schedule",
                {"schedule_type": "cron", "cron_expression": "0 * * * *", "timezone": zone},
                "timezone",
            ),
            (
                {"schedule_type_override": "cron", "cron_expression_override": "0 * * * *", "timezone_override": zone},
                "timezone_override",
            ),
        )
        for zone in ("Europe", "America", "localtime", "posixrules", "Factory")
    },
}


def stored(name: str = "tick") -> dict[str, Any]:
    from scheduler_app.models import TaskConfig

    return TaskConfig.objects.filter(name=name).values().get()


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_the_api_refuses_each_bad_value_and_saves_nothing(admin_client, case: str) -> None:
    (method, path, body, field), _ = BAD_INPUT[case]
    before = stored()
    response = getattr(admin_client, method)(path, json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content[:500]
    assert response["Content-Type"] == "application/json" and response.json().get(field), response.json()
    assert stored() == before


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_the_admin_form_refuses_each_bad_value_and_saves_nothing(admin_client, case: str) -> None:
    from tests.test_admin import change_url, form_data

    _, (changes, field) = BAD_INPUT[case]
    before = stored()
    response = admin_client.post(change_url("tick"), form_data("tick", **changes))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors.get(field), errors
    assert stored() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"timeout_seconds": True},
        {"timeout_seconds": "NaN"},
        {"timeout_seconds": "٣"},
        {"timeout_seconds": "Infinity"},
    ],
)
def test_api_numbers_are_strict(admin_client, body: dict[str, Any]) -> None:
    before = stored()
    response = admin_client.put("/scheduler/tasks/tick/timeout", json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and "timeout_seconds" in response.json()
    assert stored() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/scheduler/tasks/tick/schedule", {"schedule_type": "interval", "interval_seconds": True}, "interval_seconds"),
        ("/scheduler/tasks/tick/schedule", {"schedule_type": "cron", "cron_expression": 5}, "cron_expression"),
        (
            "/scheduler/tasks/tick/schedule",
            {"schedule_type": "cron", "cron_expression": "0 * * * *", "timezone": 1},
            "timezone",
        ),
        ("/scheduler/tasks/tick/options", {"max_retries": True}, "max_retries"),
        ("/scheduler/tasks/tick/options", {"jitter_seconds": "٣"}, "jitter_seconds"),
        ("/scheduler/tasks/tick/options", {"retry_delay_seconds": False}, "retry_delay_seconds"),
        ("/scheduler/tasks/tick/disable", {"reason": 42}, "reason"),
    ],
)
def test_api_types_are_strict_for_every_input_field(admin_client, path: str, body: dict[str, Any], field: str) -> None:
    before = stored()
    method = "post" if path.endswith("disable") else ("patch" if path.endswith("options") else "put")
    response = getattr(admin_client, method)(path, json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert stored() == before


@pytest.mark.django_db
def test_form_encoded_api_numbers_in_ascii_still_work(admin_client) -> None:
    response = admin_client.put(
        "/scheduler/tasks/tick/timeout", "timeout_seconds=2.5", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200 and response.json()["timeout_seconds"] == 2.5


@pytest.mark.django_db
@pytest.mark.parametrize("reason", ["x" * 200_000, "a\x00b"])
def test_the_admin_disable_action_applies_the_same_reason_rule(admin_client, reason: str) -> None:
    from tests.test_admin import TASKS

    before = stored()
    response = admin_client.post(
        TASKS,
        {"action": "disable_selected", "_selected_action": ["tick"], "apply": "yes", "reason": reason},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert any(m.startswith("Nothing disabled: reason must") for m in shown), shown
    assert stored() == before


@pytest.mark.django_db
def test_code_refuses_the_same_values() -> None:
    from scheduler_app import services

    before = stored()
    with pytest.raises(ScheduleValidationError, match="reason"):
        services.disable_task("tick", reason="x" * 1001)
    with pytest.raises(ScheduleValidationError, match="catch_up_window_seconds"):
        services.set_options("tick", {"catch_up_window_seconds": 99999999999999})
    with pytest.raises(ScheduleValidationError, match="timezone"):
        services.set_schedule("tick", schedule_type="cron", cron_expression="0 * * * *", timezone_name="Europe")
    with pytest.raises(ScheduleValidationError, match="timeout"):
        services.set_timeout("tick", 1e300)
    assert stored() == before


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["Europe", "America", "localtime"])
def test_schedule_preview_answers_a_zone_folder_with_an_error_not_a_500(admin_client, zone: str) -> None:
    from django.urls import reverse

    url = reverse("admin:scheduler_app_taskconfig_preview", args=["nightly"])
    response = admin_client.get(
        url, {"schedule_type_override": "cron", "cron_expression_override": "0 * * * *", "timezone_override": zone}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False and "unknown time zone" in body["errors"]["timezone_override"]


def test_refusals_word_for_word_and_at_their_bounds() -> None:
    # Users read these messages (API bodies, admin forms, `manage.py check`): each is pinned whole.
    assert task_name_error("") == task_name_error(None) == "a task needs a non-empty string `name`"
    assert task_name_error("a" * 100) is None
    assert task_name_error("a" * 101) == f"task name {'a' * 101!r} is longer than 100 characters"
    assert interval_error(2_147_483_647) is None
    assert timezone_error(5) == "timezone must be an IANA zone name such as 'Europe/Berlin'"
    assert schedule_errors(schedule_type="weekly") == {
        "schedule_type": "unknown schedule type 'weekly'; expected one of 'cron', 'interval'"
    }
    assert schedule_errors(schedule_type="cron", cron_expression="0 " * 101) == {
        "cron_expression": "cron_expression must be at most 200 characters (got 202)"
    }
    assert options_errors({"overlap": "nope"}) == {
        "overlap": "unknown overlap 'nope'; expected one of 'skip', 'allow', 'buffer_one'"
    }
    known = "jitter_seconds, overlap, catch_up, catch_up_window_seconds, max_retries, retry_backoff, "
    known += "retry_delay_seconds, retry_max_delay_seconds, start_date, end_date"
    assert options_errors({"nope": 1}) == {"nope": f"unknown schedule option; known: {known}"}


def test_option_values_at_their_bounds() -> None:
    assert options_errors({"jitter_seconds": 3.0, "retry_delay_seconds": 0.001}) == {}  # a whole float; the low end
    assert options_errors({"retry_delay_seconds": 60, "retry_max_delay_seconds": 60}) == {}  # the cap may equal it
    same = "2030-01-01T00:00:00+00:00"
    assert options_errors({"start_date": same, "end_date": same}) == {"end_date": "end_date must be after start_date"}


def test_a_bad_retry_value_is_reported_alone_not_compared() -> None:
    rule = "must be a number of seconds greater than 0, from 0.001 to 2147483647"
    too_big = {"retry_delay_seconds": 1e12, "retry_max_delay_seconds": 60}
    assert options_errors(too_big) == {"retry_delay_seconds": f"retry_delay_seconds {rule}"}
    negative_cap = {"retry_delay_seconds": 60, "retry_max_delay_seconds": -5}
    assert options_errors(negative_cap) == {"retry_max_delay_seconds": f"retry_max_delay_seconds {rule}"}


def test_a_task_schedule_is_judged_whole() -> None:
    from scheduler_app.tasks.base import TaskSchedule
    from scheduler_app.validation import task_schedule_errors

    contradicting = TaskSchedule(
        schedule_type="interval", interval_seconds=60, allow_concurrent=True, overlap="skip", timezone="Mars/Base"
    )
    assert task_schedule_errors(contradicting) == {
        "timezone": "unknown time zone 'Mars/Base'; use an IANA name such as 'Europe/Berlin'",
        "overlap": "overlap='skip' contradicts allow_concurrent=True; set only one",
    }
    # An unknown overlap is reported as such, not as a contradiction; "allow" agrees with allow_concurrent.
    unknown = TaskSchedule(schedule_type="interval", interval_seconds=60, allow_concurrent=True, overlap="nope")
    assert task_schedule_errors(unknown) == {
        "overlap": "unknown overlap 'nope'; expected one of 'skip', 'allow', 'buffer_one'"
    }
    agreeing = TaskSchedule(schedule_type="interval", interval_seconds=60, allow_concurrent=True, overlap="allow")
    assert task_schedule_errors(agreeing) == {}


def test_a_task_class_without_name_or_schedule_is_explained_not_crashed_on() -> None:
    from scheduler_app.tasks.base import BaseTask, TaskResult
    from scheduler_app.validation import task_errors

    class Bare(BaseTask):
        def run(self) -> TaskResult:
            return TaskResult.success()

    assert task_errors(Bare()) == ["a task needs a non-empty string `name`", "`schedule` must be a TaskSchedule"]
