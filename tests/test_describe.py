"""Schedules in words: one describer for the API and the admin."""

from __future__ import annotations

from scheduler_app.describe import describe_duration, describe_interval, describe_schedule


def test_intervals_read_as_durations() -> None:
    assert describe_schedule("interval", None, 3600, "UTC") == "every 1 hour"
    assert describe_schedule("interval", None, 90, "UTC") == "every 1 minute 30 seconds"
    assert describe_interval(None) == ""
    assert describe_duration(0.25) == "0.25 seconds"


def test_cron_reads_as_prose_in_its_zone() -> None:
    assert describe_schedule("cron", "0 2 * * *", None, "Europe/Berlin") == "At 02:00 (Europe/Berlin)"
    assert describe_schedule("cron", "@daily", None, "UTC") == "At 00:00 (UTC)"
