"""No input is a 500, and every error under /scheduler/ is JSON; throttles; what status tells whom.

The NUL-byte cases are 500s only where the database refuses the byte (PostgreSQL): they run here on
SQLite and again, marked ``postgres``, on a real PostgreSQL server (``tests.pgserver``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import override_settings
from rest_framework.settings import api_settings

from scheduler_app.coordination import try_acquire_lease
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord
from tests.users import operator

pytestmark = pytest.mark.django_db


def client_for(user: User | None, **kwargs: Any) -> Client:
    client = Client(raise_request_exception=False, **kwargs)
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def ops() -> Client:
    return client_for(operator("ops", password="ops-pw"))


@pytest.fixture
def root() -> Client:
    return client_for(User.objects.create_superuser("root", password="root-pw"))


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def assert_json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].split(";")[0].endswith(("/json", "+json")), response["Content-Type"]
    body = response.json()
    assert isinstance(body, dict) and body, body
    return body


# -- bad bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/scheduler/tasks/tick/schedule", "/scheduler/tasks/tick/timeout"])
def test_json_nested_100k_deep_is_a_400(ops: Client, path: str) -> None:
    revision = TaskConfig.objects.get(name="tick").revision
    for deep in ("[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
        body = assert_json_error(ops.put(path, deep, content_type="application/json"), 400)
        assert body["code"] == "parse_error" and "deep" in body["detail"]
    assert TaskConfig.objects.get(name="tick").revision == revision


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("x" * 3_000_000, "application/json"), ("reason=" + "x" * 3_000_000, "application/x-www-form-urlencoded")],
)
def test_a_body_over_the_upload_limit_is_a_json_413(ops: Client, body: str, content_type: str) -> None:
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1_000_000):
        response = ops.post("/scheduler/tasks/tick/disable", body, content_type=content_type)
    assert assert_json_error(response, 413)["code"] == "payload_too_large"
    assert TaskConfig.objects.get(name="tick").enabled


def test_too_many_form_fields_is_a_json_400(ops: Client) -> None:
    with override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=10):
        body = "&".join(f"f{i}=1" for i in range(50))
        response = ops.post("/scheduler/tasks/tick/disable", body, content_type="application/x-www-form-urlencoded")
    assert_json_error(response, 400)


# -- errors of every kind are JSON under /scheduler/ --------------------------------------------------


def test_options_of_the_docs_page_is_json_not_a_500(ops: Client) -> None:
    for path in ("/scheduler/docs", "/scheduler/docs/"):
        response = ops.options(path)
        assert response.status_code == 200 and response.json()["name"] == "Docs"
    assert ops.get("/scheduler/docs")["Content-Type"].startswith("text/html")  # the page itself


@pytest.mark.parametrize("path", ["/scheduler/docs", "/scheduler/schema", "/scheduler/status", "/scheduler/tasks"])
def test_anonymous_refusals_of_api_pages_are_json(path: str) -> None:
    body = assert_json_error(client_for(None).get(path), 403)
    assert body["code"] == "not_authenticated"


def test_metrics_refusals_are_json() -> None:
    User.objects.create_user("plain", password="plain-pw")
    assert assert_json_error(client_for(None).get("/scheduler/metrics"), 401)["code"] == "not_authenticated"
    refused = client_for(None).get("/scheduler/metrics", HTTP_AUTHORIZATION=basic("plain", "plain-pw"))
    assert assert_json_error(refused, 403)["code"] == "forbidden"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/scheduler/metrics"),
        ("delete", "/scheduler/metrics"),
        ("post", "/scheduler/health/live"),
        ("put", "/scheduler/health/ready"),
        ("post", "/scheduler/status"),
        ("delete", "/scheduler/tasks/tick"),
        ("post", "/scheduler/docs"),
        ("post", "/scheduler/schema"),
    ],
)
def test_405s_are_json_and_say_what_is_allowed(root: Client, method: str, path: str) -> None:
    response = getattr(root, method)(path)
    body = assert_json_error(response, 405)
    assert body["code"] in ("method_not_allowed",) and "GET" in response["Allow"]


@pytest.mark.parametrize("path", ["/scheduler/metrics", "/scheduler/health/ready", "/scheduler/tasks/tick/trigger"])
def test_csrf_failures_on_api_paths_are_json(path: str) -> None:
    client = client_for(operator("ops", password="ops-pw"), enforce_csrf_checks=True)
    body = assert_json_error(client.post(path), 403)
    assert "CSRF" in body["detail"] and body["code"] == "permission_denied"
    assert not TaskExecutionRecord.objects.exists()


def test_a_server_error_under_the_api_is_json(ops: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler_app.api import views

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "all_tasks", broken)
    assert assert_json_error(ops.get("/scheduler/tasks"), 500)["code"] == "server_error"


def test_admin_and_browsable_api_errors_stay_html(root: Client) -> None:
    assert root.get("/admin/nothing/here/")["Content-Type"].startswith("text/html")
    page = client_for(None).get("/scheduler/tasks", HTTP_ACCEPT="text/html")
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html")


# -- query parameters: a fuzz of what a client can send ----------------------------------------------

QUERY_VALUES = ["", "abc", "-1", "0", "1e3", "99999999999999999999999", "%00", "\x00", "é", "'", "1,2", " 1", "[]"]
QUERY_NAMES = ["page", "page_size", "ordering", "status", "trigger", "since", "until", "task", "format", "q"]


@pytest.mark.parametrize("path", ["/scheduler/history", "/scheduler/tasks/tick/history", "/scheduler/tasks"])
def test_no_query_parameter_is_a_500(ops: Client, path: str) -> None:
    TaskExecutionRecord.objects.create(task_id="tick", trigger="scheduled", status="success")
    for name in QUERY_NAMES:
        for value in QUERY_VALUES:
            response = ops.get(path, {name: value})
            assert response.status_code < 500, (name, value, response.content[:200])
            assert isinstance(response.json(), dict | list), (name, value)


# -- NUL bytes: SQLite here, PostgreSQL below ---------------------------------------------------------


def nul_cases(root: Client) -> None:
    """Each answer is a 4xx or the admin's normal "not found", never a 500."""
    page = root.get("/admin/scheduler_app/taskconfig/a%00b/change/")
    assert page.status_code == 404
    for url in (
        "/admin/scheduler_app/taskconfig/a%00b/history/",
        "/admin/scheduler_app/taskconfig/a%00b/run/",
        "/admin/scheduler_app/taskconfig/a%00b/preview/",
        "/admin/r/1/a%00b/",
    ):
        assert 400 <= root.get(url).status_code < 500, url
    for query in (
        "task__name__exact=%00",
        "q=%00",
        "status__exact=%00",
        "%00=1",
        "o=%00",
        "created_at__gte=%00",
    ):
        response = root.get(f"/admin/scheduler_app/taskexecutionrecord/?{query}")
        assert response.status_code == 400, (query, response.status_code)
    assert root.get("/admin/scheduler_app/taskconfig/?q=%00").status_code == 400
    for header in (basic("ad\x00min", "x"), basic("admin", "pw\x00")):
        response = client_for(None).get("/scheduler/metrics", HTTP_AUTHORIZATION=header)
        assert assert_json_error(response, 401)["code"] == "not_authenticated"
    assert_json_error(root.get("/scheduler/tasks/a%00b"), 404)
    assert_json_error(root.get("/scheduler/history", {"task": "a\x00b"}), 400)
    assert root.get("/admin/scheduler_app/taskexecutionrecord/").status_code == 200  # still works
    for selected in (["a\x00b"], ["tick", "a\x00b"]):
        response = root.post(
            "/admin/scheduler_app/taskconfig/", {"action": "run_selected", "_selected_action": selected}
        )
        assert response.status_code == 302, selected
    assert list(TaskExecutionRecord.objects.values_list("task_id", flat=True)) == ["tick"]
    # A quoted cookie's octal escape decodes to NUL: such a session cookie is no session at all.
    for path in ("/admin/", "/scheduler/tasks"):
        response = Client(raise_request_exception=False).get(path, HTTP_COOKIE='sessionid="abcdefgh\\000x"')
        assert response.status_code in (302, 403), (path, response.status_code)


