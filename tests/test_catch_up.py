"""The catch-up rule on its own: which due fires run, which are missed, and the reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler_app.catch_up import MAX_MISSED_RECORDS, ON_TIME_SECONDS, split_due_fires

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_one_fire_on_time_runs() -> None:
    verdict = split_due_fires([ago(0.2)], NOW, 60, "once")
    assert verdict.run == [ago(0.2)] and verdict.missed == []


def test_default_policy_runs_the_newest_fire_within_the_window_and_coalesces_the_older_ones() -> None:
    fires = [ago(50), ago(30), ago(10)]
    verdict = split_due_fires(fires, NOW, 60, "once")
    assert verdict.run == [ago(10)]
    assert verdict.missed == [
        (ago(50), f"coalesced into the fire at {ago(10).isoformat()}"),
        (ago(30), f"coalesced into the fire at {ago(10).isoformat()}"),
    ]


def test_fires_older_than_the_window_are_missed_with_how_late_they_were() -> None:
    verdict = split_due_fires([ago(120), ago(61), ago(60), ago(1)], NOW, 60, "once")
    assert verdict.run == [ago(1)]
    late = [(when, reason) for when, reason in verdict.missed if "catch-up window" in reason]
    assert late == [
        (ago(120), "missed by 120s, beyond the 60s catch-up window"),
        (ago(61), "missed by 61s, beyond the 60s catch-up window"),
    ]
    # Exactly at the window's edge still counts as in time (coalesced, not missed).
    assert (ago(60), f"coalesced into the fire at {ago(1).isoformat()}") in verdict.missed


def test_a_zero_window_misses_every_late_fire() -> None:
    verdict = split_due_fires([ago(0.5)], NOW, 0, "once")
    assert verdict.run == [] and verdict.missed == [(ago(0.5), "missed by 0s, beyond the 0s catch-up window")]


def test_catch_up_none_runs_only_a_fire_that_is_on_time() -> None:
    late = ON_TIME_SECONDS + 1
    verdict = split_due_fires([ago(late)], NOW, 60, "none")
    assert verdict.run == []
    assert verdict.missed == [(ago(late), "not caught up: the task's catch_up policy is 'none'")]
    verdict = split_due_fires([ago(late), ago(ON_TIME_SECONDS - 1)], NOW, 60, "none")
    assert verdict.run == [ago(ON_TIME_SECONDS - 1)]
    assert [when for when, _ in verdict.missed] == [ago(late)]


def test_after_a_long_downtime_missed_fires_are_recorded_one_by_one_up_to_a_cap_then_summed_up() -> None:
    fires = [ago(10_000 - i) for i in range(MAX_MISSED_RECORDS + 25)]
    verdict = split_due_fires(fires, NOW, 60, "once")
    assert verdict.run == []
    assert len(verdict.missed) == MAX_MISSED_RECORDS + 1
    assert [when for when, _ in verdict.missed[:MAX_MISSED_RECORDS]] == fires[:MAX_MISSED_RECORDS]
    summary_when, summary = verdict.missed[-1]
    rest = fires[MAX_MISSED_RECORDS:]
    assert summary_when == rest[-1]
    assert summary == f"25 more fires between {rest[0].isoformat()} and {rest[-1].isoformat()} were missed"


def test_exactly_the_cap_of_missed_fires_needs_no_summary() -> None:
    fires = [ago(10_000 - i) for i in range(MAX_MISSED_RECORDS)]
    verdict = split_due_fires(fires, NOW, 60, "once")
    assert [when for when, _ in verdict.missed] == fires
    assert not any("more fires" in reason for _, reason in verdict.missed)


def test_catch_up_none_counts_a_fire_exactly_on_time_seconds_late_as_on_time() -> None:
    verdict = split_due_fires([ago(ON_TIME_SECONDS)], NOW, 60, "none")
    assert verdict.run == [ago(ON_TIME_SECONDS)] and verdict.missed == []


def test_catch_up_none_keeps_the_fires_missed_beyond_the_window_too() -> None:
    verdict = split_due_fires([ago(300), ago(30), ago(1)], NOW, 60, "none")
    assert verdict.run == [ago(1)]
    assert verdict.missed == [
        (ago(300), "missed by 300s, beyond the 60s catch-up window"),
        (ago(30), "not caught up: the task's catch_up policy is 'none'"),
    ]


def test_a_single_fire_is_in_time_up_to_the_windows_edge_and_missed_a_microsecond_beyond() -> None:
    edge = split_due_fires([ago(60)], NOW, 60, "once")
    assert edge.run == [ago(60)] and edge.missed == []
    beyond = NOW - timedelta(seconds=60, microseconds=1)
    verdict = split_due_fires([beyond], NOW, 60, "once")
    assert verdict.run == [] and verdict.missed == [(beyond, "missed by 60s, beyond the 60s catch-up window")]
    late = NOW - timedelta(seconds=ON_TIME_SECONDS, microseconds=1)
    verdict = split_due_fires([late], NOW, 60, "none")
    assert verdict.run == [] and verdict.missed == [(late, "not caught up: the task's catch_up policy is 'none'")]
    assert split_due_fires([late], NOW, 60, "once").run == [late], "only 'none' drops a late fire in the window"
