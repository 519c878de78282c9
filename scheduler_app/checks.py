"""System checks: configuration mistakes fail ``manage.py check`` (and every command) with a clear
message that names the task, instead of a traceback in the scheduler at 2 a.m."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register

from scheduler_app import conf
from scheduler_app.executors import LOCAL, backend_problem
from scheduler_app.registry import task_registry
from scheduler_app.validation import timeout_error

NUMBER_KEYS = {
    "DEFAULT_TIMEOUT": "seconds",
    "HISTORY_RETENTION_DAYS": "days",
    "POLL_INTERVAL": "seconds",
    "LEASE_SECONDS": "seconds",
    "SHUTDOWN_GRACE": "seconds",
    "MANUAL_RUN_MAX_WAIT": "seconds",
    "FLEET_QUEUE_MAX_WAIT": "seconds",
    "MAX_WORKERS": "threads",
    "MISFIRE_GRACE_SECONDS": "seconds",
    "JOBSTORE_FLUSH_INTERVAL": "seconds",
    "API_PAGE_SIZE": "records",
    "API_MAX_PAGE_SIZE": "records",
}


@register("scheduler")
def check_scheduler_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    tasks = conf.get("TASKS")
    if not isinstance(tasks, list | tuple) or not all(isinstance(p, str) for p in tasks):
        messages.append(
            Error(
                "SCHEDULER['TASKS'] must be a list of dotted paths to BaseTask subclasses.",
                hint='e.g. "TASKS": ["scheduler_app.tasks.CrawlSiteTask"]',
                id="scheduler.E001",
            )
        )
    for key, unit in NUMBER_KEYS.items():
        value = conf.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            messages.append(
                Error(
                    f"SCHEDULER[{key!r}] must be a number of {unit} greater than 0 (got {value!r}).",
                    id="scheduler.E002",
                )
            )
    default_timeout = conf.get("DEFAULT_TIMEOUT")
    # Not a positive number at all: E002 above says so.
    positive = (
        isinstance(default_timeout, int | float) and not isinstance(default_timeout, bool) and default_timeout > 0
    )
    if positive and (message := timeout_error(default_timeout)):
        # The same bound as a task's own timeout (validation.py), for the same reason.
        messages.append(Error(f"SCHEDULER['DEFAULT_TIMEOUT']: {message}.", id="scheduler.E004"))
    if float(conf.get("LEASE_SECONDS") or 0) <= 2 * float(conf.get("POLL_INTERVAL") or 0):
        messages.append(
            Error(
                "SCHEDULER['LEASE_SECONDS'] must be more than twice SCHEDULER['POLL_INTERVAL'], "
                "or a healthy scheduler loses its lease between two heartbeats.",
                id="scheduler.E003",
            )
        )
    for key in conf.unknown_keys():
        messages.append(
            Warning(
                f"SCHEDULER[{key!r}] is not a known setting and is ignored.",
                hint="Known: " + ", ".join(sorted(conf.DEFAULTS)),
                id="scheduler.W001",
            )
        )
    return messages


@register("scheduler")
def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        Error(
            f"SCHEDULER['TASKS'] entry {error.path!r}: {error.message}",
            hint="Fix the task class or remove it from SCHEDULER['TASKS'].",
            obj=error.path,
            id="scheduler.E010",
        )
        for error in task_registry.load_errors
    ]


@register("scheduler")
def check_executors(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Where runs execute (README: Scaling out): "local" or a django.tasks backend fit for the fleet."""
    hint = "Use 'local' (in-process) or the alias of a worker-backed backend in settings.TASKS (README: Scaling out)."
    messages: list[CheckMessage] = []
    default = conf.get("EXECUTOR")
    if not isinstance(default, str) or not default:
        messages.append(
            Error(f"SCHEDULER['EXECUTOR'] must be a backend alias (got {default!r}).", hint=hint, id="scheduler.E060")
        )
    elif problem := backend_problem(default):
        messages.append(Error(f"SCHEDULER['EXECUTOR'] = {default!r}: {problem}.", hint=hint, id="scheduler.E060"))
    for task in task_registry:
        alias = getattr(task, "executor", None)
        if alias is None or alias == LOCAL:
            continue
        if not isinstance(alias, str) or not alias:
            problem = f"must be a backend alias or None (got {alias!r})"
        else:
            problem = backend_problem(alias)
        if problem:
            messages.append(
                Error(
                    f"task {task.name!r}: executor {alias!r}: {problem}.", hint=hint, obj=task.name, id="scheduler.E061"
                )
            )
    return messages


