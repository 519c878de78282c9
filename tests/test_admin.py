"""The admin pages, through Django's test client: every action, the validation, the read-only rules."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin as django_admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from scheduler_app import services
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord, TaskState
from scheduler_app.tasks.base import OPTION_DEFAULTS

pytestmark = [pytest.mark.django_db]

TASKS = reverse("admin:scheduler_app_taskconfig_changelist")
RECORDS = reverse("admin:scheduler_app_taskexecutionrecord_changelist")


def change_url(name: str) -> str:
    return reverse("admin:scheduler_app_taskconfig_change", args=[name])


def config(name: str) -> TaskConfig:
    return TaskConfig.objects.get(name=name)


def form_data(name: str, /, **changes: Any) -> dict[str, Any]:
    """What the task page posts when nothing is touched, with ``changes`` applied."""
    task = config(name)
    data = {
        "enabled": "on" if task.enabled else "",
        "disabled_reason": task.disabled_reason,
        "schedule_type_override": task.schedule_type_override,
        "cron_expression_override": task.cron_expression_override,
        "interval_seconds_override": task.interval_seconds_override or "",
        "timezone_override": task.timezone_override,
        "timeout_override": "" if task.timeout_override is None else task.timeout_override,
        **{key: (task.options_override or {}).get(key, "") for key in OPTION_DEFAULTS},
        "_save": "Save",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def act(client: Client, action: str, *names: str, **extra: str) -> Any:
    return client.post(TASKS, {"action": action, "_selected_action": list(names), **extra}, follow=True)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def log_messages(name: str) -> list[str]:
    return list(LogEntry.objects.filter(object_id=name).order_by("id").values_list("change_message", flat=True))


# -- the task list ---------------------------------------------------------------------------------


def test_task_list_shows_schedule_state_and_results(admin_client: Client) -> None:
    TaskState.objects.filter(task_id="boom").update(run_count=7, fail_count=7, last_result="failed")
    TaskState.objects.filter(task_id="tick").update(run_count=3, last_result="success", next_run_at=timezone.now())
    response = admin_client.get(TASKS)
    assert response.status_code == 200
    html = response.content.decode()
    for name in ("tick", "nightly", "boom", "crawl_site"):
        assert f">{name}</a>" in html
    assert "<code>0 2 * * *</code>" in html and "At 02:00 (UTC)" in html  # cron-descriptor's prose
    assert "every 1 second" in html and "every 1 hour" in html  # intervals read as durations
    assert "code default" in html and ">override<" not in html
    assert re.search(r"background:#c62828[^>]*>failed<", html), "a failed last result is red"
    assert re.search(r"background:#1e7e34[^>]*>success<", html), "a success is green"
    assert ">7</td>" in html  # run and fail counts
    assert "No scheduler process is running" in html


def test_task_list_filters_and_search(admin_client: Client) -> None:
    TaskState.objects.filter(task_id="boom").update(last_result="failed")

    def names(query: str) -> set[str]:
        response = admin_client.get(TASKS + query)
        assert response.status_code == 200
        return {c.name for c in response.context["cl"].result_list}

    everything = names("")
    assert {"tick", "long", "nightly", "boom"} <= everything
    assert "long" not in names("?enabled=yes") and "long" in names("?enabled=no")  # `enabled = False` in code
    assert names("?schedule_type=cron") == {n for n in everything if config(n).schedule_type == "cron"}
    assert "nightly" in names("?schedule_type=cron") and "tick" not in names("?schedule_type=cron")
    assert names("?last_result=failed") == {"boom"}
    assert "boom" not in names("?last_result=never") and "tick" in names("?last_result=never")
    # Only outcomes are offered: a run still pending, queued on a backend or running is no last result.
    offered = admin_client.get(TASKS).content.decode()
    assert "?last_result=failed" in offered and "?last_result=never" in offered
    for still_open in ("pending", "queued", "running"):
        assert f"?last_result={still_open}" not in offered, still_open
    assert names("?q=returns+at+once") == {"tick"}  # search in descriptions
    admin_client.post(
        change_url("tick"), form_data("tick", schedule_type_override="interval", interval_seconds_override=5)
    )
    assert names("?schedule_type=override") == {"tick"}


def test_tasks_removed_from_code_are_hidden_by_default(admin_client: Client) -> None:
    TaskConfig.objects.create(
        name="gone_task", registered=False, default_schedule_type="interval", default_interval_seconds=60
    )
    assert "gone_task" not in admin_client.get(TASKS).content.decode()
    assert "gone_task" in admin_client.get(TASKS + "?registered=all").content.decode()
    assert "gone_task" in admin_client.get(TASKS + "?registered=no").content.decode()
    # Its page is view-only: nothing is left to steer.
    page = admin_client.get(change_url("gone_task"))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(change_url("gone_task"), {"enabled": ""}).status_code == 403
    run = admin_client.post(reverse("admin:scheduler_app_taskconfig_run", args=["gone_task"]))
    assert run.status_code == 403
    assert not TaskExecutionRecord.objects.filter(task_id="gone_task").exists()


# -- actions ---------------------------------------------------------------------------------------


def test_disable_and_enable_actions_go_through_services_and_are_logged(admin_client: Client) -> None:
    revision = config("tick").revision
    # Disabling asks first, with room for a reason; nothing changes until it is confirmed.
    confirm = act(admin_client, "disable_selected", "tick", "boom")
    page = confirm.content.decode()
    assert confirm.status_code == 200 and 'name="reason"' in page and "<li>tick: Returns at once" in page
    assert config("tick").enabled and config("tick").revision == revision
    response = act(admin_client, "disable_selected", "tick", "boom", apply="yes", reason="maintenance")
    assert "Disabled 2 task(s): boom, tick. Reason: maintenance" in " ".join(messages_of(response))
    assert not config("tick").enabled and not config("boom").enabled
    assert config("tick").revision == revision + 1 and config("tick").updated_by.username == "admin"
    assert config("tick").disabled_reason == "maintenance"
    assert log_messages("tick") == ["Disabled: maintenance"]

    response = act(admin_client, "enable_selected", "tick")
    assert "Enabled 1 task(s): tick." in messages_of(response)[0]
    assert config("tick").enabled and not config("boom").enabled and config("tick").disabled_reason == ""
    assert log_messages("tick") == ["Disabled: maintenance", "Enabled."]
    # Who did it shows on the task's page.
    page = admin_client.get(change_url("tick")).content.decode()
    assert "Enabled." in page and "Disabled: maintenance" in page and ">admin<" in page
    # Without a reason the log says just that.
    act(admin_client, "disable_selected", "tick", apply="yes")
    assert log_messages("tick")[-1] == "Disabled."


def test_run_now_action_queues_without_running(admin_client: Client) -> None:
    response = act(admin_client, "run_selected", "tick", "nightly")
    text = " ".join(messages_of(response))
    assert "Queued 2 run(s)" in text and "No scheduler process is running" in text
    records = TaskExecutionRecord.objects.filter(task_id__in=["tick", "nightly"])
    assert records.count() == 2
    for record in records:
        # Never run inside the request: the scheduler process picks pending records up.
        assert record.status == "pending" and record.started_at is None
        assert record.trigger == "manual" and record.origin == "admin"
        assert record.triggered_by.username == "admin"
    assert any(m.startswith("Run requested (record") for m in log_messages("tick"))


def test_run_now_button(admin_client: Client) -> None:
    url = reverse("admin:scheduler_app_taskconfig_run", args=["nightly"])
    page = admin_client.get(change_url("nightly")).content.decode()
    assert f'action="{url}"' in page and 'id="run-now"' in page
    assert admin_client.get(url).status_code == 405  # a GET changes nothing
    response = admin_client.post(url, follow=True)
    record = TaskExecutionRecord.objects.get(task_id="nightly")
    assert response.redirect_chain[-1][0] == change_url("nightly")
    assert f"queued as record #{record.pk}" in messages_of(response)[0]
    assert record.status == "pending" and record.origin == "admin"
    # The new row is in the task's latest runs.
    assert f">#{record.pk}</a>" in response.content.decode()


def test_run_now_refused_while_a_run_is_going(admin_client: Client) -> None:
    TaskState.objects.filter(task_id="slow").update(running_count=1)
    url = reverse("admin:scheduler_app_taskconfig_run", args=["slow"])
    response = admin_client.post(url, follow=True)
    assert "does not allow concurrent runs" in messages_of(response)[0]
    response = act(admin_client, "run_selected", "slow")
    assert "does not allow concurrent runs" in " ".join(messages_of(response))
    assert not TaskExecutionRecord.objects.filter(task_id="slow").exists()


def test_revert_to_code_defaults(admin_client: Client) -> None:
    admin_client.post(
        change_url("tick"),
        form_data("tick", schedule_type_override="cron", cron_expression_override="*/5 * * * *", timeout_override=9),
    )
    assert config("tick").schedule_source == "override" and config("tick").timeout_override == 9
    page = admin_client.get(change_url("tick")).content.decode()
    assert 'id="revert-defaults"' in page
    response = admin_client.post(reverse("admin:scheduler_app_taskconfig_revert", args=["tick"]), follow=True)
    assert "schedule, timeout and policies are the code's again" in messages_of(response)[0]
    tick = config("tick")
    assert tick.schedule_source == "code" and tick.interval_seconds == 1 and tick.timeout_override is None
    assert log_messages("tick")[-2:] == ["Schedule reset to the code default.", "Timeout reset to the default."]
    assert 'id="revert-defaults"' not in response.content.decode()  # nothing left to revert
    # The list action does the same, and says when there was nothing to do.
    response = act(admin_client, "revert_selected", "tick")
    assert "Nothing to revert" in messages_of(response)[0]


# -- the task form -----------------------------------------------------------------------------------


def test_schedule_override_saved_through_services(admin_client: Client) -> None:
    revision = config("tick").revision
    response = admin_client.post(
        change_url("tick"),
        form_data(
            "tick",
            schedule_type_override="cron",
            cron_expression_override="*/5 * * * *",
            timezone_override="Europe/Berlin",
        ),
    )
    assert response.status_code == 302
    tick = config("tick")
    assert (tick.schedule_type, tick.cron_expression, tick.timezone) == ("cron", "*/5 * * * *", "Europe/Berlin")
    assert tick.revision == revision + 1  # one change, one bump: the scheduler reloads it
    assert log_messages("tick") == ["Schedule overridden: cron '*/5 * * * *' in Europe/Berlin."]
    page = admin_client.get(change_url("tick")).content.decode()
    assert "Every 5 minutes (Europe/Berlin)" in page and ">override<" in page
    assert page.count("CET</li>") + page.count("CEST</li>") == 5  # next fire times, in the task's zone

    response = admin_client.post(
        change_url("tick"),
        form_data("tick", schedule_type_override="interval", interval_seconds_override=90, timeout_override=2.5),
    )
    tick = config("tick")
    assert (tick.schedule_type, tick.interval_seconds, tick.cron_expression) == ("interval", 90, None)
    assert tick.timeout_seconds == 2.5 and tick.timeout_source == "override"
    assert "every 1 minute 30 seconds" in admin_client.get(TASKS).content.decode()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"schedule_type_override": "cron", "cron_expression_override": "61 * * * *"},
            "cron_expression_override",
            "invalid cron expression '61 * * * *'",
        ),
        (
            {"schedule_type_override": "cron", "cron_expression_override": "* * *"},
            "cron_expression_override",
            "has 3 fields; expected 5",
        ),
        (
            {"schedule_type_override": "cron", "cron_expression_override": ""},
            "cron_expression_override",
            "a cron schedule needs a cron expression",
        ),
        (
            {"schedule_type_override": "interval", "interval_seconds_override": 0},
            "interval_seconds_override",
            "interval_seconds must be greater than 0",
        ),
        (
            {
                "schedule_type_override": "cron",
                "cron_expression_override": "0 2 * * *",
                "timezone_override": "Mars/Olympus",
            },
            "timezone_override",
            "unknown time zone 'Mars/Olympus'",
        ),
        ({"cron_expression_override": "0 2 * * *"}, "schedule_type_override", "Pick cron or interval"),
        ({"timeout_override": -1}, "timeout_override", "timeout must be greater than 0"),
        ({"enabled": "on", "disabled_reason": "why not"}, "disabled_reason", "Untick Enabled"),
    ],
)
def test_invalid_input_is_a_form_error_and_nothing_is_saved(
    admin_client: Client, changes: dict[str, Any], field: str, message: str
) -> None:
    before = TaskConfig.objects.filter(name="tick").values().get()
    response = admin_client.post(change_url("tick"), form_data("tick", **changes))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors.get(field, [])), errors
    assert "Please correct the error below." in response.content.decode()
    assert TaskConfig.objects.filter(name="tick").values().get() == before
    assert not LogEntry.objects.exists()


def test_policy_overrides_saved_through_services(admin_client: Client) -> None:
    revision = config("tick").revision
    assert "<details><summary>" in admin_client.get(change_url("tick")).content.decode()  # folded while unused
    response = admin_client.post(
        change_url("tick"),
        form_data(
            "tick",
            max_retries=3,
            retry_delay_seconds=5,
            overlap="buffer_one",
            jitter_seconds=2,
            start_date="2027-01-01T00:00:00+00:00",
        ),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    tick = config("tick")
    assert tick.options_override == {
        "max_retries": 3,
        "retry_delay_seconds": 5.0,
        "overlap": "buffer_one",
        "jitter_seconds": 2,
        "start_date": "2027-01-01T00:00:00+00:00",
    }
    assert tick.revision == revision + 1 and tick.overlap_policy == "buffer_one"
    assert log_messages("tick")[-1].startswith("Schedule options set: ")
    page = admin_client.get(change_url("tick")).content.decode()
    assert "<td><code>max_retries</code></td><td>3</td>" in page
    assert "<details><summary>" not in page  # overrides in use: shown open
    assert "Sat 2027-01-02 00:00:00 UTC" not in page and "Fri 2027-01-01 00:00:00 UTC" in page  # start date
    # Emptying one field sends that key back to the code's value; emptying all clears them.
    admin_client.post(change_url("tick"), form_data("tick", jitter_seconds=""))
    assert "jitter_seconds" not in config("tick").options_override and config("tick").options["max_retries"] == 3
    admin_client.post(change_url("tick"), form_data("tick", **dict.fromkeys(OPTION_DEFAULTS, "")))
    assert config("tick").options_override == {}
    assert log_messages("tick")[-1] == "Schedule options reset to the code defaults."


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"max_retries": -1}, "max_retries", "max_retries must be a whole number from 0 to 100"),
        ({"jitter_seconds": 100_000}, "jitter_seconds", "jitter_seconds must be a whole number"),
        ({"retry_delay_seconds": 60, "retry_max_delay_seconds": 30}, "retry_max_delay_seconds", "at least"),
        ({"retry_max_delay_seconds": 5}, "retry_max_delay_seconds", "at least"),  # the code's delay is 10
        ({"start_date": "2027-01-01T00:00:00"}, "start_date", "needs a time zone offset"),
        ({"start_date": "tomorrow"}, "start_date", "start_date"),
        (
            {"start_date": "2027-01-02T00:00:00+00:00", "end_date": "2027-01-01T00:00:00+00:00"},
            "end_date",
            "end_date must be after start_date",
        ),
        ({"overlap": "sometimes"}, "overlap", "Select a valid choice"),
    ],
)
def test_invalid_policies_are_form_errors(
    admin_client: Client, changes: dict[str, Any], field: str, message: str
) -> None:
    before = TaskConfig.objects.filter(name="tick").values().get()
    response = admin_client.post(change_url("tick"), form_data("tick", **changes))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors.get(field, [])), errors
    assert TaskConfig.objects.filter(name="tick").values().get() == before


def test_revert_clears_policy_overrides(admin_client: Client) -> None:
    admin_client.post(change_url("tick"), form_data("tick", max_retries=2))
    assert config("tick").options_override == {"max_retries": 2}
    admin_client.post(reverse("admin:scheduler_app_taskconfig_revert", args=["tick"]))
    assert config("tick").options_override == {}


def test_disable_with_a_reason_from_the_form(admin_client: Client) -> None:
    admin_client.post(change_url("tick"), form_data("tick", enabled="", disabled_reason="upstream is down"))
    tick = config("tick")
    assert not tick.enabled and tick.disabled_reason == "upstream is down"
    assert log_messages("tick") == ["Disabled: upstream is down"]
    assert "upstream is down" in admin_client.get(TASKS).content.decode()
    # Changing only the note of a disabled task keeps it disabled with the new note.
    admin_client.post(change_url("tick"), form_data("tick", disabled_reason="maintenance until 6"))
    assert config("tick").disabled_reason == "maintenance until 6" and not config("tick").enabled
    # Enabling clears the note.
    admin_client.post(change_url("tick"), form_data("tick", enabled="on"))
    assert config("tick").enabled and config("tick").disabled_reason == ""


def test_an_unchanged_form_changes_nothing(admin_client: Client) -> None:
    revision = config("nightly").revision
    response = admin_client.post(change_url("nightly"), form_data("nightly"))
    assert response.status_code == 302
    assert config("nightly").revision == revision and not LogEntry.objects.exists()


def test_name_code_defaults_and_state_are_read_only(admin_client: Client) -> None:
    before = TaskConfig.objects.filter(name="nightly").values().get()
    state_before = TaskState.objects.filter(task_id="nightly").values().get()
    response = admin_client.post(
        change_url("nightly"),
        form_data(
            "nightly",
            name="renamed",
            description="hacked",
            registered="",
            default_enabled="",
            default_cron_expression="* * * * *",
            default_schedule_type="interval",
            default_interval_seconds=1,
            default_timeout_seconds=1,
            allow_concurrent="on",
            revision=0,
            run_count=99,
            fail_count=99,
            last_result="success",
        ),
    )
    assert response.status_code == 302
    assert TaskConfig.objects.filter(name="nightly").values().get() == before
    assert TaskState.objects.filter(task_id="nightly").values().get() == state_before
    assert not TaskConfig.objects.filter(name="renamed").exists()
    form = admin_client.get(change_url("nightly")).context["adminform"].form
    assert set(form.fields) == {
        "enabled",
        "disabled_reason",
        "schedule_type_override",
        "cron_expression_override",
        "interval_seconds_override",
        "timezone_override",
        "timeout_override",
        *OPTION_DEFAULTS,  # every schedule policy can be overridden here
    }


def test_tasks_cannot_be_added_or_deleted(admin_client: Client) -> None:
    assert admin_client.get(reverse("admin:scheduler_app_taskconfig_add")).status_code == 403
    delete = reverse("admin:scheduler_app_taskconfig_delete", args=["tick"])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert admin_client.post(TASKS, {"action": "delete_selected", "_selected_action": ["tick"], "post": "yes"})
    assert TaskConfig.objects.filter(name="tick").exists()


def test_schedule_preview_endpoint(admin_client: Client) -> None:
    url = reverse("admin:scheduler_app_taskconfig_preview", args=["nightly"])
    saved = admin_client.get(url).json()
    assert saved["valid"] and saved["source"] == "code" and len(saved["times"]) == 5
    assert all(t.endswith("02:00:00+00:00") for t in saved["times"])
    draft = admin_client.get(
        url,
        {
            "schedule_type_override": "cron",
            "cron_expression_override": "30 4 * * 1",
            "timezone_override": "America/New_York",
        },
    ).json()
    assert draft["valid"] and draft["source"] == "override" and "Monday" in draft["description"]
    assert all("T04:30:00-0" in t for t in draft["times"])
    bad = admin_client.get(url, {"schedule_type_override": "cron", "cron_expression_override": "nope"}).json()
    assert not bad["valid"] and "cron_expression_override" in bad["errors"]
    bad = admin_client.get(url, {"schedule_type_override": "interval", "interval_seconds_override": "x"}).json()
    assert not bad["valid"] and "interval_seconds_override" in bad["errors"]
    assert config("nightly").schedule_source == "code"  # a preview saves nothing
    assert admin_client.get(reverse("admin:scheduler_app_taskconfig_preview", args=["nope"])).status_code == 404


# -- permissions -------------------------------------------------------------------------------------


def staff_client(*perms: str) -> Client:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_users_change_nothing(client: Client) -> None:
    response = client.post(reverse("admin:scheduler_app_taskconfig_run", args=["tick"]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.post(TASKS, {"action": "disable_selected", "_selected_action": ["tick"], "apply": "yes"})
    client.post(change_url("tick"), form_data("tick", enabled=""))
    assert config("tick").enabled and not TaskExecutionRecord.objects.exists()


def test_view_only_staff_see_but_cannot_operate() -> None:
    client = staff_client("view_taskconfig", "view_taskexecutionrecord")
    page = client.get(change_url("tick"))
    assert page.status_code == 200 and 'id="run-now"' not in page.content.decode()
    assert client.post(reverse("admin:scheduler_app_taskconfig_run", args=["tick"])).status_code == 403
    assert client.post(reverse("admin:scheduler_app_taskconfig_revert", args=["tick"])).status_code == 403
    assert client.post(change_url("tick"), form_data("tick", enabled="")).status_code == 403
    listing = client.get(TASKS)
    assert "disable_selected" not in listing.content.decode()
    assert config("tick").enabled and not TaskExecutionRecord.objects.exists()


def test_operate_permission_allows_actions_and_editing() -> None:
    client = staff_client("operate_task")
    response = client.post(reverse("admin:scheduler_app_taskconfig_run", args=["tick"]))
    assert response.status_code == 302 and TaskExecutionRecord.objects.get().triggered_by.username == "operator"
    client.post(TASKS, {"action": "disable_selected", "_selected_action": ["tick"], "apply": "yes"})
    assert not config("tick").enabled
    assert client.post(change_url("tick"), form_data("tick", enabled="on")).status_code == 302
    assert config("tick").enabled
    saved = client.post(change_url("tick"), form_data("tick", timeout_override="7"))
    assert saved.status_code == 302 and config("tick").timeout_override == 7


ADMIN_ACTIONS = ["enable_selected", "disable_selected", "run_selected", "revert_selected"]


@pytest.mark.parametrize("perms", [(), ("view_taskconfig",), ("view_taskconfig", "change_taskconfig")])
def test_staff_without_the_operate_permission_change_nothing(perms: tuple[str, ...]) -> None:
    """Staff status, and even the model's "change" permission, are not the permission to operate."""
    services.set_timeout("tick", 5, user=None)
    services.disable_task("nightly", user=None, reason="kept off")
    before = {c.name: (c.revision, c.enabled, c.timeout_override) for c in TaskConfig.objects.all()}
    client = staff_client(*perms)
    for action in ADMIN_ACTIONS:
        response = client.post(
            TASKS, {"action": action, "_selected_action": ["tick", "nightly"], "apply": "yes", "reason": "x"}
        )
        # Django's answer to an action the user may not use: not offered, so "no action selected".
        assert response.status_code in (200, 302, 403), (action, response.status_code)
    for button in ("run", "revert"):
        url = reverse(f"admin:scheduler_app_taskconfig_{button}", args=["tick"])
        assert client.post(url).status_code == 403, button
    for name, changes in [("tick", {"timeout_override": "9"}), ("nightly", {"enabled": "on"})]:
        assert client.post(change_url(name), form_data(name, **changes)).status_code == 403, name
    after = {c.name: (c.revision, c.enabled, c.timeout_override) for c in TaskConfig.objects.all()}
    assert after == before and not TaskExecutionRecord.objects.exists()
    if perms:
        listing = client.get(TASKS).content.decode()
        assert all(action not in listing for action in ADMIN_ACTIONS)
        page = client.get(change_url("tick")).content.decode()
        assert 'id="run-now"' not in page and 'name="_save"' not in page


