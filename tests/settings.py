"""Settings for the test suite and for the processes it starts (runscheduler, the web server).

The database is a file (SQLite) or a server (PostgreSQL), never SQLite's in-memory database:
tests share it with the scheduler and web processes they start.
"""

import os
from pathlib import Path

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-" + "x7Kq2Lm9Pz4Rt8Vw3Yb6Nc1Hd5Jf0Gs")
# A developer's scheduler_project/local_settings.py stays out of the suite.
os.environ.setdefault("SCHEDULER_LOCAL_SETTINGS", "")

from scheduler_project.settings import *  # noqa: F403
from scheduler_project.settings import BASE_DIR, DATABASES, INSTALLED_APPS, SCHEDULER

DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, so that subprocesses see the test database; one per pytest process.
    test_db = Path(os.environ.get("TEST_DB_DIR", BASE_DIR / "var")) / f"test-{os.getpid()}.sqlite3"
    DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get("TEST_DB_PATH", str(test_db))

# Subprocesses name the tasks they need; the test process registers all test tasks.
_tasks = os.environ.get("TEST_SCHEDULER_TASKS")
SCHEDULER = {
    **SCHEDULER,
    "TASKS": _tasks.split(",")
    if _tasks is not None and _tasks
    else (
        []
        if _tasks == ""
        else [
            *SCHEDULER["TASKS"],
            *[
                f"tests.tasks.{n}"
                for n in (
                    "TickTask",
                    "SlowTask",
                    "BoomTask",
                    "HangTask",
                    "AsyncHangTask",
                    "GarbageTask",
                    "LongTask",
                    "CronTask",
                )
            ],
        ]
    ),
    "POLL_INTERVAL": float(os.environ.get("TEST_POLL_INTERVAL", "0.25")),
    "LEASE_SECONDS": float(os.environ.get("TEST_LEASE_SECONDS", "3")),
    "SHUTDOWN_GRACE": float(os.environ.get("TEST_SHUTDOWN_GRACE", "3")),
    "MISFIRE_GRACE_SECONDS": float(os.environ.get("TEST_MISFIRE_GRACE_SECONDS", "60")),
    "DEFAULT_TIMEOUT": float(os.environ.get("TEST_DEFAULT_TIMEOUT", "3600")),
    "MANUAL_RUN_MAX_WAIT": float(os.environ.get("TEST_MANUAL_RUN_MAX_WAIT", "600")),
    "EXECUTOR": os.environ.get("TEST_EXECUTOR", "local"),
    "FLEET_QUEUE_MAX_WAIT": float(os.environ.get("TEST_FLEET_QUEUE_MAX_WAIT", "600")),
    "ALERT_WEBHOOK_TIMEOUT": float(os.environ.get("TEST_ALERT_WEBHOOK_TIMEOUT", "5")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"scheduler_app": {"handlers": ["console"], "level": "INFO"}},
}

# The fleet (README: Scaling out): the "fleet" backend is django-tasks-db's database queue, whose
# workers (`manage.py db_worker --backend fleet`) the fleet tests start. Only where django.tasks and
# django-tasks-db exist (not in the Django 5.2 pass: those tests carry the `fleet` marker).
try:
    import django.tasks
    import django_tasks_db  # noqa: F401
except ImportError:
    pass
else:
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]
    TASKS = {
        "default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
        "fleet": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    }

# The second engine: RQ workers (`manage.py rqworker --worker-class rq.worker.SimpleWorker --job-class
# django_tasks_rq.backend.Job`) on a throw-away redis-server that tests/test_executors.py starts.
try:
    import django.tasks  # noqa: F401
    import django_rq  # noqa: F401
    import django_tasks_rq  # noqa: F401
except ImportError:
    pass
else:
    INSTALLED_APPS = [*INSTALLED_APPS, "django_rq"]
    RQ_QUEUES = {"default": {"URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")}}
    TASKS = {**TASKS, "rq": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]}}
