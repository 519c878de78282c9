"""The /scheduler/ REST API through Django's test client, on the real test database.

Real scheduler processes (the end-to-end tests at the bottom) show that what the API queues and
changes is what the running scheduler does, without restart.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token

from scheduler_app import services
from scheduler_app.coordination import try_acquire_lease
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord, TaskState
from scheduler_app.registry import task_registry
from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule
from tests.users import grant_operate

pytestmark = pytest.mark.django_db

SEED_TASK_FIELDS = {
    "name": str,
    "description": str,
    "enabled": bool,
    "schedule_type": str,
    "cron_expression": (str, type(None)),
    "interval_seconds": (int, type(None)),
    "allow_concurrent": bool,
    "status": str,
    "next_run_at": (str, type(None)),
    "last_run_at": (str, type(None)),
    "last_result": (str, type(None)),
    "run_count": int,
    "fail_count": int,
}
RECORD_FIELDS = [
    "id",
    "task",
    "trigger",
    "status",
    "scheduled_at",
    "started_at",
    "finished_at",
    "duration_seconds",
    "message",
    "error",
    "data",
]
READ_PATHS = ["/scheduler/status", "/scheduler/tasks", "/scheduler/tasks/tick", "/scheduler/tasks/tick/history"]
ACTIONS = ["trigger", "enable", "disable"]


# -- helpers and fixtures ------------------------------------------------------------------------


def make_user(username: str, **extra: Any) -> User:
    return User.objects.create_user(username, password=f"{username}-pw", **extra)


def client_for(user: User | None, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def staff() -> User:
    """Staff and granted scheduler_app.operate_task: an operator of the admin and the API."""
    return grant_operate(make_user("staffer", is_staff=True))


@pytest.fixture
def reader() -> User:
    """Authenticated, not staff, no special permission."""
    return make_user("reader")


@pytest.fixture
def operator() -> User:
    """Not staff, but granted the dedicated model permission."""
    user = make_user("operator")
    user.user_permissions.add(Permission.objects.get(codename="operate_task", content_type__app_label="scheduler_app"))
    return user


@pytest.fixture
def staff_client(staff: User) -> Client:
    return client_for(staff)


def post(client: Client, path: str, body: Any = None, **extra: Any):
    if body is None:
        return client.post(path, **extra)
    return client.post(path, json.dumps(body), content_type="application/json", **extra)


def put(client: Client, path: str, body: Any):
    return client.put(path, json.dumps(body), content_type="application/json")


def config(name: str) -> TaskConfig:
    return TaskConfig.objects.get(name=name)


def make_record(task: str = "tick", **fields: Any) -> TaskExecutionRecord:
    fields.setdefault("trigger", "scheduled")
    fields.setdefault("status", "success")
    return TaskExecutionRecord.objects.create(task_id=task, **fields)


def alive_scheduler(**fields: Any) -> SchedulerProcess:
    fields.setdefault("kind", SchedulerProcess.Kind.SCHEDULER)
    fields.setdefault("role", SchedulerProcess.Role.ACTIVE)
    process = SchedulerProcess.objects.create(host="test-host", pid=4242, **fields)
    if process.role == SchedulerProcess.Role.ACTIVE:  # the lease, not the role, says who leads
        assert try_acquire_lease(process.pk)
    return process


def slashed(path: str, slash: bool) -> str:
    return path + "/" if slash else path


# -- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", [False, True], ids=["no-slash", "slash"])
@pytest.mark.parametrize("path", READ_PATHS)
def test_read_endpoints_answer_with_and_without_trailing_slash(staff_client: Client, path: str, slash: bool) -> None:
    response = staff_client.get(slashed(path, slash))
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("slash", [False, True], ids=["no-slash", "slash"])
@pytest.mark.parametrize("action", ACTIONS)
def test_action_endpoints_answer_with_and_without_trailing_slash(
    staff_client: Client, action: str, slash: bool
) -> None:
    response = post(staff_client, slashed(f"/scheduler/tasks/tick/{action}", slash))
    assert response.status_code == (202 if action == "trigger" else 200), response.content


def test_status_has_the_seed_shape(staff_client: Client) -> None:
    state = TaskState.objects.get(task_id="nightly")
    state.next_run_at = timezone.now() + timedelta(hours=3)
    state.last_run_at = timezone.now() - timedelta(hours=21)
    state.last_result = "success"
    state.run_count, state.fail_count = 10, 1
    state.save()

    body = staff_client.get("/scheduler/status").json()

    assert {"running", "task_count", "tasks"} <= set(body)
    assert body["running"] is False
    assert body["task_count"] == len(task_registry) == len(body["tasks"])
    assert [t["name"] for t in body["tasks"]] == task_registry.names()
    for task in body["tasks"]:
        # The seed's fields come first, in the seed's order, with the seed's types.
        assert list(task)[: len(SEED_TASK_FIELDS)] == list(SEED_TASK_FIELDS)
        for field, kind in SEED_TASK_FIELDS.items():
            assert isinstance(task[field], kind), (task["name"], field, task[field])
    nightly = next(t for t in body["tasks"] if t["name"] == "nightly")
    assert nightly["schedule_type"] == "cron" and nightly["cron_expression"] == "0 2 * * *"
    assert nightly["interval_seconds"] is None
    assert nightly["status"] == "idle" and nightly["last_result"] == "success"
    assert (nightly["run_count"], nightly["fail_count"]) == (10, 1)
    # ISO 8601 with the time zone, so that a client never guesses.
    assert timezone.datetime.fromisoformat(nightly["next_run_at"].replace("Z", "+00:00")) == state.next_run_at
    tick = next(t for t in body["tasks"] if t["name"] == "tick")
    assert tick["schedule_type"] == "interval" and tick["interval_seconds"] == 1 and tick["cron_expression"] is None
    assert tick["schedule_description"] == "every 1 second"  # the admin's words (describe.describe_schedule)
    assert tick["last_result"] is None and tick["next_run_at"] is None
    # What an operator needs besides.
    assert tick["enabled_source"] == "code" and tick["schedule_source"] == "code"
    assert tick["timeout_seconds"] == 3600.0 and tick["timeout_source"] == "settings"
    assert next(t for t in body["tasks"] if t["name"] == "hang")["timeout_seconds"] == 1.0
    assert body["processes"] == [] and body["leader"] is None and body["pending_runs"] == 0


def test_running_follows_a_fresh_scheduler_heartbeat(staff_client: Client) -> None:
    def running() -> bool:
        return staff_client.get("/scheduler/status").json()["running"]

    assert running() is False
    process = alive_scheduler()
    body = staff_client.get("/scheduler/status").json()
    assert body["running"] is True and body["leader"] == "test-host:4242"
    (shown,) = body["processes"]
    assert shown["alive"] is True and shown["kind"] == "scheduler" and shown["role"] == "active"
    assert shown["heartbeat_age_seconds"] < 5

    # A row whose heartbeat stopped is not a running scheduler, though it was started once.
    SchedulerProcess.objects.filter(pk=process.pk).update(last_heartbeat=timezone.now() - timedelta(minutes=5))
    body = staff_client.get("/scheduler/status").json()
    assert body["running"] is False and body["processes"][0]["alive"] is False and body["leader"] is None
    # A `trigger_task` command is alive but is no scheduler.
    alive_scheduler(kind=SchedulerProcess.Kind.COMMAND, role="")
    assert running() is False


def test_one_task_and_the_list(staff_client: Client) -> None:
    listed = staff_client.get("/scheduler/tasks").json()
    assert [t["name"] for t in listed] == task_registry.names()
    one = staff_client.get("/scheduler/tasks/nightly").json()
    assert one == next(t for t in listed if t["name"] == "nightly")
    assert one["default_schedule"] == {
        "schedule_type": "cron",
        "cron_expression": "0 2 * * *",
        "interval_seconds": None,
        "timezone": None,
    }
    assert "02:00" in one["schedule_description"]


def test_browsable_api_schema_and_docs_pages(staff_client: Client) -> None:
    page = staff_client.get("/scheduler/tasks", HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and b"nightly" in page.content and b"<html" in page.content
    make_record("tick")
    for path in [*READ_PATHS, "/scheduler/history", "/scheduler/", "/scheduler/tasks/tick/trigger"]:
        html = staff_client.get(path, HTTP_ACCEPT="text/html")
        assert html.status_code in (200, 405) and b"<html" in html.content, path
    schema = staff_client.get("/scheduler/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["openapi"].startswith("3.")
    assert {
        "/scheduler/status",
        "/scheduler/tasks",
        "/scheduler/tasks/{name}",
        "/scheduler/tasks/{name}/trigger",
        "/scheduler/tasks/{name}/enable",
        "/scheduler/tasks/{name}/disable",
        "/scheduler/tasks/{name}/history",
        "/scheduler/tasks/{name}/schedule",
    } <= set(schema["paths"])
    docs = staff_client.get("/scheduler/docs")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    # Swagger UI's files come from this project (drf-spectacular-sidecar), not from a CDN.
    assert b"cdn." not in docs.content
    bundle = re.search(rb'src="([^"]*swagger-ui-bundle\.js)"', docs.content).group(1).decode()
    assert finders.find(bundle.removeprefix(settings.STATIC_URL).removeprefix("/" + settings.STATIC_URL))
    # Anonymous visitors of the browsable API get a way to log in.
    anonymous = Client().get("/scheduler/tasks", HTTP_ACCEPT="text/html")
    assert anonymous.status_code == 403 and b"/api-auth/login/" in anonymous.content
    root = staff_client.get("/scheduler/").json()
    assert root["status"].endswith("/scheduler/status")


# -- 404s and malformed input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/scheduler/tasks/no_such_task"),
        ("get", "/scheduler/tasks/no_such_task/"),
        ("get", "/scheduler/tasks/no_such_task/history"),
        ("post", "/scheduler/tasks/no_such_task/trigger"),
        ("post", "/scheduler/tasks/no_such_task/enable"),
        ("post", "/scheduler/tasks/no_such_task/disable"),
        ("put", "/scheduler/tasks/no_such_task/schedule"),
        ("delete", "/scheduler/tasks/no_such_task/schedule"),
        ("get", "/scheduler/tasks/Not%20A%20Name"),
    ],
)
def test_unknown_task_is_a_json_404(staff_client: Client, method: str, path: str) -> None:
    response = getattr(staff_client, method)(path, content_type="application/json")
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "task_not_found" and "unknown task" in body["detail"] and "tick" in body["detail"]
    assert not TaskExecutionRecord.objects.exists()


def test_unknown_record_and_unknown_path_are_json_404s(staff_client: Client) -> None:
    other = make_record("boom")
    for path in [
        "/scheduler/history/999999",
        f"/scheduler/tasks/tick/history/{other.pk}",  # a record of another task
        "/scheduler/history/99999999999999999999999",  # beyond any id: no overflow, a 404
        "/scheduler/history/abc",
        "/scheduler/nothing/here",
    ]:
        response = staff_client.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] in {"record_not_found", "no_endpoint"}, path
    for method in ("post", "put", "patch", "delete", "options", "head"):
        assert getattr(staff_client, method)("/scheduler/nothing/here").status_code == 404, method


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "expected"),
    [
        ("put", "/scheduler/tasks/tick/schedule", "{not json", "application/json", 400),
        ("put", "/scheduler/tasks/tick/schedule", "[1, 2]", "application/json", 400),
        ("put", "/scheduler/tasks/tick/schedule", "null", "application/json", 400),
        ("put", "/scheduler/tasks/tick/schedule", "schedule_type=cron", "text/plain", 415),
        ("post", "/scheduler/tasks/tick/disable", '{"reason": {"a": 1}}', "application/json", 400),
        ("post", "/scheduler/tasks/tick/disable", "{bad", "application/json", 400),
        ("post", "/scheduler/tasks/tick/disable", '"just a string"', "application/json", 400),
        ("post", "/scheduler/tasks/tick/disable", "[]", "application/json", 400),
        ("post", "/scheduler/tasks/tick/disable", "false", "application/json", 400),
        ("patch", "/scheduler/tasks/tick", "{}", "application/json", 405),
        ("delete", "/scheduler/tasks/tick", "", "application/json", 405),
        ("post", "/scheduler/status", "", "application/json", 405),
    ],
)
def test_malformed_input_is_a_json_4xx(
    staff_client: Client, method: str, path: str, body: str, content_type: str, expected: int
) -> None:
    before = config("tick")
    response = getattr(staff_client, method)(path, body, content_type=content_type)
    assert response.status_code == expected, response.content
    assert isinstance(response.json(), dict)
    assert config("tick").revision == before.revision


# -- permissions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*READ_PATHS, "/scheduler/history", "/scheduler/schema"])
def test_anonymous_users_cannot_read_by_default(path: str) -> None:
    response = Client().get(path)
    assert response.status_code in (401, 403)
    assert "credentials" in json.loads(response.content)["detail"]


@pytest.mark.parametrize("path", READ_PATHS)
def test_authenticated_non_staff_users_can_read(reader: User, path: str) -> None:
    assert client_for(reader).get(path).status_code == 200


def mutations() -> list[tuple[str, str, Any]]:
    return [
        ("post", "/scheduler/tasks/tick/trigger", None),
        ("post", "/scheduler/tasks/tick/enable", None),
        ("post", "/scheduler/tasks/tick/disable", None),
        ("put", "/scheduler/tasks/tick/schedule", {"schedule_type": "interval", "interval_seconds": 60}),
        ("delete", "/scheduler/tasks/tick/schedule", None),
    ]


def request(client: Client, method: str, path: str, body: Any):
    if method == "post":
        return post(client, path, body)
    if method == "put":
        return put(client, path, body)
    return client.delete(path)


@pytest.mark.parametrize(("method", "path", "body"), mutations())
@pytest.mark.parametrize("who", ["anonymous", "reader"])
def test_anonymous_and_non_staff_users_change_nothing(
    reader: User, who: str, method: str, path: str, body: Any
) -> None:
    client = client_for(reader if who == "reader" else None)
    before = config("tick")
    response = request(client, method, path, body)
    assert response.status_code in ((401, 403) if who == "anonymous" else (403,)), response.content
    assert "detail" in response.json()
    after = config("tick")
    assert (after.revision, after.enabled_override, after.schedule_type_override) == (
        before.revision,
        before.enabled_override,
        before.schedule_type_override,
    )
    assert not TaskExecutionRecord.objects.exists()


@pytest.mark.parametrize("who", ["staff", "operator"])
def test_staff_and_operators_change_tasks_and_are_recorded(staff: User, operator: User, who: str) -> None:
    user = staff if who == "staff" else operator
    client = client_for(user)

    response = post(client, "/scheduler/tasks/tick/disable", {"reason": "maintenance"})
    assert response.status_code == 200
    body = response.json()
    assert body["enabled"] is False and body["enabled_source"] == "override"
    assert body["disabled_reason"] == "maintenance" and body["updated_by"] == user.username
    assert config("tick").updated_by == user

    body = post(client, "/scheduler/tasks/tick/enable").json()
    assert body["enabled"] is True and body["disabled_reason"] == ""

    record = post(client, "/scheduler/tasks/tick/trigger").json()
    assert record["triggered_by"] == user.username and record["origin"] == "api"
    assert TaskExecutionRecord.objects.get(pk=record["id"]).triggered_by == user
    messages = list(LogEntry.objects.filter(user=user).values_list("change_message", flat=True))
    assert "Disabled: maintenance" in messages and "Enabled." in messages
    assert any(m.startswith("Run requested") for m in messages)


def test_permissions_are_configurable_in_settings(reader: User) -> None:
    open_reads = {"API_READ_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"]}
    with override_settings(SCHEDULER={**services_settings(), **open_reads}):
        assert Client().get("/scheduler/status").status_code == 200
        # No setting lets anonymous users change anything.
        assert post(Client(), "/scheduler/tasks/tick/trigger").status_code in (401, 403)
        assert post(client_for(reader), "/scheduler/tasks/tick/trigger").status_code == 403
    any_user_writes = {"API_WRITE_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"]}
    with override_settings(SCHEDULER={**services_settings(), **any_user_writes}):
        assert post(client_for(reader), "/scheduler/tasks/tick/trigger").status_code == 202
        assert post(Client(), "/scheduler/tasks/tick/trigger").status_code in (401, 403)
    staff_reads = {"API_READ_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"]}
    with override_settings(SCHEDULER={**services_settings(), **staff_reads}):
        assert client_for(reader).get("/scheduler/tasks").status_code == 403


def services_settings() -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.SCHEDULER)


def test_session_auth_needs_the_csrf_token(staff: User) -> None:
    client = client_for(staff, enforce_csrf_checks=True)
    refused = client.post("/scheduler/tasks/tick/trigger")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert not TaskExecutionRecord.objects.exists()
    # The browsable API's forms carry the token, as a browser has it.
    assert client.get("/scheduler/tasks/tick", HTTP_ACCEPT="text/html").status_code == 200
    token = client.cookies["csrftoken"]
    accepted = client.post("/scheduler/tasks/tick/trigger", HTTP_X_CSRFTOKEN=token.value)
    assert accepted.status_code == 202


def test_token_and_basic_auth_for_scripts(staff: User, reader: User) -> None:
    token = Token.objects.create(user=staff)
    scripted = Client(enforce_csrf_checks=True)
    assert scripted.get("/scheduler/status", HTTP_AUTHORIZATION=f"Token {token.key}").status_code == 200
    response = scripted.post("/scheduler/tasks/tick/trigger", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 202 and response.json()["triggered_by"] == staff.username

    basic = "Basic " + base64.b64encode(b"staffer:staffer-pw").decode()
    assert scripted.post("/scheduler/tasks/tick/enable", HTTP_AUTHORIZATION=basic).status_code == 200
    wrong = "Basic " + base64.b64encode(b"staffer:wrong").decode()
    refused = scripted.post("/scheduler/tasks/tick/enable", HTTP_AUTHORIZATION=wrong)
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Basic")
    refused = scripted.get("/scheduler/status", HTTP_AUTHORIZATION="Token nope")
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Token"
    reader_basic = "Basic " + base64.b64encode(b"reader:reader-pw").decode()
    assert scripted.post("/scheduler/tasks/tick/enable", HTTP_AUTHORIZATION=reader_basic).status_code == 403


# -- trigger -------------------------------------------------------------------------------------


def test_trigger_queues_a_pending_run_and_never_runs_it_in_the_web_request(staff_client: Client) -> None:
    response = post(staff_client, "/scheduler/tasks/tick/trigger")
    assert response.status_code == 202
    record = response.json()
    assert list(record)[: len(RECORD_FIELDS)] == RECORD_FIELDS
    assert record["status"] == "pending" and record["trigger"] == "manual" and record["task"] == "tick"
    assert record["scheduled_at"] is None and record["started_at"] is None
    assert response["Location"] == record["url"] == f"/scheduler/history/{record['id']}"
    # Nobody ran it: still pending, and the task's state is untouched.
    assert TaskExecutionRecord.objects.get(pk=record["id"]).status == "pending"
    assert TaskState.objects.get(task_id="tick").run_count == 0
    # No scheduler is alive: queued all the same, and the answer says so.
    assert record["scheduler_running"] is False and "no scheduler" in record["detail"]
    followed = staff_client.get(response["Location"]).json()
    assert followed["id"] == record["id"] and followed["status"] == "pending"
    assert staff_client.get("/scheduler/status").json()["pending_runs"] == 1


def test_runs_queued_on_a_backend_are_counted_in_the_status_and_the_task(staff_client: Client) -> None:
    from tests.runs import queued_run

    services.sync_task_rows()
    queued_run("tick")
    queued_run("slow")
    services.request_run("hang")  # pending, not queued
    status = staff_client.get("/scheduler/status").json()
    assert (status["queued_runs"], status["pending_runs"]) == (2, 1)
    counts = {task["name"]: task["queued_runs"] for task in status["tasks"]}
    assert counts["tick"] == counts["slow"] == 1 and counts["hang"] == 0
    # The slot is held while queued: running_count says so too.
    tick = staff_client.get("/scheduler/tasks/tick").json()
    assert (tick["queued_runs"], tick["running_count"]) == (1, 1)
    listed = {task["name"]: task["queued_runs"] for task in staff_client.get("/scheduler/tasks").json()}
    assert listed == counts


def test_trigger_says_when_a_scheduler_will_pick_it_up(staff_client: Client) -> None:
    alive_scheduler()
    record = post(staff_client, "/scheduler/tasks/tick/trigger").json()
    assert record["scheduler_running"] is True and "within a few seconds" in record["detail"]


def test_trigger_of_a_running_task_without_concurrency_is_a_409(staff_client: Client) -> None:
    TaskState.objects.filter(task_id__in=["tick", "crawl_site"]).update(running_count=1)
    assert config("tick").allow_concurrent is False
    response = post(staff_client, "/scheduler/tasks/tick/trigger")
    assert response.status_code == 409
    assert response.json()["code"] == "task_busy" and "does not allow concurrent runs" in response.json()["detail"]
    assert not TaskExecutionRecord.objects.exists()
    # A disabled task can still be run by hand.
    services.disable_task("nightly")
    assert post(staff_client, "/scheduler/tasks/nightly/trigger").status_code == 202


def test_trigger_of_a_running_task_that_allows_concurrency_is_queued(staff_client: Client) -> None:
    class Parallel(BaseTask):
        name = "parallel_api_test"
        schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=60, allow_concurrent=True)

        def run(self) -> TaskResult:
            return TaskResult.success()

    task_registry.register(Parallel)
    try:
        services.sync_task_rows()
        TaskState.objects.filter(task_id="parallel_api_test").update(running_count=1)
        assert post(staff_client, "/scheduler/tasks/parallel_api_test/trigger").status_code == 202
    finally:
        task_registry.unregister("parallel_api_test")


# -- history -------------------------------------------------------------------------------------


def test_history_is_newest_first_paginated_and_bounded(staff_client: Client) -> None:
    ids = [make_record("tick", data={"n": n}).pk for n in range(7)]
    make_record("boom")

    page = staff_client.get("/scheduler/tasks/tick/history?page_size=3").json()
    assert page["count"] == 7
    assert [r["id"] for r in page["results"]] == ids[::-1][:3]
    assert page["previous"] is None and "page=2" in page["next"]
    second = staff_client.get(page["next"]).json()
    assert [r["id"] for r in second["results"]] == ids[::-1][3:6]
    last = staff_client.get("/scheduler/tasks/tick/history/?page_size=3&page=3").json()
    assert [r["id"] for r in last["results"]] == ids[:1] and last["next"] is None
    assert list(page["results"][0])[: len(RECORD_FIELDS)] == RECORD_FIELDS
    assert page["results"][0]["data"] == {"n": 6}

    # The default page is bounded, and so is what a client may ask for.
    with override_settings(SCHEDULER={**services_settings(), "API_PAGE_SIZE": 2, "API_MAX_PAGE_SIZE": 5}):
        assert len(staff_client.get("/scheduler/tasks/tick/history").json()["results"]) == 2
        too_big = staff_client.get("/scheduler/tasks/tick/history?page_size=6")
        assert too_big.status_code == 400 and "page_size" in too_big.json()
    for bad in ["page_size=0", "page_size=-1", "page_size=abc", "page=0", "page=x", "page="]:
        response = staff_client.get(f"/scheduler/tasks/tick/history?{bad}")
        assert response.status_code == 400, bad
    assert staff_client.get("/scheduler/tasks/tick/history?page=99").status_code == 404

    everything = staff_client.get("/scheduler/history").json()
    assert everything["count"] == 8 and everything["results"][0]["task"] == "boom"
    assert staff_client.get("/scheduler/history?task=boom").json()["count"] == 1
    for bad in ["Boom", "no\x00pe", "x" * 101]:
        response = staff_client.get("/scheduler/history", {"task": bad})
        assert response.status_code == 400 and "task" in response.json(), bad


def test_history_filters(staff_client: Client) -> None:
    now = timezone.now()
    old = make_record("tick", status="failed", created_at=now - timedelta(days=3))
    mid = make_record("tick", status="success", created_at=now - timedelta(days=1))
    new = make_record("tick", status="pending", trigger="manual", created_at=now)
    skipped = make_record("tick", status="skipped", created_at=now)

    def ids(query: str) -> list[int]:
        response = staff_client.get("/scheduler/tasks/tick/history", query)
        assert response.status_code == 200, response.content
        return [r["id"] for r in response.json()["results"]]

    assert ids({"status": "failed"}) == [old.pk]
    assert ids({"status": "failed,success"}) == [mid.pk, old.pk]
    assert ids({"trigger": "manual"}) == [new.pk]
    assert ids({"trigger": "scheduled", "status": "skipped"}) == [skipped.pk]
    since = (now - timedelta(days=2)).isoformat()
    until = (now - timedelta(hours=1)).isoformat()
    assert ids({"since": since}) == [skipped.pk, new.pk, mid.pk]
    assert ids({"since": since, "until": until}) == [mid.pk]
    assert ids({"until": (now - timedelta(days=5)).isoformat()}) == []

    for query, field in [
        ({"status": "exploded"}, "status"),
        ({"status": ","}, "status"),
        ({"trigger": "cron"}, "trigger"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-45T00:00:00"}, "until"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "since"),
        ({"status": ""}, "status"),
    ]:
        response = staff_client.get("/scheduler/tasks/tick/history", query)
        assert response.status_code == 400, query
        assert field in response.json(), (query, response.json())


def test_a_record_is_fetched_by_id(staff_client: Client, staff: User) -> None:
    record = make_record("tick", data={"synced_count": 100}, message="done", triggered_by=staff)
    for path in [f"/scheduler/history/{record.pk}", f"/scheduler/tasks/tick/history/{record.pk}/"]:
        body = staff_client.get(path).json()
        assert body["id"] == record.pk and body["data"] == {"synced_count": 100} and body["message"] == "done"
        assert body["triggered_by"] == "staffer"


# -- reschedule ----------------------------------------------------------------------------------


def test_reschedule_and_reset_to_the_code_default(staff_client: Client) -> None:
    revision = config("nightly").revision
    response = put(
        staff_client,
        "/scheduler/tasks/nightly/schedule",
        {"schedule_type": "cron", "cron_expression": "*/5 * * * *", "timezone": "Europe/Berlin"},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["cron_expression"] == "*/5 * * * *" and body["schedule_source"] == "override"
    assert body["timezone"] == "Europe/Berlin" and body["default_schedule"]["cron_expression"] == "0 2 * * *"
    # The revision is what running schedulers watch to pick the change up.
    assert config("nightly").revision > revision

    body = put(
        staff_client, "/scheduler/tasks/nightly/schedule/", {"schedule_type": "interval", "interval_seconds": 90}
    ).json()
    assert (body["schedule_type"], body["interval_seconds"], body["cron_expression"]) == ("interval", 90, None)

    body = staff_client.delete("/scheduler/tasks/nightly/schedule").json()
    assert (body["schedule_type"], body["cron_expression"], body["schedule_source"]) == ("cron", "0 2 * * *", "code")
    assert body["timezone"] == "UTC"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"schedule_type": "cron", "cron_expression": "not a cron"}, "cron_expression"),
        ({"schedule_type": "cron", "cron_expression": "61 * * * *"}, "cron_expression"),
        ({"schedule_type": "cron", "cron_expression": "0 2 * *"}, "cron_expression"),
        ({"schedule_type": "cron"}, "cron_expression"),
        ({"schedule_type": "cron", "cron_expression": "x" * 201}, "cron_expression"),
        ({"schedule_type": "interval"}, "interval_seconds"),
        ({"schedule_type": "interval", "interval_seconds": 0}, "interval_seconds"),
        ({"schedule_type": "interval", "interval_seconds": -5}, "interval_seconds"),
        ({"schedule_type": "interval", "interval_seconds": "soon"}, "interval_seconds"),
        ({"schedule_type": "interval", "interval_seconds": 1.5}, "interval_seconds"),
        ({"schedule_type": "interval", "interval_seconds": 10**12}, "interval_seconds"),
        ({"schedule_type": "weekly", "interval_seconds": 5}, "schedule_type"),
        ({"interval_seconds": 5}, "schedule_type"),
        ({"schedule_type": "cron", "cron_expression": "0 2 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"schedule_type": "cron", "cron_expression": "0 2 * * *\u0000"}, "cron_expression"),
    ],
)
def test_reschedule_validation_names_the_bad_field(staff_client: Client, body: dict[str, Any], field: str) -> None:
    before = config("nightly")
    response = put(staff_client, "/scheduler/tasks/nightly/schedule", body)
    assert response.status_code == 400, response.content
    errors = response.json()
    assert errors.get(field), errors
    assert config("nightly").revision == before.revision


# -- query counts --------------------------------------------------------------------------------


def swap_in_tasks(count: int) -> dict[str, BaseTask]:
    """Replace the registry with ``count`` generated tasks (with state and an editor); return the old."""
    saved = dict(task_registry._tasks)
    task_registry._tasks.clear()
    for n in range(count):
        schedule = (
            TaskSchedule(schedule_type=ScheduleType.CRON, cron_expression=f"{n % 60} * * * *")
            if n % 2
            else TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=n + 1)
        )
        task_registry.register(
            type(f"Generated{n}", (BaseTask,), {"name": f"gen_{n:03d}", "schedule": schedule, "run": lambda self: None})
        )
    services.sync_task_rows()
    return saved


def queries(client: Client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200
    return len(captured)


def test_status_and_list_run_a_constant_number_of_queries(staff: User) -> None:
    client = client_for(staff)
    alive_scheduler()
    counts: dict[int, tuple[int, int]] = {}
    for size in (5, 200):
        saved = swap_in_tasks(size)
        try:
            names = task_registry.names()
            TaskConfig.objects.filter(name__in=names).update(updated_by=staff, enabled_override=False)
            TaskState.objects.filter(task_id__in=names).update(run_count=3, last_result="success")
            status = client.get("/scheduler/status").json()
            assert status["task_count"] == size and status["tasks"][0]["updated_by"] == "staffer"
            assert len(client.get("/scheduler/tasks").json()) == size
            counts[size] = (queries(client, "/scheduler/status"), queries(client, "/scheduler/tasks"))
        finally:
            task_registry._tasks.clear()
            task_registry._tasks.update(saved)
    assert counts[5] == counts[200], counts
    # Session + user, then tasks, processes and the pending and queued counts for the status; tasks for the list.
    assert counts[200][0] <= 6 and counts[200][1] <= 4, counts


def test_a_misconfigured_permission_class_fails_the_system_check() -> None:
    from scheduler_app.checks import check_api_permissions

    assert check_api_permissions() == []
    bad = {
        "API_WRITE_PERMISSION_CLASSES": ["scheduler_app.api.permissions.NoSuchClass", "scheduler_app.models.TaskConfig"]
    }
    with override_settings(SCHEDULER={**services_settings(), **bad}):
        errors = check_api_permissions()
    assert [e.id for e in errors] == ["scheduler.E021", "scheduler.E021"]
    assert "NoSuchClass" in errors[0].msg and "not a DRF permission class" in errors[1].msg


# -- schedule policies ---------------------------------------------------------------------------


def patch(client: Client, path: str, body: Any):
    return client.patch(path, json.dumps(body), content_type="application/json")


def test_schedule_policies_are_set_per_key_and_cleared(staff_client: Client) -> None:
    revision = config("tick").revision
    body = {"jitter_seconds": 5, "max_retries": 3, "overlap": "buffer_one", "start_date": "2030-01-01T00:00:00Z"}
    response = patch(staff_client, "/scheduler/tasks/tick/options", body)
    assert response.status_code == 200, response.content
    task = response.json()
    assert task["options"]["jitter_seconds"] == 5 and task["options"]["max_retries"] == 3
    assert task["options"]["overlap"] == "buffer_one" and task["options"]["catch_up"] == "once"
    assert task["options"]["start_date"].startswith("2030-01-01T00:00:00")
    assert set(task["options_override"]) == {"jitter_seconds", "max_retries", "overlap", "start_date"}
    assert config("tick").revision > revision

    # null puts one key back to the code's value; keys left out stay.
    task = patch(staff_client, "/scheduler/tasks/tick/options/", {"jitter_seconds": None}).json()
    assert task["options"]["jitter_seconds"] == 0 and task["options"]["max_retries"] == 3

    task = staff_client.delete("/scheduler/tasks/tick/options").json()
    assert task["options_override"] == {} and task["options"]["max_retries"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"jitter_seconds": -1}, "jitter_seconds"),
        ({"jitter_seconds": 10**6}, "jitter_seconds"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"catch_up": "all"}, "catch_up"),
        ({"max_retries": 1000}, "max_retries"),
        ({"retry_delay_seconds": 0}, "retry_delay_seconds"),
        ({"retry_delay_seconds": 100, "retry_max_delay_seconds": 10}, "retry_max_delay_seconds"),
        ({"start_date": "next tuesday"}, "start_date"),
        ({"start_date": "2030-01-02T00:00:00Z", "end_date": "2030-01-01T00:00:00Z"}, "end_date"),
        ({"catch_up_window_seconds": 10**20}, "catch_up_window_seconds"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_schedule_policy_validation_names_the_bad_field(staff_client: Client, body: dict[str, Any], field: str) -> None:
    revision = config("tick").revision
    response = patch(staff_client, "/scheduler/tasks/tick/options", body)
    assert response.status_code == 400, response.content
    assert response.json().get(field), response.json()
    assert config("tick").revision == revision


def test_policies_need_staff(reader: User) -> None:
    assert patch(client_for(reader), "/scheduler/tasks/tick/options", {"max_retries": 1}).status_code == 403
    assert patch(Client(), "/scheduler/tasks/tick/options", {"max_retries": 1}).status_code in (401, 403)
    assert client_for(reader).delete("/scheduler/tasks/tick/options").status_code == 403
    assert config("tick").options_override == {}


def test_records_show_retries_and_jitter(staff_client: Client) -> None:
    first = make_record("boom", status="failed")
    retry = make_record("boom", trigger="retry", status="success", attempt=2, retry_of=first, jitter_seconds=1.5)
    body = staff_client.get(f"/scheduler/history/{retry.pk}").json()
    assert (body["trigger"], body["attempt"], body["retry_of"], body["jitter_seconds"]) == ("retry", 2, first.pk, 1.5)
    assert staff_client.get("/scheduler/history", {"trigger": "retry"}).json()["count"] == 1


def test_timeout_override_and_reset(staff_client: Client, reader: User) -> None:
    task = put(staff_client, "/scheduler/tasks/tick/timeout", {"timeout_seconds": 2.5}).json()
    assert (task["timeout_seconds"], task["timeout_source"]) == (2.5, "override")
    for bad in [{"timeout_seconds": 0}, {"timeout_seconds": "long"}, {}, {"timeout_seconds": 1e12}]:
        response = put(staff_client, "/scheduler/tasks/tick/timeout", bad)
        assert response.status_code == 400 and "timeout_seconds" in response.json(), bad
    assert put(client_for(reader), "/scheduler/tasks/tick/timeout", {"timeout_seconds": 9}).status_code == 403
    task = staff_client.delete("/scheduler/tasks/tick/timeout/").json()
    assert (task["timeout_seconds"], task["timeout_source"]) == (3600.0, "settings")


@pytest.mark.django_db
def test_fast_task_rendering_matches_the_declared_fields() -> None:
    """TaskSerializer builds its dict by hand for speed; DRF's generic rendering is the reference."""
    from datetime import UTC, datetime

    from django.contrib.auth.models import User

    from scheduler_app import services
    from scheduler_app.api.serializers import TaskSerializer
    from scheduler_app.models import TaskState

    editor = User.objects.create_user("editor", is_staff=True)
    services.set_schedule(
        "tick", schedule_type="cron", cron_expression="30 2 * * 1-5", timezone_name="Europe/Berlin", user=editor
    )
    services.set_options(
        "tick",
        {"jitter_seconds": 5, "overlap": "buffer_one", "start_date": "2027-01-01T00:00:00+01:00", "max_retries": 2},
    )
    services.set_timeout("tick", 12.5)
    services.disable_task("boom", reason="flaky upstream")
    moment = datetime(2027, 3, 1, 1, 30, 15, 123456, tzinfo=UTC)
    TaskState.objects.filter(task_id="tick").update(
        next_run_at=moment,
        last_run_at=moment,
        last_finished_at=moment,
        last_result="failed",
        run_count=7,
        fail_count=2,
        consecutive_failures=1,
        running_count=1,
    )
    serializer = TaskSerializer()
    configs = list(services.registered_tasks().select_related("updated_by"))
    assert len(configs) >= 5
    for config in configs:
        assert serializer.to_representation(config) == serializer.generic_representation(config), config.name
