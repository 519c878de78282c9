"""The admin's colours, in one place: result badges, the duration sparkline and the source badges.

Every colour carries white text in a badge, so each is dark enough for it (WCAG AA for small text).
"""

from __future__ import annotations

from scheduler_app.tasks.base import TaskStatus

NEUTRAL = "#6c757d"
ACTIVE = "#0d6efd"
OVERRIDE = "#b26a00"
ERROR = "#ba2121"
# Django's admin blue, for lines that are no outcome (the sparkline's duration line).
LINE = "#417690"

STATUS_COLOURS: dict[str, str] = {
    TaskStatus.SUCCESS: "#1e7e34",
    TaskStatus.FAILED: "#c62828",
    TaskStatus.TIMEOUT: "#c62828",
    TaskStatus.INTERRUPTED: "#d35400",
    TaskStatus.MISSED: "#d35400",
    TaskStatus.SKIPPED: NEUTRAL,
    TaskStatus.PENDING: ACTIVE,
    TaskStatus.QUEUED: ACTIVE,
    TaskStatus.RUNNING: ACTIVE,
}


def status_colour(status: str) -> str:
    return STATUS_COLOURS.get(status, NEUTRAL)
