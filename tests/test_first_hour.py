"""A new user's first hour (issue 16): `make run` twice, commands from a shell, a task of one's own.

These tests run the project as a user does: ``scripts/run.sh`` (what ``make run`` starts) and
``manage.py`` with the project's own settings, in a copy of the project in a temporary folder, so
that its ``db.sqlite3`` and ``var/admin-password`` are the copy's, not the developer's.
"""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.processes import ROOT, free_port, wait_for

COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "var", "test-artifacts", "*.sqlite3*", "__pycache__", ".pytest_cache", ".ruff_cache"
)


def project_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=COPY_IGNORE, symlinks=True)
    return copy


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no test settings, no secret key, no debug flag."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "TEST_", "SCHEDULER_")) and k not in {"DATABASE_URL", "PYTHONPATH"}
    }
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def manage(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=user_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _take_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class RunSh:
    """``scripts/run.sh`` in its own process group, as a terminal runs it (Ctrl-C = SIGINT to the group)."""

    def __init__(self, project: Path, port: int, log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.popen = subprocess.Popen(
            ["bash", "scripts/run.sh"],
            cwd=project,
            env=user_env(PYTHON=sys.executable, HOST="127.0.0.1", PORT=str(port)),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A terminal's shell takes Ctrl-C; a suite started in the background of a script inherits
            # SIGINT ignored, which bash cannot trap (run.sh would never hear the first Ctrl-C).
            preexec_fn=_take_ctrl_c,
        )
        self.base = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"run.sh exited ({self.popen.returncode}):\n{self.output()}")
            if "Scheduler and web app are running" not in self.output():
                return False
            try:
                urllib.request.urlopen(f"{self.base}/admin/login/", timeout=2)
            except OSError:
                return False
            return True

        wait_for(ready, 90, interval=0.2, message="make run to answer")

    def ctrl_c(self) -> None:
        os.killpg(self.popen.pid, signal.SIGINT)

    def wait_gone(self, timeout: float = 60) -> int:
        """Wait until run.sh and every process it started have exited; returns run.sh's status."""
        status = self.popen.wait(timeout=timeout)

        def group_gone() -> bool:
            try:
                os.killpg(self.popen.pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(group_gone, timeout, message="the processes run.sh started to exit")
        self._log.close()
        return status

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        if not self._log.closed:
            self._log.close()


@pytest.fixture
def run_sh(tmp_path: Path) -> Iterator[list[RunSh]]:
    started: list[RunSh] = []
    try:
        yield started
    finally:
        for run in started:
            run.close()


class Browser:
    """A cookie-keeping HTTP client: what a logged-in browser tab holds is its session cookie."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.cookies if c.name == name), None)

    def log_in(self, username: str, password: str) -> None:
        self.opener.open(f"{self.base}/admin/login/", timeout=10).read()
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": self.cookie("csrftoken"), "next": "/"}
        ).encode()
        request = urllib.request.Request(f"{self.base}/admin/login/?next=/admin/", data=form)
        request.add_header("Referer", f"{self.base}/admin/login/")
        self.opener.open(request, timeout=10).read()
        assert self.cookie("sessionid"), "the login did not start a session"

    def status_of(self, path: str) -> int:
        try:
            return self.opener.open(f"{self.base}{path}", timeout=10).status
        except urllib.error.HTTPError as exc:
            return exc.code


@pytest.mark.process
@pytest.mark.own_database
def test_make_run_keeps_the_admin_session_across_restarts(tmp_path: Path, run_sh: list[RunSh]) -> None:
    project = project_copy(tmp_path)
    port = free_port()
    first = RunSh(project, port, tmp_path / "run-1.log")
    run_sh.append(first)
    first.wait_ready()
    password = (project / "var" / "admin-password").read_text().strip()
    assert f"user: admin   password: {password}" in first.output()
    assert (project / "var" / "admin-password").stat().st_mode & 0o777 == 0o600

    browser = Browser(first.base)
    assert browser.status_of("/scheduler/status") == 403  # not logged in yet
    browser.log_in("admin", password)
    assert browser.status_of("/scheduler/status") == 200

    # A second `make run` while the first runs fails on the busy port, and changes nothing.
    second = subprocess.run(
        ["bash", "scripts/run.sh"],
        cwd=project,
        env=user_env(PYTHON=sys.executable, HOST="127.0.0.1", PORT=str(port)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode != 0
    assert f"127.0.0.1:{port} is not free" in second.stderr + second.stdout
    assert browser.status_of("/scheduler/status") == 200

    # Stop (Ctrl-C) and start again: same password, and the open session still works.
    first.ctrl_c()
    first.wait_gone()
    again = RunSh(project, port, tmp_path / "run-2.log")
    run_sh.append(again)
    again.wait_ready()
    assert (project / "var" / "admin-password").read_text().strip() == password
    assert f"password: {password}" in again.output()
    assert browser.status_of("/scheduler/status") == 200
    again.ctrl_c()
    again.wait_gone()

    # The password file deleted: the password is left alone, and the start says how to set one.
    (project / "var" / "admin-password").unlink()
    third = RunSh(project, port, tmp_path / "run-3.log")
    run_sh.append(third)
    third.wait_ready()
    assert 'make manage ARGS="changepassword admin"' in third.output()
    assert not (project / "var" / "admin-password").exists()
    assert browser.status_of("/scheduler/status") == 200
    third.ctrl_c()
    third.wait_gone()


@pytest.mark.process
@pytest.mark.own_database
def test_second_ctrl_c_stops_at_once(tmp_path: Path, run_sh: list[RunSh]) -> None:
    """The first Ctrl-C waits for running tasks (here up to 600 s); the second one does not."""
    project = project_copy(tmp_path)
    marker = tmp_path / "long-task-running"
    (project / "scheduler_project" / "local_settings.py").write_text(
        'SCHEDULER["TASKS"] += ["tests.tasks.LongTask"]\nSCHEDULER["SHUTDOWN_GRACE"] = 600\n'
        f"import os\nos.environ['TEST_MARKER_FILE'] = {str(marker)!r}\nos.environ['TEST_LONG_TASK_SECONDS'] = '900'\n"
    )
    run = RunSh(project, free_port(), tmp_path / "run.log")
    run_sh.append(run)
    run.wait_ready()
    password = (project / "var" / "admin-password").read_text().strip()
    request = urllib.request.Request(f"{run.base}/scheduler/tasks/long/trigger", method="POST", data=b"")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"admin:{password}".encode()).decode())
    assert urllib.request.urlopen(request, timeout=10).status == 202
    wait_for(marker.exists, 30, message="the long task to start")

    run.ctrl_c()
    # The second Ctrl-C comes once both have taken the first: the scheduler began its graceful stop
    # (its wait for the task is test_runscheduler_second_ctrl_c_exits_at_once's), and run.sh said so.
    # Signals are not queued: two Ctrl-Cs before run.sh's trap ran would be one for it.
    try:
        wait_for(
            lambda: (
                "received SIGINT, stopping" in (output := run.output()) and "Ctrl-C again to stop at once" in output
            ),
            90,
            message="the graceful stop",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the output so far:\n{run.output()}") from None
    assert run.popen.poll() is None  # still waiting for the task, as the first Ctrl-C asks
    run.ctrl_c()
    run.wait_gone(timeout=30)  # far below the 600 s the first Ctrl-C would wait
    assert "stopping now" in run.output(), run.output()


@pytest.mark.own_database
def test_missing_secret_key_is_one_line(tmp_path: Path) -> None:
    result = manage(ROOT, "drf_create_token", "admin")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DJANGO_SECRET_KEY" in lines[0] and 'make manage ARGS="drf_create_token admin"' in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


MY_TASK = """
import logging

from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule

logger = logging.getLogger(__name__)


class HelloTask(BaseTask):
    name = "hello"
    schedule = TaskSchedule(schedule_type=ScheduleType.INTERVAL, interval_seconds=3600)

    def run(self) -> TaskResult:
        logger.info("hello from my own task")
        return TaskResult.success("said hello")
"""


@pytest.mark.own_database
@pytest.mark.parametrize("how", ["environment", "local_settings"])
def test_own_task_without_editing_project_files(tmp_path: Path, how: str) -> None:
    project = project_copy(tmp_path)
    (project / "my_tasks.py").write_text(MY_TASK)
    env = {"DJANGO_DEBUG": "1"}
    if how == "environment":
        env["SCHEDULER_EXTRA_TASKS"] = "my_tasks.HelloTask"
    else:
        (project / "scheduler_project" / "local_settings.py").write_text(
            'SCHEDULER["TASKS"] += ["my_tasks.HelloTask"]\n'
        )
    assert manage(project, "migrate", "-v0", **env).returncode == 0
    result = manage(project, "trigger_task", "hello", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "said hello" in result.stdout
    # The task's own logger reaches the console, as the scheduler's lines do.
    assert re.search(r"INFO my_tasks hello from my own task", result.stderr), result.stderr


@pytest.mark.process
def test_runscheduler_second_ctrl_c_exits_at_once(processes: Any, tmp_path: Path) -> None:
    """`manage.py runscheduler` alone: the first SIGINT waits for the running task, the second does not."""
    from scheduler_app import services

    marker = tmp_path / "long-running"
    scheduler = processes.scheduler(
        ["LongTask"], TEST_SHUTDOWN_GRACE="600", TEST_LONG_TASK_SECONDS="900", TEST_MARKER_FILE=str(marker)
    )
    services.request_run("long", origin="api")
    wait_for(marker.exists, 30, message="the long task to start")
    scheduler.send(signal.SIGINT)
    wait_for(lambda: "waiting up to 600s for 1 running task(s)" in scheduler.output(), 30, message="graceful stop")
    assert scheduler.alive()
    assert scheduler.stop(signal.SIGINT, timeout=30) == 130  # far below the 600 s grace
    assert "second Ctrl-C: exiting now" in scheduler.output()


@pytest.mark.process
def test_a_standby_scheduler_says_it_stands_by(processes: Any) -> None:
    active = processes.scheduler(["TickTask"])
    standby = processes.scheduler(["TickTask"], wait_active=False)
    processes.wait_role(standby, "standby")
    wait_for(lambda: "standing by: another scheduler holds the lease" in standby.output(), 10, message="the line")
    assert standby.output().count("standing by") == 1  # once, not at every poll
    assert "standing by" not in active.output()


@pytest.mark.django_db
def test_task_page_after_a_refused_cron_shows_the_stored_schedule(admin_client: Any) -> None:
    from django.urls import reverse

    from tests.test_admin import form_data

    url = reverse("admin:scheduler_app_taskconfig_change", args=["nightly"])
    changes = {"schedule_type_override": "cron", "cron_expression_override": "61 * * * *"}
    response = admin_client.post(url, form_data("nightly", **changes, timezone_override="America/New_York"))
    assert response.status_code == 200 and response.context["adminform"].form.errors
    html = response.content.decode()
    effective = html.split('class="form-row field-effective_schedule')[1].split("</div>\n")[0]
    assert "<code>0 2 * * *</code>" in effective and "At 02:00 (UTC)" in effective and "code default" in effective
    times = html.split('id="schedule-preview"')[1].split("</ol>")[0]
    assert "cannot compute" not in times and times.count("UTC</li>") == 5
    assert 'value="61 * * * *"' in html  # the refused input stays in its field, to be corrected


@pytest.mark.django_db
def test_docs_send_an_anonymous_visitor_to_the_login_and_back(client: Any, admin_user: Any) -> None:
    browser = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"}
    response = client.get("/scheduler/docs", **browser)
    assert response.status_code == 302 and response["Location"] == "/admin/login/?next=/scheduler/docs"
    login = client.post(response["Location"], {"username": "admin", "password": "password"})
    assert login.status_code == 302 and login["Location"] == "/scheduler/docs"
    assert client.get("/scheduler/docs").status_code == 200
    # The API itself still answers scripts in JSON, not with a redirect.
    assert Client().get("/scheduler/tasks").status_code == 403
    assert Client().get("/scheduler/schema").status_code == 403


def api_write(client: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import json

    response = getattr(client, method)(
        f"/scheduler/tasks/{path}", json.dumps(body) if body is not None else "", content_type="application/json"
    )
    return response.status_code, response.json()


@pytest.mark.django_db
def test_write_answers_show_the_state_after_the_write(admin_client: Any) -> None:
    from datetime import datetime, timedelta

    from django.utils import timezone

    from scheduler_app.models import TaskState

    # What the scheduler last saved: 02:00 UTC tomorrow (the code's `0 2 * * *`).
    old = (timezone.now() + timedelta(days=1)).replace(hour=2, minute=0, second=0, microsecond=0)
    TaskState.objects.filter(task_id="nightly").update(next_run_at=old)
    body = {"schedule_type": "cron", "cron_expression": "30 3 * * *", "timezone": "Europe/Berlin"}
    code, task = api_write(admin_client, "put", "nightly/schedule", body)
    assert code == 200 and task["schedule_description"] == "At 03:30 (Europe/Berlin)"
    local = datetime.fromisoformat(task["next_run_at_local"])
    assert (local.hour, local.minute) == (3, 30) and local.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    assert datetime.fromisoformat(task["next_run_at"]) == local

    code, task = api_write(admin_client, "post", "nightly/disable")
    assert code == 200 and task["enabled"] is False and task["next_run_at"] is None
    assert task["next_run_at_local"] is None
    TaskState.objects.filter(task_id="nightly").update(next_run_at=None)  # the scheduler removed the job
    code, task = api_write(admin_client, "post", "nightly/enable")
    assert code == 200 and task["enabled"] is True
    assert datetime.fromisoformat(task["next_run_at_local"]).strftime("%H:%M") == "03:30"

    # A write that does not change when the task fires leaves the scheduler's value alone.
    TaskState.objects.filter(task_id="nightly").update(next_run_at=old)
    code, task = api_write(admin_client, "put", "nightly/timeout", {"timeout_seconds": 60})
    assert code == 200 and datetime.fromisoformat(task["next_run_at"]) == old


@pytest.mark.django_db
def test_api_options_are_the_policies_in_force(admin_client: Any) -> None:
    task = admin_client.get("/scheduler/tasks/tick").json()
    assert task["allow_concurrent"] is False
    assert task["options"]["overlap"] == "skip" and task["options"]["catch_up_window_seconds"] == 60
    assert task["options_override"] == {}
    code, task = api_write(admin_client, "patch", "tick/options", {"overlap": "buffer_one"})
    assert code == 200 and task["options"]["overlap"] == "buffer_one"
    assert task["options_override"] == {"overlap": "buffer_one"}
    # The admin's page says the same.
    page = admin_client.get("/admin/scheduler_app/taskconfig/tick/change/").content.decode()
    assert "<td>buffer_one</td>" in page and "<td>60 (SCHEDULER[&#x27;MISFIRE_GRACE_SECONDS&#x27;])</td>" in page


@pytest.mark.django_db
def test_a_patch_with_two_bad_keys_names_both(admin_client: Any) -> None:
    code, errors = api_write(admin_client, "patch", "tick/options", {"retries": 3, "jitter_seconds": -1})
    assert code == 400 and set(errors) == {"retries", "jitter_seconds"}
    code, errors = api_write(admin_client, "patch", "tick/options", {"overlap": "never", "max_retries": -1})
    assert code == 400 and set(errors) == {"overlap", "max_retries"}