def test_nul_bytes_in_urls_and_credentials(root: Client) -> None:
    nul_cases(root)


@pytest.mark.postgres
def test_nul_bytes_in_urls_and_credentials_on_postgresql(root: Client) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("runs on PostgreSQL: python -m tests.pgserver run -- pytest -m postgres")
    nul_cases(root)


# -- throttles -----------------------------------------------------------------------------------------


def test_failed_basic_logins_are_throttled_then_refused_before_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    operator("ops", password="ops-pw")
    hashes = count_hashes(monkeypatch)
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "failed_auth": "3/minute"}
    with override_settings(REST_FRAMEWORK={**_rest_framework(), "DEFAULT_THROTTLE_RATES": rates}):
        client = client_for(None)
        for _ in range(3):
            refused = client.get("/scheduler/status", HTTP_AUTHORIZATION=basic("ops", "wrong"))
            assert refused.status_code == 401
        tried = len(hashes)
        for path in ("/scheduler/status", "/scheduler/metrics", "/scheduler/tasks/tick/trigger"):
            method = client.post if path.endswith("trigger") else client.get
            response = method(path, HTTP_AUTHORIZATION=basic("ops", "ops-pw"))
            body = assert_json_error(response, 429)
            assert body["code"] == "throttled" and int(response["Retry-After"]) > 0
        assert len(hashes) == tried, "a throttled try must not cost a password hash"
        # Another address is not held back; tokens (no hashing) are not throttled.
        other = client_for(None, REMOTE_ADDR="10.0.0.2")
        assert other.get("/scheduler/status", HTTP_AUTHORIZATION=basic("ops", "ops-pw")).status_code == 200
    assert not TaskExecutionRecord.objects.exists()