@register("scheduler")
def check_api_permissions(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The API's permission classes are imported per request; a typo must fail here, not as a 500."""
    from django.utils.module_loading import import_string
    from rest_framework.permissions import BasePermission

    messages: list[CheckMessage] = []
    for key in ("API_READ_PERMISSION_CLASSES", "API_WRITE_PERMISSION_CLASSES"):
        paths = conf.get(key)
        if not isinstance(paths, list | tuple) or not all(isinstance(p, str) for p in paths):
            messages.append(Error(f"SCHEDULER[{key!r}] must be a list of dotted paths.", id="scheduler.E020"))
            continue
        for path in paths:
            try:
                cls = import_string(path)
            except ImportError as exc:
                messages.append(Error(f"SCHEDULER[{key!r}]: cannot import {path!r}: {exc}", id="scheduler.E021"))
                continue
            if not (isinstance(cls, type) and issubclass(cls, BasePermission)):
                messages.append(
                    Error(f"SCHEDULER[{key!r}]: {path!r} is not a DRF permission class.", id="scheduler.E021")
                )
    return messages


# records.py claims and records a burst of fires with INSERT/UPDATE ... RETURNING.
MIN_SQLITE = (3, 35)


@register("scheduler")
def check_sqlite_version(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django.conf import settings

    return sqlite_version_errors(settings.DATABASES)


def sqlite_version_errors(databases: dict[str, dict[str, Any]]) -> list[CheckMessage]:
    import sqlite3

    if sqlite3.sqlite_version_info >= MIN_SQLITE:
        return []
    return [
        Error(
            f"DATABASES[{alias!r}] uses SQLite {sqlite3.sqlite_version}; the scheduler needs SQLite "
            f"{'.'.join(map(str, MIN_SQLITE))} or newer (for RETURNING).",
            hint="Use a Python built against a newer SQLite, or PostgreSQL (DATABASE_URL).",
            id="scheduler.E040",
        )
        for alias, database in databases.items()
        if database.get("ENGINE", "").endswith("sqlite3")
    ]


@register("scheduler")
def check_sqlite_options(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django.conf import settings

    return sqlite_option_warnings(settings.DATABASES)


def sqlite_option_warnings(databases: dict[str, dict[str, Any]]) -> list[CheckMessage]:
    """The app leaves DATABASES to the host project; SQLite without these options is not safe for it.

    The scheduler, the web process and commands write to one file at once: without BEGIN IMMEDIATE a
    read-to-write upgrade fails at once with "database is locked", and without WAL readers block writers.
    """
    from scheduler_app.db import SQLITE_OPTIONS

    messages: list[CheckMessage] = []
    for alias, database in databases.items():
        if not database.get("ENGINE", "").endswith("sqlite3"):
            continue
        options = database.get("OPTIONS") or {}
        missing = []
        if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
            missing.append('"transaction_mode": "IMMEDIATE"')
        if "journal_mode=wal" not in str(options.get("init_command", "")).lower().replace(" ", ""):
            missing.append('"init_command": "PRAGMA journal_mode=WAL; ..."')
        if missing:
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}] is SQLite without {' and '.join(missing)} in its OPTIONS: the "
                    "scheduler and web processes writing at once can fail with 'database is locked'.",
                    hint=f"Set DATABASES[{alias!r}]['OPTIONS'] to include {SQLITE_OPTIONS!r} "
                    "(README: Use it in your own project).",
                    id="scheduler.W051",
                )
            )
    return messages
