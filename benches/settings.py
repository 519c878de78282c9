"""Settings for benchmark processes: a throw-away database from ``DATABASE_URL`` and generated tasks.

``BENCH_TASKS``/``BENCH_INTERVAL`` size the task set (see ``benches.tasks``); ``BENCH_DJANGO_Q=1``
adds django-q2 with its ORM broker for the baseline runs.
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-" + "x7Kq2Lm9Pz4Rt8Vw3Yb6Nc1Hd5Jf0Gs")
if "DATABASE_URL" not in os.environ:
    # Never the project's db.sqlite3: the runner always points us at a temporary database.
    raise RuntimeError("benches.settings needs DATABASE_URL (the bench runner sets it)")

from scheduler_project.settings import *  # noqa: F403
from scheduler_project.settings import INSTALLED_APPS, SCHEDULER

DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The same dotted paths benches.tasks creates; not imported here, settings load before the apps.
SCHEDULER = {
    **SCHEDULER,
    "TASKS": [f"benches.tasks.Noop{index:05d}" for index in range(int(os.environ.get("BENCH_TASKS", "0")))],
    "POLL_INTERVAL": float(os.environ.get("BENCH_POLL_INTERVAL", "1.0")),
}
if os.environ.get("BENCH_MAX_WORKERS"):
    SCHEDULER["MAX_WORKERS"] = int(os.environ["BENCH_MAX_WORKERS"])

if os.environ.get("BENCH_DJANGO_Q") == "1":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_q"]
    Q_CLUSTER = {
        "name": "bench",
        "orm": "default",
        "workers": int(os.environ.get("BENCH_Q_WORKERS", "2")),
        "timeout": 60,
        "retry": 120,
        "queue_limit": 500,
        "bulk": 10,
        "catch_up": False,
        "save_limit": 0,
        "log_level": "INFO",
    }


if os.environ.get("BENCH_SWITCH_INTERVAL"):
    import sys

    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

# The fleet benchmark (benches.fleet): django-tasks-db's queue on the same database, "fleet" its alias;
# BENCH_EXECUTOR chooses where every task runs ("local" or "fleet").
if os.environ.get("BENCH_FLEET") == "1":
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]
    TASKS = {
        "default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
        "fleet": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    }
    SCHEDULER["EXECUTOR"] = os.environ.get("BENCH_EXECUTOR", "local")

import sys  # noqa: E402

if os.environ.get("BENCH_PIN") and "runscheduler" in sys.argv:
    os.sched_setaffinity(0, {int(os.environ["BENCH_PIN"])})
