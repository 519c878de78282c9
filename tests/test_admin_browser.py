"""The admin in a real headless browser (Playwright driving Debian's Chromium), against a live web
server and a live ``runscheduler`` sharing the test database.

Chromium comes from the system (``apt-get install chromium``; scripts/test.sh installs it when it
can); Playwright never downloads a browser here. When Chromium or Playwright is missing the test
fails with a message saying so: a browser test that silently skips proves nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.utils import timezone

from scheduler_app.models import TaskConfig, TaskExecutionRecord
from tests.processes import ROOT, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.process]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
TASKS = ["TickTask", "CronTask"]
PASSWORD = "browser-test-password"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: install it with `apt-get install chromium` "
            "(scripts/test.sh does when run as root). The browser tests cannot pass without it."
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: pip install -r requirements-dev.txt")
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM queries are
    # still plain synchronous code, so Django's guard against async contexts does not apply.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page: Any, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    with capsys.disabled():
        print(f"\n  screenshot: {path}")
    return path


def tick_records_after(moment: datetime) -> int:
    return TaskExecutionRecord.objects.filter(task_id="tick", trigger="scheduled", scheduled_at__gt=moment).count()


def test_operate_tasks_in_the_browser(processes: Any, browser: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from django_apscheduler.models import DjangoJob

    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    processes.scheduler(TASKS)
    web = processes.web(TASKS)
    base = f"http://127.0.0.1:{web.port}"
    wait_for(lambda: tick_records_after(timezone.now() - timezone.timedelta(seconds=30)) >= 2, 15, message="ticks")

    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.set_default_timeout(20_000)

    # Log in.
    page.goto(f"{base}/admin/scheduler_app/taskconfig/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")
    banner = page.inner_text("#scheduler-banner")
    assert "Scheduler running" in banner, banner
    tick_row = page.locator("#result_list tr", has=page.locator("a", has_text="tick"))
    assert "every 1 second" in tick_row.inner_text()
    nightly_row = page.locator("#result_list tr", has=page.locator("a", has_text="nightly"))
    assert "At 02:00 (UTC)" in nightly_row.inner_text()
    screenshot(page, "admin-task-list.png", capsys)

    # Disable `tick` with the list action; it stops firing once the scheduler has applied it
    # (removed its job from the job store).
    assert DjangoJob.objects.filter(id="tick").exists()
    page.check("input.action-select[value=tick]")
    page.select_option("select[name=action]", "disable_selected")
    page.click("button[name=index]")
    page.fill("#id_reason", "checking the browser test")
    page.click("#confirm-disable")
    assert "Disabled 1 task(s): tick. Reason: checking the browser test" in page.inner_text("ul.messagelist")
    wait_for(lambda: not DjangoJob.objects.filter(id="tick").exists(), 10, message="the tick job to be removed")
    applied = timezone.now()
    started = time.monotonic()
    while time.monotonic() - started < 3.0:  # absence can only be shown by watching for a while
        assert tick_records_after(applied) == 0, "tick fired after it was disabled"
        time.sleep(0.1)
    assert not TaskConfig.objects.get(name="tick").enabled
    page.reload()
    assert tick_row.locator("td.field-enabled_display img").get_attribute("alt") == "False"
    assert tick_row.locator("td.field-next_run").inner_text().strip() == "—"
    assert "checking the browser test" in tick_row.locator("td.field-enabled_display").inner_text()

    # Enable it again on its page; it fires again.
    page.click("#result_list a:text-is('tick')")
    page.check("#id_enabled")
    page.click("input[name=_continue]")
    assert "was changed successfully" in page.inner_text("ul.messagelist")
    enabled_at = timezone.now()
    wait_for(lambda: tick_records_after(enabled_at) >= 2, 15, message="tick to fire again after enabling")
    entries = list(
        LogEntry.objects.filter(object_id="tick").order_by("id").values_list("user__username", "change_message")
    )
    assert entries == [("operator", "Disabled: checking the browser test"), ("operator", "Enabled.")], entries
    page.reload()
    changes = page.inner_text(".field-recent_changes")
    assert "operator" in changes and "Enabled." in changes and "Disabled: checking the browser test" in changes
    screenshot(page, "admin-task-page.png", capsys)

    # Run `nightly` (cron 0 2 * * *) now: the scheduler runs the queued record and it shows up.
    page.goto(f"{base}/admin/scheduler_app/taskconfig/nightly/change/")
    page.click("#run-now")
    message = page.inner_text("ul.messagelist")
    assert "queued as record #" in message, message
    record_id = int(message.split("record #")[1].split(";")[0])

    def run_shows_as_success() -> bool:
        page.reload()
        row = page.locator("tr.sched-run", has=page.locator(f"a:text-is('#{record_id}')"))
        return row.count() == 1 and "success" in row.inner_text()

    wait_for(run_shows_as_success, 15, interval=0.3, message=f"record #{record_id} to show as a success")
    row_text = page.locator("tr.sched-run").first.inner_text()
    assert f"#{record_id}" in row_text and "manual" in row_text and "operator (admin)" in row_text
    record = TaskExecutionRecord.objects.get(pk=record_id)
    assert record.status == "success" and record.origin == "admin" and record.message == "nightly done"
    page.goto(f"{base}/admin/scheduler_app/taskexecutionrecord/")
    assert page.locator("#result_list tbody tr").count() >= 4
    screenshot(page, "admin-history.png", capsys)
    page.goto(f"{base}/admin/scheduler_app/taskconfig/nightly/change/")

    # A valid cron typed in shows a preview; an invalid one is refused on save with the field's error.
    revision = TaskConfig.objects.get(name="nightly").revision
    page.select_option("#id_schedule_type_override", "cron")
    page.fill("#id_cron_expression_override", "*/5 * * * *")
    page.wait_for_selector("#schedule-preview.sched-draft .sched-times li")
    assert "entered schedule" in page.inner_text("#schedule-preview")
    page.fill("#id_cron_expression_override", "61 * * * *")
    page.wait_for_function("document.querySelector('#schedule-preview').innerText.includes('not valid')")
    screenshot(page, "admin-task-invalid-cron-preview.png", capsys)
    page.click("input[name=_save]")
    assert "Please correct the error below." in page.inner_text("p.errornote")
    field_errors = page.inner_text(".field-cron_expression_override .errorlist")
    assert "invalid cron expression '61 * * * *'" in field_errors
    screenshot(page, "admin-task-invalid-cron-error.png", capsys)
    nightly = TaskConfig.objects.get(name="nightly")
    assert nightly.revision == revision and nightly.schedule_source == "code"
    assert nightly.cron_expression == "0 2 * * *"
    page.close()
