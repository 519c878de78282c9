from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("scheduler/", include("scheduler_app.api.urls")),
    # Log in / out links of DRF's browsable API (session auth).
    path("api-auth/", include("rest_framework.urls")),
]
