"""The ``SCHEDULER`` settings dict, with its defaults, read at the time of use (a replaced dict is
seen through Django's ``setting_changed``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Dotted paths of BaseTask subclasses to register in every process.
    "TASKS": [],
    # Seconds a run may take when its task sets no `timeout` (the seed's TaskRunner default).
    "DEFAULT_TIMEOUT": 3600,
    # Execution records older than this many days are deleted by the `prune_history` task.
    "HISTORY_RETENTION_DAYS": 30,
    # Seconds between two looks at the database for configuration changes and manual triggers,
    # and between two heartbeats of a scheduler or command process.
    "POLL_INTERVAL": 1.0,
    # A process whose heartbeat is older than this many seconds is dead; also the leader lease.
    "LEASE_SECONDS": 10.0,
    # Seconds a stopping scheduler waits for running tasks before marking them `interrupted`.
    "SHUTDOWN_GRACE": 10.0,
    # Seconds an accepted manual run waits for its task's current run to end (when the task does
    # not allow concurrent runs) before it is recorded `skipped`; counted from when it was queued,
    # or from when this scheduler began to lead if that was later.
    "MANUAL_RUN_MAX_WAIT": 600.0,
    # Threads that run tasks in one scheduler process.
    "MAX_WORKERS": 20,
    # Where runs execute (a task's `executor` attribute overrides it): "local" (the threads above) or
    # the alias of a django.tasks backend in settings.TASKS, whose workers run them (README: Scaling out).
    "EXECUTOR": "local",
    # Seconds a run handed to a backend may wait for a worker: then the leading scheduler records it
    # `missed` and frees its task (no worker up, or the backend lost it).
    "FLEET_QUEUE_MAX_WAIT": 600.0,
    # Default catch-up window: a fire processed later than this many seconds after its time is
    # recorded as `missed`, not run (a task's `catch_up_window_seconds` overrides it). Fires missed
    # within the window run once (the newest), unless the task's `catch_up` is "none".
    "MISFIRE_GRACE_SECONDS": 60,
    # Seconds between two writes of the APScheduler job store's next run times to the database.
    "JOBSTORE_FLUSH_INTERVAL": 1.0,
    # REST API (/scheduler/): dotted paths of DRF permission classes. Reading needs all READ classes;
    # a change (trigger, enable, disable, reschedule) needs an authenticated user and all WRITE classes.
    "API_READ_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "API_WRITE_PERMISSION_CLASSES": ["scheduler_app.api.permissions.CanOperateTasks"],
    # History pages: default size and the largest a client may ask for with ?page_size=.
    "API_PAGE_SIZE": 50,
    "API_MAX_PAGE_SIZE": 500,
    # Prometheus metrics (/scheduler/metrics). Staff users (session or basic auth) may always read;
    # so may a request with `Authorization: Bearer <token>` when the environment variable named here
    # holds a token. True opens the metrics to anyone who can reach the URL.
    "METRICS_ALLOW_ANONYMOUS": False,
    "METRICS_TOKEN_ENV": "SCHEDULER_METRICS_TOKEN",
    # Health: a scheduler whose heartbeat is older than this many seconds is not alive
    # (None: LEASE_SECONDS, the same rule that reaps dead processes).
    "HEALTH_MAX_HEARTBEAT_AGE": None,
    # Failure alerts: sent when a task fails or times out this many times in a row (a task's
    # `alert_after_failures` overrides it; 0 turns alerts off), once per streak, and once more when
    # it succeeds again. Delivered to settings.ADMINS by mail (when ALERT_EMAIL and ADMINS is set)
    # and/or as a JSON POST to ALERT_WEBHOOK_URL, from a background thread.
    "ALERT_AFTER_FAILURES": 1,
    "ALERT_EMAIL": True,
    "ALERT_WEBHOOK_URL": "",
    # Extra HTTP headers of the webhook POST (e.g. {"Authorization": "Bearer ..."}), and its timeout.
    "ALERT_WEBHOOK_HEADERS": {},
    "ALERT_WEBHOOK_TIMEOUT": 5.0,
}


# The SCHEDULER dict, looked up once: every run asks for a few keys, and each lookup through
# ``settings`` costs more than the rest of get(). The dict itself is kept, so a change made in
# it is seen; replacing it (``override_settings``, pytest's ``settings``) clears this.
_configured: dict[str, Any] | None = None


def _scheduler() -> dict[str, Any]:
    global _configured
    configured = _configured
    if configured is None:
        configured = _configured = getattr(settings, "SCHEDULER", None) or {}
    return configured


@receiver(setting_changed)
def _forget_scheduler(setting: str, **kwargs: Any) -> None:
    global _configured
    if setting == "SCHEDULER":
        _configured = None


def get(key: str) -> Any:
    return _scheduler().get(key, DEFAULTS[key])


def unknown_keys() -> list[str]:
    configured = getattr(settings, "SCHEDULER", None) or {}
    return sorted(set(configured) - set(DEFAULTS))
