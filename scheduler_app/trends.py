"""A task's recent success rate and duration trend, drawn as a small inline SVG (no JavaScript).

Shown on the task's admin page: one query for the latest runs that ran (skipped and missed fires
ran nothing and are left out). The line is the run duration; the strip beneath has one square per
run, coloured by its outcome; each point names its run and links to its record.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

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


def render_trend(trend: Trend) -> SafeString:
    if not trend.points:
        return mark_safe('<p class="sched-no-runs">No runs yet.</p>')
    points = trend.points
    top = trend.max_duration or 0.0
    width = PAD * 2 + STEP * (len(points) - 1) + STRIP
    height = CHART_HEIGHT + STRIP + PAD * 2

    def x(i: int) -> float:
        return PAD + STRIP / 2 + i * STEP

    def y(duration: float) -> float:
        # Longest run at the top; all equal (or all zero) draws a flat line in the middle.
        share = duration / top if top > 0 else 0.5
        return PAD + (1 - share) * (CHART_HEIGHT - PAD)

    line = " ".join(f"{x(i):.1f},{y(p.duration):.1f}" for i, p in enumerate(points))

    def when(p: Point) -> str:
        return timezone.localtime(p.started_at).strftime("%Y-%m-%d %H:%M:%S %Z") if p.started_at else "?"

    def label(p: Point) -> str:
        return f"#{p.id} {p.status}, {seconds(p.duration)}, {when(p)}"

    def link(p: Point) -> str:
        return reverse("admin:scheduler_app_taskexecutionrecord_change", args=[p.id])

    dots = format_html_join(
        "",
        '<a href="{}"><circle class="sched-trend-point" data-status="{}" cx="{}" cy="{}" r="2.5" '
        'fill="{}"><title>{}</title></circle></a>',
        (
            (link(p), p.status, f"{x(i):.1f}", f"{y(p.duration):.1f}", status_colour(p.status), label(p))
            for i, p in enumerate(points)
        ),
    )
    strip = format_html_join(
        "",
        '<a href="{}"><rect class="sched-trend-run" data-status="{}" x="{}" y="{}" width="{}" height="{}" '
        'fill="{}"><title>{}</title></rect></a>',
        (
            (
                link(p),
                p.status,
                f"{x(i) - STRIP / 2 + 1:.1f}",
                CHART_HEIGHT + PAD,
                STRIP - 2,
                STRIP,
                status_colour(p.status),
                label(p),
            )
            for i, p in enumerate(points)
        ),
    )
    rate = trend.success_rate or 0.0
    summary = (
        f"{trend.successes} of the last {len(points)} runs succeeded ({rate:.0%}); "
        f"duration median {seconds(trend.median_duration or 0.0)}, longest {seconds(top)}"
    )
    # What the drawing means, beside it: the line's scale and the runs at both ends.
    axis = format_html(
        '<p class="sched-trend-axis">line: run duration, from 0 (bottom) to {} (top); squares: outcome, '
        "in the result badges' colours (green success, red failed or timeout, orange interrupted); "
        "from #{} ({}) to #{} ({})</p>",
        seconds(top),
        points[0].id,
        when(points[0]),
        points[-1].id,
        when(points[-1]),
    )
    return format_html(
        '<div class="sched-trend"><svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" '
        'role="img" aria-label="{}"><title>{}</title>'
        '<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5" stroke-linejoin="round"/>{}{}</svg>'
        '<p class="sched-trend-summary">{}</p>{}</div>',
        width,
        height,
        width,
        height,
        summary,
        summary,
        line,
        LINE,
        dots,
        strip,
        summary,
        axis,
    )
