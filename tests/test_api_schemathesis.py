"""schemathesis against the API's own OpenAPI schema: no 5xx, no answer that breaks the schema.

Requests go through Django's real WSGI application and the real test database, as a staff user
(Basic auth), so that every operation, including the ones that change tasks, is exercised; and
as a plain user and anonymously, so that the refusals conform too.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import ignored_auth

PASSWORD = "schemathesis-pass"


def basic(username: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()}


# Staff exercise every operation; a plain user and an anonymous client the refusals.
HEADERS = {"staff": basic("fuzz-staff"), "reader": basic("fuzz-reader"), "anonymous": {}}


def served_schema() -> dict[str, Any]:
    """The document /scheduler/schema serves, built by the same view code, without a request."""
    from drf_spectacular.settings import patched_settings

    from scheduler_app.api.urls import SchemaView

    with patched_settings(SchemaView.custom_settings):
        generator = SchemaView.generator_class(urlconf=SchemaView.urlconf, api_version=SchemaView.api_version)
        return generator.get_schema(request=None, public=True)


schema = schemathesis.openapi.from_dict(served_schema())
schema.app = get_wsgi_application()


@pytest.fixture
def wsgi_users(db: None) -> Iterator[None]:
    from django.contrib.auth.models import User
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from tests.users import grant_operate

    grant_operate(User.objects.create_user("fuzz-staff", password=PASSWORD, is_staff=True))
    User.objects.create_user("fuzz-reader", password=PASSWORD)
    # As Django's test client does: a request's start and end must not close the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def test_the_fuzzed_schema_is_the_served_one(admin_client) -> None:
    response = admin_client.get("/scheduler/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert response.json() == served_schema()
    # `manage.py spectacular` (the project's SPECTACULAR_SETTINGS) writes the same document.
    from drf_spectacular.generators import SchemaGenerator

    assert SchemaGenerator().get_schema(request=None, public=True) == served_schema()


@schema.parametrize()
@pytest.mark.parametrize("who", list(HEADERS))
@settings(max_examples=60, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, who: str, wsgi_users: None) -> None:
    # `ignored_auth` is left out: it swaps one credential for a bad one while the Basic header we
    # send stays valid, which rightly authenticates. tests/test_api.py covers anonymous requests.
    response = case.call_and_validate(headers=HEADERS[who], excluded_checks=[ignored_auth])
    # Besides the documented operations, schemathesis tries the other methods on each path.
    if who != "staff" and case.method.upper() not in ("GET", "HEAD", "OPTIONS"):
        assert response.status_code in (401, 403, 404, 405), "only staff may change tasks"
    if who == "anonymous":
        assert response.status_code in (401, 403, 404), "anonymous users read nothing"
