"""drf-spectacular hooks: the schema documents this API under its canonical (seed) paths."""

from __future__ import annotations

from typing import Any


def only_scheduler_endpoints(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/scheduler/")]


def strip_trailing_slashes(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Both forms are served; the seed writes its paths without a trailing slash."""
    result["paths"] = {
        (path.rstrip("/") if path != "/" else path): item for path, item in result.get("paths", {}).items()
    }
    return result
