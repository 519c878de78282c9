"""The project's settings in production: ``check --deploy`` is clean with the README's environment,
weak secret keys are refused at start, HTTPS switches, and 500s leave a traceback in the log."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management.utils import get_random_secret_key
from django.test import Client
from django.test.utils import override_settings
from django.utils.log import configure_logging

ROOT = Path(__file__).resolve().parent.parent


def production_env() -> dict[str, str]:
    """The README's production block, with a fresh random key in place of the placeholder."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- production-env -->\n```ini\n(.*?)```", readme, re.S)
    assert block, "README.md lost its production environment block"
    env = dict(line.split("=", 1) for line in block.group(1).splitlines() if line.strip())
    assert env["DJANGO_SECRET_KEY"].startswith("<")
    env["DJANGO_SECRET_KEY"] = get_random_secret_key()
    return env


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SCHEDULER_", "TEST_"))}
    clean["DJANGO_SETTINGS_MODULE"] = "scheduler_project.settings"
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_production_environment() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_without_the_https_switches_check_deploy_names_what_is_missing() -> None:
    env = {k: v for k, v in production_env().items() if not k.startswith(("DJANGO_HTTPS", "DJANGO_SECURE_HSTS"))}
    result = manage("check", "--deploy", **env)
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr + result.stdout, warning


@pytest.mark.parametrize(
    "key",
    ["short", "a" * 60, "ab" * 40, "django-insecure-" + get_random_secret_key()],
    ids=["short", "one-character", "two-characters", "django-insecure"],
)
def test_a_weak_secret_key_is_refused_at_start_with_one_clear_line(key: str) -> None:
    result = manage("check", DJANGO_SECRET_KEY=key)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one clear line, no traceback (manage.py)
    assert lines[0].startswith("manage.py: DJANGO_SECRET_KEY is too weak: "), lines[0]
    assert "get_random_secret_key" in lines[0]


def test_a_strong_secret_key_starts() -> None:
    result = manage("check", DJANGO_SECRET_KEY=get_random_secret_key())
    assert result.returncode == 0, result.stderr


def test_https_settings_follow_the_environment() -> None:
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_PROXY_SSL_HEADER, s.REST_FRAMEWORK['NUM_PROXIES'], s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'])"
    )
    result = manage("shell", "--no-imports", "-c", code, **production_env(), SCHEDULER_API_USER_RATE="100/minute")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "True True True 31536000 ('HTTP_X_FORWARDED_PROTO', 'https') 1 "
        "{'anon': None, 'user': '100/minute', 'failed_auth': '10/minute'}"
    )
    plain = manage("shell", "--no-imports", "-c", code, DJANGO_SECRET_KEY=get_random_secret_key())
    assert plain.stdout.strip().startswith("False False False 0 None 0 ")


@pytest.mark.django_db
def test_ssl_redirect_spares_the_health_checks_and_hsts_is_sent() -> None:
    with override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=3600):
        client = Client()
        redirected = client.get("/scheduler/status")
        assert redirected.status_code == 301 and redirected["Location"].startswith("https://")
        assert client.get("/scheduler/health/live").status_code == 200
        secure = client.get("/scheduler/health/live", secure=True)
        assert secure["Strict-Transport-Security"].startswith("max-age=3600")


@pytest.fixture
def request_log() -> Any:
    """What the project's own LOGGING (the tests' settings replace it) writes for ``django.request``,
    read from its stderr handler, whose stream is swapped for a buffer; restored afterwards."""
    from scheduler_project import settings as project

    configure_logging(settings.LOGGING_CONFIG, project.LOGGING)
    handlers = [h for h in logging.getLogger("django.request").handlers if isinstance(h, logging.StreamHandler)]
    assert len(handlers) == 1 and handlers[0].stream is sys.stderr
    buffer = io.StringIO()
    handlers[0].setStream(buffer)
    yield buffer
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


@pytest.mark.django_db
def test_an_unhandled_exception_is_logged_with_its_traceback(request_log: io.StringIO, monkeypatch: Any) -> None:
    from django.contrib.auth.models import User

    from scheduler_app.api import views

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug nobody saw coming")

    monkeypatch.setattr(views, "all_tasks", broken)
    assert not settings.DEBUG and not settings.ADMINS
    client = Client(raise_request_exception=False)
    client.force_login(User.objects.create_user("reader"))
    assert client.get("/scheduler/tasks").status_code == 500
    assert client.get("/scheduler/nothing").status_code == 404  # client errors are no errors of ours
    logged = request_log.getvalue()
    assert "ERROR django.request Internal Server Error: /scheduler/tasks" in logged, logged
    assert "Traceback (most recent call last)" in logged and "RuntimeError: a bug nobody saw coming" in logged
    assert "/scheduler/nothing" not in logged
