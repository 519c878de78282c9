"""The API against real processes: a running scheduler acts on what the API queues and changes,
and the README's curl examples work, as written, against a real web server."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from scheduler_app.models import TaskExecutionRecord, TaskState
from tests.processes import ROOT, wait_for
from tests.users import operator

pytestmark = [pytest.mark.process]


@pytest.fixture
def staff_client(processes) -> Client:
    client = Client()
    client.force_login(operator("ops", password="ops-pw"))
    return client


def record_status(record_id: int) -> str:
    return TaskExecutionRecord.objects.get(pk=record_id).status


def test_trigger_is_run_by_the_scheduler_process_and_busy_tasks_refuse(processes, staff_client: Client) -> None:
    scheduler = processes.scheduler(["TickTask", "LongTask"], TEST_LONG_TASK_SECONDS="4")
    status = staff_client.get("/scheduler/status").json()
    assert status["running"] is True and status["leader"].endswith(f":{scheduler.pid}")

    # `long` is disabled in code: a manual run is still allowed, and runs in the scheduler process.
    response = staff_client.post("/scheduler/tasks/long/trigger")
    assert response.status_code == 202 and response.json()["scheduler_running"] is True
    record_id = response.json()["id"]
    wait_for(lambda: record_status(record_id) == "running", timeout=15, message="the manual run to start")
    assert TaskExecutionRecord.objects.get(pk=record_id).worker_label.endswith(f":{scheduler.pid}")
    assert staff_client.get("/scheduler/tasks/long").json()["status"] == "running"

    busy = staff_client.post("/scheduler/tasks/long/trigger")
    assert busy.status_code == 409 and busy.json()["code"] == "task_busy"

    wait_for(lambda: record_status(record_id) == "success", timeout=20, message="the manual run to finish")
    followed = staff_client.get(f"/scheduler/history/{record_id}").json()
    assert followed["status"] == "success" and followed["message"] == "long done"
    assert followed["trigger"] == "manual" and followed["triggered_by"] == "ops"
    assert staff_client.post("/scheduler/tasks/long/trigger").status_code == 202


def test_schedule_and_enabled_changes_reach_the_running_scheduler(processes, staff_client: Client) -> None:
    processes.scheduler(["TickTask"])
    wait_for(lambda: TaskState.objects.get(task_id="tick").run_count >= 1, timeout=15, message="a first tick")

    def next_run_in() -> float | None:
        next_run = TaskState.objects.get(task_id="tick").next_run_at
        return None if next_run is None else (next_run - timezone.now()).total_seconds()

    body = {"schedule_type": "interval", "interval_seconds": 7200}
    assert staff_client.put("/scheduler/tasks/tick/schedule", body, content_type="application/json").status_code == 200
    wait_for(lambda: (next_run_in() or 0) > 3600, timeout=15, message="the job to move to the 2-hour interval")

    assert staff_client.delete("/scheduler/tasks/tick/schedule").status_code == 200
    wait_for(lambda: (left := next_run_in()) is not None and left < 5, timeout=15, message="back to every second")
    seen = TaskState.objects.get(task_id="tick").run_count
    wait_for(lambda: TaskState.objects.get(task_id="tick").run_count > seen, timeout=15, message="ticks again")

    assert staff_client.post("/scheduler/tasks/tick/disable").status_code == 200
    wait_for(lambda: next_run_in() is None, timeout=15, message="the job to be removed")
    assert staff_client.get("/scheduler/tasks/tick").json()["next_run_at"] is None

    assert staff_client.post("/scheduler/tasks/tick/enable").status_code == 200
    since = timezone.now()
    wait_for(
        lambda: TaskExecutionRecord.objects.filter(task_id="tick", trigger="scheduled", created_at__gt=since).exists(),
        timeout=15,
        message="scheduled ticks after enabling",
    )


def test_running_is_a_live_heartbeat_not_a_flag(processes, staff_client: Client) -> None:
    def running() -> bool:
        return staff_client.get("/scheduler/status").json()["running"]

    scheduler = processes.scheduler(["TickTask"])
    assert running() is True
    scheduler.kill()  # no clean exit: its row stays, with a heartbeat that ages
    status = staff_client.get("/scheduler/status").json()
    assert status["processes"], "the dead scheduler's row is still there"
    wait_for(lambda: not running(), timeout=15, message="`running` to turn false once the heartbeat is stale")
    assert staff_client.get("/scheduler/status").json()["processes"][0]["alive"] is False

    again = processes.scheduler(["TickTask"])
    assert running() is True
    assert again.stop(signal.SIGTERM) == 0
    assert running() is False


def readme_curl_examples() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## REST API", 1)[1].split("\n## ", 1)[0]
    return [line for line in re.findall(r"^curl .*$", section, flags=re.MULTILINE)]


def test_readme_curl_examples_work_as_written(processes, tmp_path: Path) -> None:
    examples = readme_curl_examples()
    assert len(examples) >= 12
    documented = " ".join(examples)
    for endpoint in [
        "status",
        "tasks",
        "/trigger",
        "/enable",
        "/disable",
        "/history",
        "/schedule",
        "/options",
        "/timeout",
    ]:
        assert endpoint in documented, f"no curl example for {endpoint}"

    User.objects.create_user("admin", password="readme-secret", is_staff=True, is_superuser=True)
    # The README's `history/1` example needs a record 1, as any `make run` database soon has.
    if not TaskExecutionRecord.objects.filter(pk=1).exists():
        TaskExecutionRecord.objects.create(id=1, task_id="crawl_site", trigger="manual", status="success")
    web = processes.web()
    base = f"http://127.0.0.1:{web.port}"
    env = {**os.environ, "SCHEDULER_AUTH": "admin:readme-secret"}
    for example in examples:
        command = example.replace("http://127.0.0.1:8000", base)
        body = tmp_path / "body.json"
        result = subprocess.run(
            ["bash", "-c", f"{command} -sS -o {shlex.quote(str(body))} -w '%{{http_code}}'"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (example, result.stderr)
        assert result.stdout.startswith("2"), (example, result.stdout, body.read_text())
        json.loads(body.read_text())

    assert TaskExecutionRecord.objects.filter(task_id="crawl_site", trigger="manual", triggered_by__username="admin")
    state = TaskState.objects.get(task_id="crawl_site")
    # The examples end where they began.
    assert state.task.schedule_source == "code" and state.task.enabled
    assert state.task.options_override == {} and state.task.timeout_override is None
    assert timezone.now() - state.task.updated_at < timedelta(minutes=5)
