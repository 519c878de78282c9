"""Answers that no view gives: JSON errors on API paths, and URLs that carry a NUL byte.

* Under the API's prefix (``/scheduler/`` as mounted), an error answered by plain Django rather than
  by a DRF view (a 405 of the metrics or health views, a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``,
  Django's 400 and 500 pages) is turned into the API's ``{"detail": ..., "code": ...}`` JSON, with its
  status and headers (``Allow``, ``WWW-Authenticate``, ``Retry-After``) kept. CSRF failures get the
  reason through ``csrf_failure`` (``settings.CSRF_FAILURE_VIEW``).
* A NUL byte can be in no URL of ours, and PostgreSQL refuses it in a query with an error (a 500):
  a path with one is not found (404), and outside the API a query string with one is a 400. The API
  checks its own query parameters, naming the bad one. A cookie with one (a quoted ``"\\000"``
  decodes to NUL) is treated as absent: a session key with a NUL would otherwise reach the sessions
  table on every page.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.core.exceptions import BadRequest
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import NoReverseMatch, reverse
from django.views import csrf

CODES = {
    400: "bad_request",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    500: "server_error",
}
KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


def api_prefix() -> str | None:
    try:
        return reverse("scheduler-api:root")
    except NoReverseMatch:  # the API is not mounted in this project
        return None


def is_api_path(path: str) -> bool:
    prefix = api_prefix()
    return prefix is not None and (path + "/").startswith(prefix)


def json_error(status: int, detail: str, code: str | None = None) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code or CODES.get(status, "error")}, status=status)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW``: JSON with the reason on API paths, Django's page elsewhere."""
    if is_api_path(request.path):
        return json_error(403, f"CSRF Failed: {reason}")
    return csrf.csrf_failure(request, reason)


class ErrorsMiddleware:
    """Put it first after ``SecurityMiddleware``, so that it sees every other layer's answer."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        api = is_api_path(request.path)
        if "\x00" in request.path:
            if api:
                return json_error(404, "no such endpoint: the path contains a NUL character")
            raise Http404("The path contains a NUL character.")
        if not api and any("\x00" in key + "".join(values) for key, values in request.GET.lists()):
            raise BadRequest("The query string contains a NUL character.")
        if any("\x00" in key + value for key, value in request.COOKIES.items()):
            request.COOKIES = {k: v for k, v in request.COOKIES.items() if "\x00" not in k + v}
        response = self.get_response(request)
        if api and response.status_code >= 400 and not self._is_json(response):
            response = self._as_json(response)
        return response

    @staticmethod
    def _is_json(response: HttpResponse) -> bool:
        media_type = response.get("Content-Type", "").split(";", 1)[0].strip().lower()
        # DRF answers negotiate their own format (the browsable API's HTML pages included).
        return media_type.endswith(("/json", "+json")) or hasattr(response, "accepted_renderer")

    @staticmethod
    def _as_json(response: HttpResponse) -> JsonResponse:
        status = response.status_code
        try:
            detail = HTTPStatus(status).phrase + "."
        except ValueError:
            detail = "Error."
        converted = json_error(status, detail)
        for header in KEPT_HEADERS:
            if header in response:
                converted[header] = response[header]
        return converted
