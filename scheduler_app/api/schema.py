"""drf-spectacular hooks: the schema documents this API under its canonical (seed) paths."""

from __future__ import annotations

import re
from typing import Any

# What the API's schema view applies (with the prefix the API is mounted under); the project's
# SPECTACULAR_SETTINGS include it too, so that `manage.py spectacular` writes the same document as
# /scheduler/schema serves.
SCHEMA_SETTINGS: dict[str, Any] = {
    "SCHEMA_PATH_PREFIX": r"/scheduler",
    "SCHEMA_PATH_PREFIX_TRIM": False,
    "ENUM_NAME_OVERRIDES": {
        "RecordStatusEnum": "scheduler_app.api.serializers.RECORD_STATUSES",
        "TaskStatusEnum": "scheduler_app.api.serializers.TASK_STATUSES",
        "SourceEnum": "scheduler_app.api.serializers.SOURCES",
    },
    "PREPROCESSING_HOOKS": ["scheduler_app.api.schema.only_scheduler_endpoints"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "scheduler_app.api.schema.strip_trailing_slashes",
    ],
}


def mount_prefix() -> str:
    """Where the host's URLconf mounted the API (``/scheduler`` here), as a SCHEMA_PATH_PREFIX regex."""
    from django.urls import get_script_prefix, reverse

    # Schema paths come from the URLconf, without the deployment's SCRIPT_NAME that reverse() adds.
    path = "/" + reverse("scheduler-api:root").removeprefix(get_script_prefix())
    return re.escape(path.rstrip("/"))


def only_scheduler_endpoints(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """This app's views, under whatever prefix the host mounted them; not the host's own DRF views."""
    return [endpoint for endpoint in endpoints if _module(endpoint[3]).startswith("scheduler_app.")]


def _module(callback: Any) -> str:
    return getattr(getattr(callback, "cls", callback), "__module__", "") or ""


def strip_trailing_slashes(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Both forms are served; the seed writes its paths without a trailing slash."""
    result["paths"] = {
        (path.rstrip("/") if path != "/" else path): item for path, item in result.get("paths", {}).items()
    }
    return result
