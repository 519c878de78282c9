"""The success-rate and duration trend (inline SVG) of the latest runs, on the task's admin page."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from django.contrib.auth.models import User
from django.test import Client

from scheduler_app.admin_pages.display import render_trend
from scheduler_app.runner import TaskRunner
from scheduler_app.services import sync_task_rows
from scheduler_app.trends import TREND_RUNS, seconds, task_trend

pytestmark = pytest.mark.django_db(transaction=True)
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(autouse=True)
def rows() -> None:
    sync_task_rows()


def svg_of(html: str) -> ET.Element:
    match = re.search(r"<div class=\"sched-trend\"><svg .*?</svg>", html, re.S)
    assert match, html
    return ET.fromstring(match.group(0).removeprefix('<div class="sched-trend">'))  # well-formed, or raises


def test_trend_of_real_runs() -> None:
    runner = TaskRunner()
    for _ in range(3):
        runner.run_now("tick")
    runner.run_now("boom")
    trend = task_trend("tick")
    assert [p.status for p in trend.points] == ["success"] * 3
    assert trend.success_rate == 1.0
    assert task_trend("boom").success_rate == 0.0
    assert task_trend("nightly").points == []
    assert "No runs yet" in render_trend(task_trend("nightly"))


def test_svg_shows_each_run_its_outcome_and_the_rate() -> None:
    runner = TaskRunner()
    runner.run_now("tick")
    runner.run_now("hang")  # times out at 1 s: the longest run, at the top of the line
    runner.run_now("tick")
    # The same task must carry both outcomes for one trend: reuse hang's records under tick's name.
    from scheduler_app.models import TaskExecutionRecord

    TaskExecutionRecord.objects.filter(task_id="hang").update(task_id="tick")
    html = render_trend(task_trend("tick"))
    svg = svg_of(html)
    runs = svg.findall(f".//{SVG}rect")
    assert [r.get("data-status") for r in runs] == ["success", "timeout", "success"]  # oldest first
    circles = svg.findall(f".//{SVG}circle")
    assert len(circles) == 3
    heights = {c.get("data-status"): float(c.get("cy")) for c in circles}
    assert heights["timeout"] < heights["success"], "the longest run is drawn highest"
    titles = [c.find(f"{SVG}title").text for c in circles]
    assert all(t.startswith("#") for t in titles) and any("timeout" in t for t in titles)
    assert "2 of the last 3 runs succeeded (67%)" in html
    # The hung run's duration is its 1 s timeout plus however late the watchdog woke: "1.0 s" or more.
    longest = max(TaskExecutionRecord.objects.filter(task_id="tick").values_list("duration_seconds", flat=True))
    assert 1.0 <= longest < 5, longest
    assert f"longest {seconds(longest)}" in html
    # Skipped fires ran nothing: not in the trend.
    TaskExecutionRecord.objects.create(task_id="tick", trigger="manual", status="skipped", duration_seconds=0)
    assert len(task_trend("tick").points) == 3


def test_only_the_latest_runs_in_one_query(django_assert_num_queries) -> None:
    from scheduler_app.models import TaskExecutionRecord

    TaskExecutionRecord.objects.bulk_create(
        [
            TaskExecutionRecord(
                task_id="tick", trigger="scheduled", status="failed" if i % 4 == 0 else "success", duration_seconds=i
            )
            for i in range(TREND_RUNS + 20)
        ]
    )
    with django_assert_num_queries(1):
        trend = task_trend("tick")
    assert len(trend.points) == TREND_RUNS
    assert trend.points[-1].duration == TREND_RUNS + 19  # newest last, on the right
    assert trend.points[0].duration == 20


def test_names_are_escaped() -> None:
    from scheduler_app.models import TaskExecutionRecord

    TaskExecutionRecord.objects.create(task_id="tick", trigger="manual", status="success", duration_seconds=0.5)
    html = render_trend(task_trend("tick"))
    svg_of(html)
    assert "<script" not in html


def test_task_admin_page_shows_the_trend() -> None:
    runner = TaskRunner()
    for _ in range(2):
        runner.run_now("tick")
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw-admin-123"))
    response = client.get("/admin/scheduler_app/taskconfig/tick/change/")
    assert response.status_code == 200
    html = response.content.decode()
    svg = svg_of(html)
    assert len(svg.findall(f".//{SVG}rect")) == 2
    assert "2 of the last 2 runs succeeded (100%)" in html
    empty = client.get("/admin/scheduler_app/taskconfig/nightly/change/").content.decode()
    assert "No runs yet" in empty
