"""URLs of the API, included under ``/scheduler/`` here (a host project picks any prefix).

Every path works with and without a trailing slash."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http.response import HttpResponseBase
from django.urls import re_path, reverse
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.settings import patched_settings
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.exceptions import NotAuthenticated, PermissionDenied
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from scheduler_app import health, metrics
from scheduler_app.api import views
from scheduler_app.api.permissions import permissions_for
from scheduler_app.api.schema import SCHEMA_SETTINGS, mount_prefix

app_name = "scheduler-api"


class SchemaView(views.SchedulerAPIMixin, SpectacularAPIView):
    """The OpenAPI 3 schema of this API only (not of the admin), readable by whoever may read the API."""

    custom_settings = SCHEMA_SETTINGS

    # JSON first (errors too); YAML with ?format=yaml or by Accept header.
    renderer_classes = [OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer, OpenApiYamlRenderer2]

    def get_permissions(self):
        return permissions_for(self.request.method)

    @extend_schema(exclude=True)  # as drf-spectacular's own get(): not an endpoint of the API
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Operation ids and tags stay the same wherever the host mounted the API.
        self.custom_settings = {**SCHEMA_SETTINGS, "SCHEMA_PATH_PREFIX": mount_prefix()}
        return super().get(request, *args, **kwargs)


class DocsView(views.SchedulerAPIMixin, SpectacularSwaggerView):
    """Swagger UI over the schema above."""

    url_name = "scheduler-api:schema"

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        # The page's only renderer is an HTML template: errors and OPTIONS' description (which no
        # template renders) are JSON, as everywhere else in the API.
        if request.method == "OPTIONS" or response.status_code >= 400:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> HttpResponseBase:
        # A page for people: a browser that is not logged in goes to the login and comes back here;
        # other clients (scripts, health probes) get the API's JSON refusal.
        wants_html = "text/html" in self.request.headers.get("Accept", "")
        if (
            wants_html
            and isinstance(exc, NotAuthenticated | PermissionDenied)
            and not self.request.user.is_authenticated
        ):
            return redirect_to_login(self.request.get_full_path(), reverse("admin:login"))
        return super().handle_exception(exc)

    @extend_schema(exclude=True)  # as drf-spectacular's own get(): not an endpoint of the API
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # The UI's files from drf-spectacular-sidecar when installed, not from a CDN, unless the host's
        # SPECTACULAR_SETTINGS say where they are.
        own = getattr(settings, "SPECTACULAR_SETTINGS", {})
        patches = {
            key: "SIDECAR"
            for key in ("SWAGGER_UI_DIST", "SWAGGER_UI_FAVICON_HREF")
            if key not in own and apps.is_installed("drf_spectacular_sidecar")
        }
        with patched_settings(patches):
            return super().get(request, *args, **kwargs)


class OptionalSlashRouter(SimpleRouter):
    """Routes that match with and without the trailing slash (the seed writes none)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("tasks", views.TaskViewSet, basename="task")
router.register("history", views.RecordViewSet, basename="record")

urlpatterns = [
    re_path(r"^$", views.RootView.as_view(), name="root"),
    re_path(r"^status/?$", views.StatusView.as_view(), name="status"),
    # Operations (issue 8): Prometheus metrics and health checks, plain Django views.
    re_path(r"^metrics/?$", metrics.metrics_view, name="metrics"),
    re_path(r"^health/live/?$", health.live, name="health-live"),
    re_path(r"^health/ready/?$", health.ready, name="health-ready"),
    re_path(r"^schema/?$", SchemaView.as_view(), name="schema"),
    re_path(r"^docs/?$", DocsView.as_view(), name="docs"),
    *router.urls,
    re_path(r"^[\s\S]*$", views.NotFoundView.as_view(), name="not-found"),
]
