"""A task's recent success rate and duration trend, drawn as a small inline SVG (no JavaScript).

Shown on the task's admin page: one query for the latest runs that ran (skipped and missed fires
ran nothing and are left out). The line is the run duration; the strip beneath has one square per
run, coloured by its outcome; each point names its run and links to its record. The markup is
templates/admin/scheduler_app/display/trend.html; here the geometry and the words.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.urls import reverse
from django.utils import timezone

from scheduler_app.models import TaskExecutionRecord
from scheduler_app.palette import LINE, status_colour
from scheduler_app.tasks.base import RAN_STATUSES, TaskStatus

TREND_RUNS = 30
STEP, PAD, CHART_HEIGHT, STRIP = 10, 4, 36, 8


@dataclass(frozen=True)
class Point:
    id: int
    status: str
    duration: float
    started_at: datetime | None


@dataclass(frozen=True)
class Trend:
    points: list[Point]

    @property
    def successes(self) -> int:
        return sum(p.status == TaskStatus.SUCCESS for p in self.points)

    @property
    def success_rate(self) -> float | None:
        return self.successes / len(self.points) if self.points else None

    @property
    def median_duration(self) -> float | None:
        return statistics.median(p.duration for p in self.points) if self.points else None

    @property
    def max_duration(self) -> float | None:
        return max(p.duration for p in self.points) if self.points else None


def task_trend(name: str, limit: int = TREND_RUNS) -> Trend:
    rows = (
        TaskExecutionRecord.objects.filter(task_id=name, status__in=RAN_STATUSES)
        .order_by("-pk")
        .values_list("pk", "status", "duration_seconds", "started_at")[:limit]
    )
    return Trend([Point(pk, status, float(duration or 0.0), started) for pk, status, duration, started in rows][::-1])


def seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def chart(trend: Trend) -> dict[str, Any]:
    """The drawing's geometry and words, for templates/admin/scheduler_app/display/trend.html."""
    points = trend.points
    if not points:
        return {"points": []}
    top = trend.max_duration or 0.0
    width = PAD * 2 + STEP * (len(points) - 1) + STRIP

    def x(i: int) -> float:
        return PAD + STRIP / 2 + i * STEP

    def y(duration: float) -> float:
        # Longest run at the top; all equal (or all zero) draws a flat line in the middle.
        share = duration / top if top > 0 else 0.5
        return PAD + (1 - share) * (CHART_HEIGHT - PAD)

    def when(p: Point) -> str:
        return timezone.localtime(p.started_at).strftime("%Y-%m-%d %H:%M:%S %Z") if p.started_at else "?"

    rate = trend.success_rate or 0.0
    return {
        "width": width,
        "height": CHART_HEIGHT + STRIP + PAD * 2,
        "line": " ".join(f"{x(i):.1f},{y(p.duration):.1f}" for i, p in enumerate(points)),
        "stroke": LINE,
        "points": [
            {
                "id": p.id,
                "status": p.status,
                "url": reverse("admin:scheduler_app_taskexecutionrecord_change", args=[p.id]),
                "x": f"{x(i):.1f}",
                "y": f"{y(p.duration):.1f}",
                "square_x": f"{x(i) - STRIP / 2 + 1:.1f}",
                "colour": status_colour(p.status),
                "label": f"#{p.id} {p.status}, {seconds(p.duration)}, {when(p)}",
                "when": when(p),
            }
            for i, p in enumerate(points)
        ],
        "square_y": CHART_HEIGHT + PAD,
        "square_width": STRIP - 2,
        "square_height": STRIP,
        "summary": (
            f"{trend.successes} of the last {len(points)} runs succeeded ({rate:.0%}); "
            f"duration median {seconds(trend.median_duration or 0.0)}, longest {seconds(top)}"
        ),
        "top": seconds(top),
    }
