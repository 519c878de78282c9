"""Settings of the deployable project. Secrets and deployment choices come from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
import django
from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured

from scheduler_app.api.schema import SCHEMA_SETTINGS as API_SCHEMA_SETTINGS
from scheduler_app.db import database_options

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None


def weak_secret_key(key: str) -> str | None:
    """Why Django's deploy check would call this key weak (security.W009), or None."""
    if key.startswith(SECRET_KEY_INSECURE_PREFIX):
        return f"it starts with {SECRET_KEY_INSECURE_PREFIX!r}, the mark of a key generated for development"
    if len(key) < SECRET_KEY_MIN_LENGTH or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS:
        return (
            f"it has {len(key)} characters, {len(set(key))} different; at least {SECRET_KEY_MIN_LENGTH} and "
            f"{SECRET_KEY_MIN_UNIQUE_CHARACTERS} are needed"
        )
    return None


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=1 for local development).")
    # Development only: never used when DEBUG is off.
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"
elif problem := weak_secret_key(SECRET_KEY):
    raise ImproperlyConfigured(
        f"DJANGO_SECRET_KEY is too weak: {problem}. Make one with: python -c "
        '"from django.core.management.utils import get_random_secret_key; print(get_random_secret_key())"'
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# HTTPS (README: Deployment). DJANGO_HTTPS=1 says the site is served over HTTPS only: cookies are sent
# over HTTPS only, plain HTTP is redirected and browsers are told (HSTS) to use HTTPS for a year. Each
# part has its own variable. DJANGO_SECURE_PROXY_SSL_HEADER=1 trusts a proxy's X-Forwarded-Proto
# (only behind a proxy that sets it and strips it from clients).
HTTPS = env_bool("DJANGO_HTTPS", False)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", HTTPS)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", HTTPS)
# Load balancers probe the health checks over plain HTTP, often by IP.
SECURE_REDIRECT_EXEMPT = [r"^scheduler/health/"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI files served from here, not a CDN
    "django_apscheduler",
    "scheduler_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # JSON errors on API paths, NUL bytes in URLs (scheduler_app/middleware.py).
    "scheduler_app.middleware.ErrorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

CSRF_FAILURE_VIEW = "scheduler_app.middleware.csrf_failure"

ROOT_URLCONF = "scheduler_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "scheduler_project.wsgi.application"
ASGI_APPLICATION = "scheduler_project.asgi.application"

DATABASES = {
    "default": database_options(
        dj_database_url.parse(os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # Refuses logins from an address past its failed tries, before any password is hashed.
    "scheduler_app.api.throttling.FailedLoginGate",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "scheduler_app.api.authentication.TokenAuthentication",
        "scheduler_app.api.authentication.BasicAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # scheduler_app.api.throttling: requests per client ("100/minute", ...; unset: no limit) and failed
    # password checks per client address (default 10/minute). 429 with Retry-After past them.
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("SCHEDULER_API_ANON_RATE") or None,
        "user": os.environ.get("SCHEDULER_API_USER_RATE") or None,
        "failed_auth": os.environ.get("SCHEDULER_API_FAILED_AUTH_RATE") or "10/minute",
    },
    # Proxies in front of the web process whose X-Forwarded-For entries say who the client is.
    "NUM_PROXIES": env_int("DJANGO_NUM_PROXIES", 0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Scheduler API",
    "DESCRIPTION": "See, enable, disable, reschedule and trigger scheduled tasks.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    **API_SCHEMA_SETTINGS,
}

# Failure alerts by mail (README: Operations) go to ADMINS through the default mailer: SMTP settings
# from the environment; DJANGO_EMAIL_BACKEND=django.core.mail.backends.console.EmailBackend prints them.
# Django 6 lists ADMINS as addresses; 5.2 wants (name, address) pairs.
_admins = env_list("DJANGO_ADMINS")
ADMINS = _admins if django.VERSION >= (6, 0) else [(address, address) for address in _admins]
SERVER_EMAIL = os.environ.get("DJANGO_SERVER_EMAIL", "scheduler@localhost")
EMAIL_BACKEND_PATH = os.environ.get("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
_smtp = {
    "host": os.environ.get("DJANGO_EMAIL_HOST", "localhost"),
    "port": int(os.environ.get("DJANGO_EMAIL_PORT", "25")),
    "username": os.environ.get("DJANGO_EMAIL_USER", ""),
    "password": os.environ.get("DJANGO_EMAIL_PASSWORD", ""),
    "use_tls": os.environ.get("DJANGO_EMAIL_USE_TLS", "0") == "1",
    "timeout": 10,
}
if django.VERSION >= (6, 1):
    # MAILERS replaces EMAIL_BACKEND and the EMAIL_* settings (both at once are refused).
    MAILERS = {
        "default": {
            "BACKEND": EMAIL_BACKEND_PATH,
            # Options of the SMTP backend only: other backends refuse unknown options.
            "OPTIONS": _smtp if EMAIL_BACKEND_PATH.endswith("smtp.EmailBackend") else {},
        }
    }
else:
    EMAIL_BACKEND = EMAIL_BACKEND_PATH
    EMAIL_HOST, EMAIL_PORT = _smtp["host"], _smtp["port"]
    EMAIL_HOST_USER, EMAIL_HOST_PASSWORD = _smtp["username"], _smtp["password"]
    EMAIL_USE_TLS, EMAIL_TIMEOUT = _smtp["use_tls"], _smtp["timeout"]

SCHEDULER = {
    "TASKS": [
        "scheduler_app.tasks.CrawlSiteTask",
        "scheduler_app.tasks.SyncInventoryTask",
        "scheduler_app.tasks.PruneHistoryTask",
    ],
    "DEFAULT_TIMEOUT": 3600,
    "HISTORY_RETENTION_DAYS": int(os.environ.get("SCHEDULER_HISTORY_RETENTION_DAYS", "30")),
    # Failure alerts also go to settings.ADMINS by mail when ADMINS is set (README: Operations).
    "ALERT_WEBHOOK_URL": os.environ.get("SCHEDULER_ALERT_WEBHOOK_URL", ""),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # SCHEDULER_LOG_FORMAT=json: one JSON object per line, with task, run_id, trigger, duration.
        "json": {"()": "scheduler_app.logging.JSONFormatter"},
    },
    "filters": {"require_debug_false": {"()": "django.utils.log.RequireDebugFalse"}},
    "handlers": {
        "errors": {
            "class": "logging.StreamHandler",
            "level": "ERROR",
            "filters": ["require_debug_false"],
            "formatter": "json" if os.environ.get("SCHEDULER_LOG_FORMAT", "").lower() == "json" else "plain",
        },
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if os.environ.get("SCHEDULER_LOG_FORMAT", "").lower() == "json" else "plain",
        },
    },
    "loggers": {
        "scheduler_app": {"handlers": ["console"], "level": os.environ.get("SCHEDULER_LOG_LEVEL", "INFO")},
        # Every unhandled exception of a request, with its traceback: on stderr when DEBUG is off
        # (Django's own console handler covers DEBUG), and still by mail when ADMINS is set.
        "django.request": {"handlers": ["errors"]},
        "apscheduler": {"handlers": ["console"], "level": "WARNING"},
    },
}

# -- Own tasks without editing this file (README: "Writing a task") --------------------------------
# SCHEDULER_EXTRA_TASKS: comma-separated dotted paths, added to SCHEDULER["TASKS"]. A git-ignored
# scheduler_project/local_settings.py (or the file SCHEDULER_LOCAL_SETTINGS names; empty: none) runs
# here, in this module's namespace, so that it can change any setting: SCHEDULER["TASKS"] += [...].
SCHEDULER["TASKS"] += env_list("SCHEDULER_EXTRA_TASKS")
_local_settings = os.environ.get("SCHEDULER_LOCAL_SETTINGS", str(BASE_DIR / "scheduler_project" / "local_settings.py"))
if _local_settings and Path(_local_settings).is_file():
    exec(compile(Path(_local_settings).read_text(), _local_settings, "exec"))
# A task's own `logging.getLogger(__name__)` lines go to the console like the scheduler's: the
# top-level package of every task module logs at the scheduler's level.
for _package in sorted({path.split(".")[0] for path in SCHEDULER["TASKS"]} - set(LOGGING["loggers"])):
    LOGGING["loggers"][_package] = {**LOGGING["loggers"]["scheduler_app"], "propagate": False}