def test_staff_without_permissions_see_nothing() -> None:
    client = staff_client()
    assert client.get(TASKS).status_code == 403
    assert client.get(RECORDS).status_code == 403


# -- history -----------------------------------------------------------------------------------------


def make_record(task: str, **fields: Any) -> TaskExecutionRecord:
    now = timezone.now()
    defaults = {
        "trigger": "scheduled",
        "status": "success",
        "scheduled_at": now,
        "started_at": now,
        "finished_at": now,
        "duration_seconds": 0.25,
        "origin": "scheduler",
        "worker_label": "host:1",
    }
    return TaskExecutionRecord.objects.create(task_id=task, **{**defaults, **fields})


def test_history_list_and_filters(admin_client: Client) -> None:
    ok = make_record("tick")
    failed = make_record("boom", status="failed", error="Traceback (most recent call last):\nValueError: boom")
    manual = make_record(
        "nightly", trigger="manual", scheduled_at=None, origin="admin", triggered_by=User.objects.get(username="admin")
    )
    old = make_record("tick", created_at=timezone.now() - timezone.timedelta(days=40))

    def ids(query: str) -> set[int]:
        response = admin_client.get(RECORDS + query)
        assert response.status_code == 200
        return {r.pk for r in response.context["cl"].result_list}

    assert ids("") == {ok.pk, failed.pk, manual.pk, old.pk}
    assert ids("?task__name__exact=tick") == {ok.pk, old.pk}
    assert ids("?status__exact=failed") == {failed.pk}
    assert ids("?trigger__exact=manual") == {manual.pk}
    # Filters and the trigger column show the stored words, as the status badges and the API do.
    page = admin_client.get(RECORDS).content.decode()
    assert ">manual<" in page and ">Manual<" not in page
    assert 'title="failed"' in page or ">failed<" in page
    assert ">Pending<" not in page and ">Success<" not in page
    assert admin_client.get(RECORDS).context["is_nav_sidebar_enabled"] is False
    # The "Past 7 days" link of the date filter.
    changelist = admin_client.get(RECORDS).context["cl"]
    date_filter = changelist.filter_specs[3]
    week = next(c for c in date_filter.choices(changelist) if c["display"] == "Past 7 days")
    assert ids(week["query_string"]) == {ok.pk, failed.pk, manual.pk}
    html = admin_client.get(RECORDS).content.decode()
    assert "250.0 ms" in html and "admin (admin)" in html and ">failed<" in html
    assert re.search(r"<td class=\"field-started\">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>", html), "seconds shown"
    # A bad filter value is not a server error.
    bad = admin_client.get(RECORDS + "?created_at__gte=not-a-date")
    assert bad.status_code == 302 and bad["Location"].endswith("?e=1")


