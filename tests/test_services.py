"""The operations of services.py that the API and admin tests reach only in part."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from scheduler_app import services
from scheduler_app.models import TaskConfig
from scheduler_app.tasks.base import OverlapPolicy
from scheduler_app.validation import ScheduleValidationError

pytestmark = pytest.mark.django_db


def test_clear_schedule_drops_every_override() -> None:
    services.set_schedule("tick", schedule_type="interval", interval_seconds=300)
    services.clear_schedule("tick")
    assert TaskConfig.objects.get(name="tick").interval_seconds_override is None
    services.set_schedule("tick", schedule_type="cron", cron_expression="*/5 * * * *", timezone_name="Europe/Berlin")
    services.clear_schedule("tick")
    tick = TaskConfig.objects.get(name="tick")
    overrides = (
        tick.schedule_type_override,
        tick.cron_expression_override,
        tick.interval_seconds_override,
        tick.timezone_override,
    )
    assert overrides == ("", "", None, "")
    assert (tick.schedule_type, tick.interval_seconds) == (tick.default_schedule_type, tick.default_interval_seconds)


def test_set_options_stores_choices_as_their_values_and_resets_keys() -> None:
    services.set_options("tick", {"overlap": OverlapPolicy.BUFFER_ONE, "jitter_seconds": 3})
    assert TaskConfig.objects.get(name="tick").options_override == {"overlap": "buffer_one", "jitter_seconds": 3}
    services.set_options("tick", {"jitter_seconds": None, "max_retries": None})  # max_retries was never set
    assert TaskConfig.objects.get(name="tick").options_override == {"overlap": "buffer_one"}


def test_set_options_refuses_an_unknown_key_even_as_a_reset() -> None:
    with pytest.raises(ScheduleValidationError, match="nonsense: unknown schedule option"):
        services.set_options("tick", {"nonsense": None})
    assert TaskConfig.objects.get(name="tick").options_override in ({}, None)


def test_set_options_judges_the_result_with_the_code_defaults(caplog: pytest.LogCaptureFixture) -> None:
    TaskConfig.objects.filter(name="tick").update(default_options={"retry_delay_seconds": 60})
    with pytest.raises(ScheduleValidationError) as caught:
        services.set_options("tick", {"retry_max_delay_seconds": 10})  # below the code's delay
    assert caught.value.subject == "task 'tick'"
    assert caught.value.errors == {
        "retry_max_delay_seconds": "retry_max_delay_seconds must be at least retry_delay_seconds"
    }
    with caplog.at_level(logging.INFO, logger="scheduler_app.services"):
        services.set_options("tick", {"retry_max_delay_seconds": 120, "end_date": "2030-01-01T00:00:00Z"})
    stored = TaskConfig.objects.get(name="tick").options_override
    assert stored == {"retry_max_delay_seconds": 120, "end_date": "2030-01-01T00:00:00+00:00"}  # normalised
    expected = "task tick: Schedule options set: end_date=2030-01-01T00:00:00Z, retry_max_delay_seconds=120. (by code)"
    assert expected in caplog.messages


def test_set_schedule_keeps_only_the_fields_of_its_type(caplog: pytest.LogCaptureFixture, settings: Any) -> None:
    with caplog.at_level(logging.INFO, logger="scheduler_app.services"):
        services.set_schedule("tick", schedule_type="interval", interval_seconds=300, cron_expression="0 2 * * *")
        tick = TaskConfig.objects.get(name="tick")
        assert (tick.cron_expression_override, tick.interval_seconds_override) == ("", 300)
        services.set_schedule("tick", schedule_type="cron", cron_expression=" 0 2 * * * ", interval_seconds=300)
        tick = TaskConfig.objects.get(name="tick")
        assert (tick.cron_expression_override, tick.interval_seconds_override) == ("0 2 * * *", None)
    zone = tick.default_timezone or settings.TIME_ZONE
    assert caplog.messages[-2:] == [
        "task tick: Schedule overridden: every 300s. (by code)",
        f"task tick: Schedule overridden: cron '0 2 * * *' in {zone}. (by code)",
    ]
    with pytest.raises(ScheduleValidationError) as caught:
        services.set_schedule("tick", schedule_type="interval", interval_seconds=0)
    assert caught.value.subject == "task 'tick'" and list(caught.value.errors) == ["interval_seconds"]


def test_enable_overrides_a_task_disabled_in_code_and_disable_stores_its_reason() -> None:
    # `long` is `enabled = False` in code: enabling must override that, not fall back to it.
    assert services.enable_task("long").enabled is True
    assert TaskConfig.objects.get(name="long").enabled_override is True
    disabled = services.disable_task("long")
    assert (disabled.enabled, disabled.disabled_reason) == (False, "")
    assert services.disable_task("long", reason="maintenance").disabled_reason == "maintenance"
    assert services.enable_task("long").disabled_reason == "", "enabling clears the reason"


def test_refusals_name_the_task_and_the_field(admin_user: Any) -> None:
    # The API answers each refusal under the field's name: the key is part of the contract.
    with pytest.raises(ScheduleValidationError) as reason_error:
        services.disable_task("tick", reason="x" * 1001)
    assert str(reason_error.value).startswith("task 'tick': ") and list(reason_error.value.errors) == ["reason"]
    with pytest.raises(ScheduleValidationError) as timeout_error:
        services.set_timeout("tick", -1)
    assert timeout_error.value.errors == {"timeout": "timeout must be greater than 0 (got -1)"}
    assert str(timeout_error.value) == "task 'tick': timeout: timeout must be greater than 0 (got -1)"
    assert TaskConfig.objects.get(name="tick").enabled_override is None, "a refusal changes nothing"


def test_timeout_changes_are_logged_with_what_changed(admin_user: Any) -> None:
    from django.contrib.admin.models import LogEntry

    services.set_timeout("tick", 30, user=admin_user)
    services.set_timeout("tick", None, user=admin_user)
    messages = list(LogEntry.objects.filter(object_id="tick").order_by("id").values_list("change_message", flat=True))
    assert messages == ["Timeout overridden: 30s.", "Timeout reset to the default."]


def test_changes_say_who_and_when_and_anonymous_changes_name_nobody(admin_user: Any) -> None:
    from django.contrib.auth.models import AnonymousUser

    before = TaskConfig.objects.get(name="tick").updated_at
    changed = services.disable_task("tick", user=admin_user)
    assert changed.updated_by == admin_user and changed.updated_at > before
    assert services.enable_task("tick", user=AnonymousUser()).updated_by is None


def test_the_log_names_who_changed_a_task(caplog: pytest.LogCaptureFixture, admin_user: Any) -> None:
    from django.contrib.auth.models import AnonymousUser

    with caplog.at_level(logging.INFO, logger="scheduler_app.services"):
        services.disable_task("tick", user=admin_user, reason="maintenance")
        services.enable_task("tick", user=AnonymousUser())
        services.set_timeout("tick", 30)
    assert caplog.messages == [
        f"task tick: Disabled: maintenance (by {admin_user.username})",
        "task tick: Enabled. (by code)",  # an anonymous user has no name: as from code
        "task tick: Timeout overridden: 30s. (by code)",
    ]


def test_a_busy_task_refuses_a_manual_run_naming_it(caplog: pytest.LogCaptureFixture, admin_user: Any) -> None:
    from scheduler_app.exceptions import TaskBusy
    from scheduler_app.models import TaskState

    with caplog.at_level(logging.INFO, logger="scheduler_app.services"):
        record = services.request_run("tick", user=admin_user)
    assert f"task tick: manual run {record.pk} queued by {admin_user.username}" in caplog.messages
    with caplog.at_level(logging.INFO, logger="scheduler_app.services"):
        unnamed = services.request_run("tick")  # from code, no user: the origin names it
    assert unnamed.origin == "api" and unnamed.triggered_by is None
    assert caplog.messages[-1] == f"task tick: manual run {unnamed.pk} queued by api"
    TaskState.objects.filter(task_id="tick").update(running_count=1)
    with pytest.raises(TaskBusy) as busy:
        services.request_run("tick")
    assert busy.value.name == "tick" and "'tick'" in str(busy.value)


def test_an_unknown_task_is_refused_naming_it_and_the_known_ones() -> None:
    from scheduler_app.exceptions import TaskNotFound
    from scheduler_app.registry import task_registry

    with pytest.raises(TaskNotFound) as unknown:
        services.get_task("nope")
    assert unknown.value.name == "nope"
    assert str(unknown.value) == f"unknown task 'nope'; known tasks: {', '.join(sorted(task_registry.names()))}"


def test_a_task_is_found_in_the_registry_given_and_its_missing_row_created(
    django_assert_num_queries: Any,
) -> None:
    from scheduler_app.registry import TaskRegistry
    from tests.tasks import TickTask

    class FreshTask(TickTask):
        name = "fresh"  # registered after the rows were made (and in no other registry)

    registry = TaskRegistry()
    registry.register(FreshTask)
    assert not TaskConfig.objects.filter(name="fresh").exists()
    created = services.get_task("fresh", registry)
    expected = ("fresh", TickTask.schedule.interval_seconds, True)
    assert (created.name, created.interval_seconds, created.registered) == expected
    with django_assert_num_queries(1):  # its row exists now: one read, no sync
        found = services.get_task("fresh", registry)
    assert found.pk == "fresh"
