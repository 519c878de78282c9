"""A new user's first hour in the admin (issue 16), in headless Chromium against live processes.

The task list fits a 1400 px window, in light and dark mode; the task page shows its status near the
top; a refused cron leaves the stored schedule on the page; the API docs send a visitor who is not
logged in to the login and back; a restart of `make run` keeps the browser logged in. Screenshots of
the task list and a task page at 1400 px, light and dark, go to test-artifacts/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from scheduler_app.models import TaskConfig, TaskState
from tests.processes import free_port, wait_for
from tests.test_admin_browser import browser, screenshot  # noqa: F401 (the fixture)
from tests.test_first_hour import RunSh, project_copy

pytestmark = [pytest.mark.browser, pytest.mark.process]

TASKS = ["TickTask", "CronTask", "BoomTask", "SlowTask", "LongTask"]
PASSWORD = "layout-test-password"
WIDTH = 1400


def log_in(page: Any, base: str, username: str = "operator", password: str = PASSWORD) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/scheduler_app/taskconfig/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")


def luminance(css_colour: str) -> float:
    """0 (black) .. 1 (white) of an `rgb(...)`/`rgba(...)` colour as Chromium reports it."""
    parts = [float(p) for p in css_colour[css_colour.index("(") + 1 : -1].split(",")[:3]]
    return sum(weight * value / 255 for weight, value in zip((0.2126, 0.7152, 0.0722), parts, strict=True))


@pytest.fixture
def site(processes: Any) -> str:
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    processes.scheduler(TASKS)
    web = processes.web(TASKS)
    wait_for(lambda: TaskState.objects.filter(task_id="tick", run_count__gte=2).exists(), 20, message="ticks")
    TaskConfig.objects.filter(name="boom").update(disabled_reason="")  # a task with a long history is fine too
    return f"http://127.0.0.1:{web.port}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_task_list_and_page_fit_1400px(
    site: str,
    browser: Any,  # noqa: F811
    scheme: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = browser.new_page(viewport={"width": WIDTH, "height": 900}, color_scheme=scheme)
    page.set_default_timeout(20_000)
    log_in(page, site)
    page.wait_for_selector("#result_list")
    screenshot(page, f"admin-task-list-{WIDTH}-{scheme}.png", capsys)
    # No horizontal scrolling (of the page, or of the admin's scrolling box around the table), and
    # every column on screen.
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than the window"
    overflow = page.locator("#changelist .results").evaluate("e => e.scrollWidth - e.clientWidth")
    assert overflow <= 0, f"the task table is {overflow} px wider than its box"
    for column in ("next_run", "last_run", "last_result_display", "run_count", "fail_count"):
        box = page.locator(f"#result_list th.column-{column}").bounding_box()
        assert box is not None and box["x"] + box["width"] <= WIDTH, column
    # Times say their zone.
    tick_row = page.locator("#result_list tr", has=page.locator("a", has_text="tick"))
    assert "UTC" in tick_row.locator("td.field-last_run").inner_text()
    banner = page.locator("#scheduler-banner")
    background = banner.evaluate("e => getComputedStyle(e).backgroundColor")
    assert (luminance(background) < 0.3) == (scheme == "dark"), background

    page.goto(f"{site}/admin/scheduler_app/taskconfig/tick/change/")
    status = page.locator("#task-status")
    assert "last result" in status.inner_text().lower() and "next run" in status.inner_text().lower()
    box = status.bounding_box()
    assert box is not None and box["y"] < 400, box  # in the first screen, not 4,000 px down
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    assert page.locator("#id_timezone_override").get_attribute("placeholder") == "UTC"
    trend_labels = page.locator(".sched-trend .sched-trend-axis").all_inner_texts()
    assert any("s" in text for text in trend_labels), trend_labels
    screenshot(page, f"admin-task-page-{WIDTH}-{scheme}.png", capsys)

    # The disable page: the way back is a secondary button, not a second main one.
    page.goto(f"{site}/admin/scheduler_app/taskconfig/")
    page.check("input.action-select[value=tick]")
    page.select_option("select[name=action]", "disable_selected")
    page.click("button[name=index]")
    main = page.locator("#confirm-disable").evaluate("e => getComputedStyle(e).backgroundColor")
    back = page.locator("a.cancel-link").evaluate("e => getComputedStyle(e).backgroundColor")
    assert main != back, (main, back)
    screenshot(page, f"admin-disable-{scheme}.png", capsys)
    page.close()


def test_refused_cron_keeps_the_stored_schedule_on_the_page(
    site: str,
    browser: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.set_default_timeout(20_000)
    log_in(page, site)
    page.goto(f"{site}/admin/scheduler_app/taskconfig/nightly/change/")
    page.select_option("#id_schedule_type_override", "cron")
    page.fill("#id_cron_expression_override", "61 * * * *")
    page.fill("#id_timezone_override", "America/New_York")
    page.click("input[name=_save]")
    assert "invalid cron expression '61 * * * *'" in page.inner_text(".field-cron_expression_override .errorlist")
    effective = page.inner_text(".field-effective_schedule")
    assert "0 2 * * *" in effective and "At 02:00 (UTC)" in effective and "code default" in effective
    times = page.inner_text("#schedule-preview")
    assert "cannot compute" not in times and times.count("UTC") == 5, times
    assert page.input_value("#id_cron_expression_override") == "61 * * * *"  # to be corrected, not retyped
    screenshot(page, "admin-task-refused-cron.png", capsys)
    assert TaskConfig.objects.get(name="nightly").schedule_source == "code"
    page.close()


def test_docs_send_a_visitor_to_the_login_and_back(site: str, browser: Any) -> None:  # noqa: F811
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.set_default_timeout(20_000)
    page.goto(f"{site}/scheduler/docs")
    assert page.url == f"{site}/admin/login/?next=/scheduler/docs"
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector(".swagger-ui .info")
    assert page.url == f"{site}/scheduler/docs"
    page.close()


def test_make_run_restart_keeps_the_browser_logged_in(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    project = project_copy(tmp_path)
    port = free_port()
    runs = [RunSh(project, port, tmp_path / "run-1.log")]
    try:
        runs[0].wait_ready()
        password = (project / "var" / "admin-password").read_text().strip()
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        page.set_default_timeout(20_000)
        log_in(page, runs[0].base, "admin", password)
        page.wait_for_selector("#result_list")
        runs[0].ctrl_c()
        runs[0].wait_gone()
        runs.append(RunSh(project, port, tmp_path / "run-2.log"))
        runs[1].wait_ready()
        page.reload()
        assert page.locator("#result_list").count() == 1, page.url  # not the login page
        assert "/login/" not in page.url
        page.close()
    finally:
        for run in runs:
            run.close()
