"""History retention: the built-in ``prune_history`` task deletes exactly the finished records older
than ``SCHEDULER["HISTORY_RETENTION_DAYS"]``, run the way production runs it (``trigger_task``)."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from scheduler_app.models import TaskExecutionRecord
from scheduler_app.services import sync_task_rows

pytestmark = pytest.mark.django_db(transaction=True)

FINISHED = ["success", "failed", "skipped", "timeout", "interrupted", "missed"]


def make_record(status: str, age_days: float) -> int:
    record = TaskExecutionRecord.objects.create(task_id="tick", trigger="scheduled", status=status)
    TaskExecutionRecord.objects.filter(pk=record.pk).update(created_at=timezone.now() - timedelta(days=age_days))
    return record.pk


def test_prune_history_deletes_only_finished_records_older_than_the_retention(settings) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "HISTORY_RETENTION_DAYS": 10}
    sync_task_rows()
    old_finished = [make_record(status, 10.5) for status in FINISHED]
    old_finished.append(make_record("success", 400))
    kept = [make_record(status, 9.5) for status in FINISHED]  # inside the window
    kept += [make_record("running", 50), make_record("pending", 50)]  # open work is never pruned
    kept.append(make_record("success", 0))

    out = StringIO()
    call_command("trigger_task", "prune_history", "--json", stdout=out)
    result = json.loads(out.getvalue())

    assert result["status"] == "success", result
    assert result["data"]["deleted"] == len(old_finished) == 7
    assert result["message"] == "deleted 7 record(s) older than 10 day(s)"
    remaining = set(TaskExecutionRecord.objects.filter(task_id="tick").values_list("pk", flat=True))
    assert remaining == set(kept)
    # The run's own record is new, so it stays.
    assert TaskExecutionRecord.objects.filter(pk=result["id"]).exists()


def test_prune_history_with_nothing_old_deletes_nothing(settings) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "HISTORY_RETENTION_DAYS": 30}
    sync_task_rows()
    recent = [make_record("success", 29), make_record("failed", 1)]
    out = StringIO()
    call_command("trigger_task", "prune_history", "--json", stdout=out)
    assert json.loads(out.getvalue())["data"]["deleted"] == 0
    assert set(TaskExecutionRecord.objects.filter(task_id="tick").values_list("pk", flat=True)) == set(recent)