def test_history_shows_the_backend_of_a_queued_run_and_the_worker_of_the_others(admin_client: Client) -> None:
    from tests.runs import queued_run

    queued = queued_run("tick", backend="fleet")
    ran = make_record("boom", worker_label="box-7:4242")
    html = admin_client.get(RECORDS).content.decode()
    row = r'<a href="[^"]*/(\d+)/change/[^>]*>\d+</a>.*?<td class="field-worker_display">([^<]*)</td>'
    cells = dict(re.findall(row, html, re.S))
    assert cells[str(queued.pk)] == "queued on backend &#x27;fleet&#x27;", cells
    assert cells[str(ran.pk)] == "box-7:4242", cells
    assert ">queued<" in html  # its status badge
    # Which worker ran what: searched by its label.
    found = admin_client.get(RECORDS + "?q=box-7:4242").context["cl"].result_list
    assert [r.pk for r in found] == [ran.pk]
    page = admin_client.get(reverse("admin:scheduler_app_taskexecutionrecord_change", args=[queued.pk]))
    assert "queued on backend &#x27;fleet&#x27;" in page.content.decode()


def test_record_page_shows_the_traceback_and_is_read_only(admin_client: Client) -> None:
    record = make_record(
        "boom",
        status="failed",
        message="boom failed",
        data={"attempt": 1},
        error='Traceback (most recent call last):\n  File "tests/tasks.py", line 1\nValueError: <boom> & co',
    )
    url = reverse("admin:scheduler_app_taskexecutionrecord_change", args=[record.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert '<pre class="sched-traceback">Traceback (most recent call last):\n  File &quot;tests/tasks.py&quot;' in html
    assert "ValueError: &lt;boom&gt; &amp; co</pre>" in html  # escaped, lines kept
    assert "&quot;attempt&quot;: 1" in html and 'name="_save"' not in html
    assert timezone.localtime(record.started_at).strftime("%Y-%m-%d %H:%M:%S") in html  # to the second
    assert admin_client.post(url, {"status": "success"}).status_code == 403
    assert admin_client.get(reverse("admin:scheduler_app_taskexecutionrecord_add")).status_code == 403
    delete = reverse("admin:scheduler_app_taskexecutionrecord_delete", args=[record.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    admin_client.post(RECORDS, {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"})
    record.refresh_from_db()
    assert record.status == "failed"


def test_record_page_links_a_retry_to_its_first_run(admin_client: Client) -> None:
    first = make_record("boom", status="failed", error="ValueError: boom")
    retry = make_record("boom", trigger="retry", scheduled_at=None, attempt=2, retry_of=first, jitter_seconds=1.5)
    html = admin_client.get(reverse("admin:scheduler_app_taskexecutionrecord_change", args=[retry.pk])).content
    first_url = reverse("admin:scheduler_app_taskexecutionrecord_change", args=[first.pk])
    assert f'2 (a retry of <a href="{first_url}">#{first.pk}</a>)' in html.decode()
    assert ">1.5<" in html.decode()
    assert {r.pk for r in admin_client.get(RECORDS + "?trigger__exact=retry").context["cl"].result_list} == {retry.pk}


def test_task_page_lists_its_latest_runs(admin_client: Client) -> None:
    records = [make_record("tick", scheduled_at=timezone.now() + timezone.timedelta(seconds=i)) for i in range(12)]
    make_record("boom")
    html = admin_client.get(change_url("tick")).content.decode()
    assert html.count('<tr class="sched-run">') == 10
    assert f">#{records[-1].pk}</a>" in html and f">#{records[0].pk}</a>" not in html  # the newest ten
    assert "?task__name__exact=tick" in html


# -- other models --------------------------------------------------------------------------------------


def test_text_from_tasks_and_people_is_escaped_on_every_page(admin_client: Client) -> None:
    """A run's message, error and data and a disable reason are shown as text, never as markup."""
    script = "<script>alert(1)</script>"
    services.disable_task("boom", user=None, reason=f"reason {script}")
    message = make_record("tick", message=f"message {script}", data={"note": script})
    error = make_record("boom", status="failed", error=f"Traceback (most recent call last):\nValueError: {script}")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    shown = {
        TASKS + "?enabled=no": f'<small class="sched-reason">reason {escaped}</small>',
        change_url("tick"): f"message {escaped}",  # the latest runs
        change_url("boom"): f"ValueError: {escaped}",  # the latest runs: the error's last line
        RECORDS: "",
        reverse("admin:scheduler_app_taskexecutionrecord_change", args=[message.pk]): f"message {escaped}",
        reverse("admin:scheduler_app_taskexecutionrecord_change", args=[error.pk]): f"ValueError: {escaped}</pre>",
    }
    for url, text in shown.items():
        html = admin_client.get(url).content.decode()
        assert "<script>alert(1)" not in html and text in html, url
    record = admin_client.get(reverse("admin:scheduler_app_taskexecutionrecord_change", args=[message.pk]))
    assert f"&quot;note&quot;: &quot;{escaped}&quot;" in record.content.decode()  # the data


def test_apscheduler_admin_is_hidden_and_processes_are_read_only(admin_client: Client) -> None:
    from django_apscheduler.models import DjangoJob, DjangoJobExecution

    assert not django_admin.site.is_registered(DjangoJob)
    assert not django_admin.site.is_registered(DjangoJobExecution)
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert "Django job" not in index and "Tasks" in index
    SchedulerProcess.objects.create(kind="scheduler", role="active", host="box", pid=42)
    listing = admin_client.get(reverse("admin:scheduler_app_schedulerprocess_changelist"))
    assert listing.status_code == 200 and "box:42" in listing.content.decode()
    # Fleet workers (README: Scaling out) are listed beside the schedulers, and can be filtered.
    SchedulerProcess.objects.create(kind="worker", role="", host="node-3", pid=7)
    workers = admin_client.get(reverse("admin:scheduler_app_schedulerprocess_changelist") + "?kind__exact=worker")
    assert [p.label for p in workers.context["cl"].result_list] == ["node-3:7"]
    assert "node-3:7" in workers.content.decode() and "box:42" not in workers.content.decode()
    assert admin_client.get(reverse("admin:scheduler_app_schedulerprocess_add")).status_code == 403
    # With a live scheduler the task list says so.
    assert "Scheduler running" in admin_client.get(TASKS).content.decode()


def test_task_list_queries_do_not_grow_with_tasks(admin_client: Client) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from scheduler_app import services
    from scheduler_app.registry import task_registry
    from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskSchedule

    def count() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(TASKS + "?registered=all")
        assert response.status_code == 200
        return len(response.context["cl"].result_list), len(captured)

    tasks_before, queries_before = count()
    extra = [f"extra_{n:02d}" for n in range(40)]
    for n, name in enumerate(extra):
        schedule = TaskSchedule(schedule_type=ScheduleType.CRON, cron_expression=f"{n} * * * *")
        task_registry.register(type(name, (BaseTask,), {"name": name, "schedule": schedule, "run": lambda self: None}))
    try:
        services.sync_task_rows()
        TaskState.objects.filter(task_id__in=extra).update(run_count=2, last_result="success")
        tasks_after, queries_after = count()
    finally:
        for name in extra:
            task_registry.unregister(name)
    assert tasks_after == tasks_before + 40
    assert queries_after == queries_before, (queries_before, queries_after)


def test_the_admin_does_not_import_the_scheduler() -> None:
    """The admin steers tasks through the services; the scheduler process is not its to import."""
    app = Path(__file__).resolve().parent.parent / "scheduler_app"
    imported = set()
    for module in [app / "admin.py", *(app / "admin_pages").glob("*.py")]:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
    assert "scheduler_app.admin_pages.tasks" in imported  # the walk saw the package's imports
    assert not [name for name in imported if name.split(".")[:2] == ["scheduler_app", "scheduler"]]
