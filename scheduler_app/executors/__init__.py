"""Where runs execute: in this process (``local``) or on the workers of a ``django.tasks`` backend.

``SCHEDULER["EXECUTOR"]`` chooses for every task, a task's ``executor`` attribute for itself. The
scheduler decides and records fires the same way whichever is chosen; with a backend, each claimed
run is handed over (``fleet.FleetExecutor``) and a worker process runs it (``worker.run_record``).
Nothing here imports ``django.tasks`` at import time: it exists from Django 6.0 (or as the
``django-tasks`` backport), and the app also runs on Django 5.2 without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from django.conf import settings

from scheduler_app import conf

LOCAL = "local"
NEEDS_FRAMEWORK = (
    "the fleet needs django.tasks: Django >= 6.0, or on Django 5.2 the django-tasks backport "
    "(pip install django-tasks, and 'django_tasks' in INSTALLED_APPS)"
)
# Backends that run nothing on a worker: the fleet would run nothing, or run in the scheduler's dispatch.
UNFIT_BACKENDS = {
    "ImmediateBackend": "runs the task at once in the process that enqueues it (the scheduler's dispatch), "
    "where a hung task would stop every other fire; use 'local' for in-process runs",
    "DummyBackend": "never runs the tasks enqueued to it",
}


def tasks_framework() -> ModuleType | None:
    """``django.tasks`` (Django >= 6.0) or the ``django_tasks`` backport; None when neither exists."""
    for name in ("django.tasks", "django_tasks"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def executor_alias(task: Any) -> str:
    """Where ``task``'s runs execute: its own ``executor``, else ``SCHEDULER["EXECUTOR"]``."""
    return getattr(task, "executor", None) or conf.get("EXECUTOR") or LOCAL


def backend_problem(alias: str) -> str | None:
    """Why runs cannot execute on ``alias`` (a sentence), or None when they can."""
    if alias == LOCAL:
        return None
    framework = tasks_framework()
    if framework is None:
        return NEEDS_FRAMEWORK
    configured = getattr(settings, "TASKS", None) or {}
    if alias not in configured:
        known = ", ".join(sorted(configured)) or "none"
        return f"{alias!r} is neither 'local' nor a backend in settings.TASKS (backends: {known})"
    try:
        backend = framework.task_backends[alias]
    except Exception as exc:  # the backend's own error: an import path, an option
        return f"the backend {alias!r} cannot be loaded: {exc}"
    for klass in type(backend).__mro__:
        if klass.__name__ in UNFIT_BACKENDS:
            return f"the backend {alias!r} ({type(backend).__name__}) {UNFIT_BACKENDS[klass.__name__]}"
    return None