def test_failed_logins_of_the_admin_count_and_are_refused_before_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    operator("ops", password="ops-pw")
    hashes = count_hashes(monkeypatch)
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "failed_auth": "3/minute"}
    with override_settings(REST_FRAMEWORK={**_rest_framework(), "DEFAULT_THROTTLE_RATES": rates}):
        browser = client_for(None)
        for _ in range(2):
            page = browser.post("/admin/login/", {"username": "ops", "password": "guess"})
            assert page.status_code == 200 and "correct username and password" in page.content.decode()
        # Failures of the admin and of the API's Basic auth add up, per address.
        assert browser.get("/scheduler/status", HTTP_AUTHORIZATION=basic("ops", "guess")).status_code == 401
        tried = len(hashes)
        refused = browser.post("/admin/login/", {"username": "ops", "password": "ops-pw"})
        assert refused.status_code == 200 and "_auth_user_id" not in browser.session
        assert browser.get("/scheduler/status", HTTP_AUTHORIZATION=basic("ops", "ops-pw")).status_code == 429
        assert len(hashes) == tried
        # Another address logs in.
        other = client_for(None, REMOTE_ADDR="10.0.0.3")
        assert other.post("/admin/login/", {"username": "ops", "password": "ops-pw"}).status_code == 302


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords checked against a stored hash from now on (the costly step that is braked)."""
    from django.contrib.auth.hashers import MD5PasswordHasher

    checked: list[str] = []
    real_verify = MD5PasswordHasher.verify

    def counting(self: Any, password: str, encoded: str) -> bool:
        checked.append(password)
        return real_verify(self, password, encoded)

    monkeypatch.setattr(MD5PasswordHasher, "verify", counting)
    return checked


def test_forwarded_for_is_only_trusted_with_num_proxies() -> None:
    operator("ops", password="ops-pw")
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "failed_auth": "2/minute"}
    with override_settings(REST_FRAMEWORK={**_rest_framework(), "DEFAULT_THROTTLE_RATES": rates}):
        client = client_for(None)
        for n in range(3):  # a guesser that changes X-Forwarded-For is still one address
            client.get("/scheduler/status", HTTP_AUTHORIZATION=basic("ops", "x"), HTTP_X_FORWARDED_FOR=f"1.1.1.{n}")
        held = client.get(
            "/scheduler/status", HTTP_AUTHORIZATION=basic("ops", "ops-pw"), HTTP_X_FORWARDED_FOR="9.9.9.9"
        )
        assert held.status_code == 429


def test_anon_and_user_rates_are_configurable() -> None:
    user = User.objects.create_user("reader", password="reader-pw")
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "anon": "2/minute", "user": "3/minute"}
    # DRF checks rates after permissions: "anon" matters where anonymous reading is allowed.
    open_reads = {**settings.SCHEDULER, "API_READ_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"]}
    with override_settings(REST_FRAMEWORK={**_rest_framework(), "DEFAULT_THROTTLE_RATES": rates}, SCHEDULER=open_reads):
        anonymous = client_for(None)
        assert [anonymous.get("/scheduler/tasks").status_code for _ in range(3)] == [200, 200, 429]
        reader = client_for(user)
        statuses = [reader.get("/scheduler/tasks").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert assert_json_error(reader.get("/scheduler/tasks"), 429)["code"] == "throttled"
    # Off by default: many requests pass.
    assert all(client_for(user).get("/scheduler/tasks").status_code == 200 for _ in range(20))


def _rest_framework() -> dict[str, Any]:
    return dict(settings.REST_FRAMEWORK)


# -- /scheduler/status: process details for staff only ---------------------------------------------


def test_status_shows_hosts_and_pids_to_staff_only() -> None:
    leader = SchedulerProcess.objects.create(
        host="secret-host", pid=4242, kind=SchedulerProcess.Kind.SCHEDULER, role=SchedulerProcess.Role.ACTIVE
    )
    assert try_acquire_lease(leader.pk)  # the lease says who leads
    reader = client_for(User.objects.create_user("reader"))
    body = reader.get("/scheduler/status").json()
    assert body["running"] is True and body["process_count"] == 1 and body["task_count"] == len(body["tasks"])
    assert "processes" not in body and "leader" not in body
    assert "secret-host" not in json.dumps(body) and "4242" not in json.dumps(body)
    # The operate permission is not staff status: process details stay hidden.
    scripted = client_for(operator("scripted", is_staff=False)).get("/scheduler/status").json()
    assert "processes" not in scripted
    staff = client_for(User.objects.create_user("staffer", is_staff=True)).get("/scheduler/status").json()
    assert staff["processes"][0]["host"] == "secret-host" and staff["leader"] == "secret-host:4242"
