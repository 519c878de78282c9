"""The web process and the scheduler write to one SQLite file at the same time: no lock errors."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from scheduler_app.models import TaskExecutionRecord
from tests.processes import wait_for
from tests.users import operator

pytestmark = [pytest.mark.process]
TASKS = ["TickTask", "SlowTask", "BoomTask", "CronTask"]


def post(url: str, auth: str, body: dict | None = None, method: str = "POST") -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        method=method,
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_web_and_scheduler_write_together_without_lock_errors(processes) -> None:
    operator("ops", password="ops-pw")
    auth = base64.b64encode(b"ops:ops-pw").decode()
    scheduler = processes.scheduler(TASKS)
    web = processes.web(TASKS)
    base = f"http://127.0.0.1:{web.port}/scheduler/tasks"

    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + 8
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        statuses[post(f"{base}/nightly/trigger", auth)] += 1
        statuses[post(f"{base}/tick/{'disable' if rounds % 2 else 'enable'}", auth)] += 1
        statuses[
            post(
                f"{base}/boom/schedule",
                auth,
                {"schedule_type": "interval", "interval_seconds": 1 + rounds % 3},
                method="PUT",
            )
        ] += 1
    assert set(statuses) <= {200, 202, 409}, statuses
    assert statuses[202] >= 10, statuses

    # Every queued manual run is carried out by the scheduler.
    wait_for(
        lambda: not TaskExecutionRecord.objects.filter(status__in=["pending", "running"], task_id="nightly").exists(),
        timeout=15,
        message="queued runs to finish",
    )
    manual = TaskExecutionRecord.objects.filter(task_id="nightly", trigger="manual")
    assert manual.count() == statuses[202]
    assert set(manual.values_list("status", flat=True)) <= {"success", "skipped"}
    assert scheduler.alive() and web.alive()
    for process in (scheduler, web):
        assert "database is locked" not in process.output()
        assert "Traceback" not in process.output()
    # The scheduler kept firing while the web process wrote (slow's schedule never changed).
    assert TaskExecutionRecord.objects.filter(task_id="slow", trigger="scheduled").count() >= 4
