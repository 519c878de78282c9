"""The ``SCHEDULER`` settings dict, with its defaults, read at the time of use."""

from __future__ import annotations

from typing import Any

from django.conf import settings

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
    # Threads that run tasks in one scheduler process.
    "MAX_WORKERS": 20,
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
}


def get(key: str) -> Any:
    configured = getattr(settings, "SCHEDULER", None) or {}
    return configured.get(key, DEFAULTS[key])


def unknown_keys() -> list[str]:
    configured = getattr(settings, "SCHEDULER", None) or {}
    return sorted(set(configured) - set(DEFAULTS))
