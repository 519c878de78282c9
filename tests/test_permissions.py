"""One permission rule for every write: ``scheduler_app.operate_task``, asked by the API and the admin.

Staff status only opens the admin. A staff user without the permission changes nothing anywhere; a
user with it (staff or not) operates tasks through the API, and through the admin if also staff.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.test import Client
from django.urls import reverse

from scheduler_app.models import TaskConfig, TaskExecutionRecord
from scheduler_app.permissions import can_operate
from tests.users import grant_operate

pytestmark = pytest.mark.django_db

# Every write endpoint of the API, with a body it would accept from an operator.
WRITES: list[tuple[str, str, Any]] = [
    ("post", "/scheduler/tasks/tick/trigger", None),
    ("post", "/scheduler/tasks/tick/enable", None),
    ("post", "/scheduler/tasks/tick/disable", {"reason": "maintenance"}),
    ("put", "/scheduler/tasks/tick/schedule", {"schedule_type": "interval", "interval_seconds": 60}),
    ("delete", "/scheduler/tasks/tick/schedule", None),
    ("patch", "/scheduler/tasks/tick/options", {"jitter_seconds": 3}),
    ("delete", "/scheduler/tasks/tick/options", None),
    ("put", "/scheduler/tasks/tick/timeout", {"timeout_seconds": 5}),
    ("delete", "/scheduler/tasks/tick/timeout", None),
]


def send(client: Client, method: str, path: str, body: Any) -> Any:
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, json.dumps(body), content_type="application/json")


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def snapshot() -> tuple[Any, ...]:
    tick = TaskConfig.objects.get(name="tick")
    return tick.revision, tick.enabled_override, tick.schedule_type_override, tick.options_override


def test_the_rule() -> None:
    plain = User.objects.create_user("plain")
    staff = User.objects.create_user("staff", is_staff=True)
    changer = User.objects.create_user("changer", is_staff=True)
    changer.user_permissions.add(Permission.objects.get(codename="change_taskconfig"))
    operator = grant_operate(User.objects.create_user("operator"))
    retired = grant_operate(User.objects.create_user("retired", is_active=False))
    root = User.objects.create_superuser("root")
    assert [can_operate(u) for u in (None, AnonymousUser(), plain, staff, changer, retired)] == [False] * 6
    assert can_operate(User.objects.get(pk=operator.pk)) and can_operate(root)


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_staff_without_the_permission_get_403_on_every_api_write(method: str, path: str, body: Any) -> None:
    client = logged_in(User.objects.create_user("staffer", is_staff=True))
    before = snapshot()
    response = send(client, method, path, body)
    assert response.status_code == 403, response.content
    assert "operate_task" in response.json()["detail"]
    assert snapshot() == before and not TaskExecutionRecord.objects.exists()


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_non_staff_user_with_the_permission_writes_through_the_api(method: str, path: str, body: Any) -> None:
    user = grant_operate(User.objects.create_user("scripted"))
    if path.endswith("/enable"):
        TaskConfig.objects.filter(name="tick").update(enabled_override=False)
    response = send(logged_in(user), method, path, body)
    assert response.status_code in (200, 202), response.content
    if method != "delete":  # a DELETE of an override that is not there changes (and logs) nothing
        assert LogEntry.objects.filter(user=user).exists()


def test_the_permission_through_a_group_works_for_the_api_and_the_admin() -> None:
    from django.contrib.auth.models import Group

    operators = Group.objects.create(name="operators")
    operators.permissions.add(Permission.objects.get(codename="operate_task"))
    user = User.objects.create_user("member", is_staff=True)
    user.groups.add(operators)
    client = logged_in(user)
    assert client.post("/scheduler/tasks/tick/disable").status_code == 200
    assert client.post(reverse("admin:scheduler_app_taskconfig_run", args=["tick"])).status_code == 302
    assert not TaskConfig.objects.get(name="tick").enabled and TaskExecutionRecord.objects.count() == 1


def test_a_non_staff_operator_cannot_enter_the_admin() -> None:
    client = logged_in(grant_operate(User.objects.create_user("scripted")))
    response = client.post(reverse("admin:scheduler_app_taskconfig_run", args=["tick"]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not TaskExecutionRecord.objects.exists()


# -- the API's permission settings (scheduler_app/api/permissions.py) ----------------------------


def test_unsafe_methods_add_authentication_and_the_write_classes_to_the_read_ones() -> None:
    from rest_framework.permissions import IsAuthenticated

    from scheduler_app.api.permissions import CanOperateTasks, permissions_for

    for method in ("GET", "HEAD", "OPTIONS"):
        assert [type(p) for p in permissions_for(method)] == [IsAuthenticated]
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert [type(p) for p in permissions_for(method)] == [IsAuthenticated, IsAuthenticated, CanOperateTasks]


def test_a_single_permission_class_may_be_given_as_a_string(settings: Any) -> None:
    from rest_framework.permissions import AllowAny

    from scheduler_app.api.permissions import permissions_for

    settings.SCHEDULER = {**settings.SCHEDULER, "API_READ_PERMISSION_CLASSES": "rest_framework.permissions.AllowAny"}
    assert [type(p) for p in permissions_for("GET")] == [AllowAny]
    assert Client().get("/scheduler/status").status_code == 200
    # Still no anonymous writes.
    assert Client().post("/scheduler/tasks/tick/trigger").status_code in (401, 403)
    assert not TaskExecutionRecord.objects.exists()


def test_a_permission_class_that_cannot_be_imported_is_named(settings: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from scheduler_app.api.permissions import permissions_for

    settings.SCHEDULER = {**settings.SCHEDULER, "API_WRITE_PERMISSION_CLASSES": ["scheduler_app.api.permissions.Nope"]}
    assert permissions_for("GET")  # reads do not load the write classes
    with pytest.raises(ImproperlyConfigured, match=r"'scheduler_app\.api\.permissions\.Nope' cannot be imported"):
        permissions_for("POST")
