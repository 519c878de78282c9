"""Who may read and who may change tasks through the API, configurable in ``SCHEDULER``.

``SCHEDULER["API_READ_PERMISSION_CLASSES"]`` guards every request; changes (any unsafe method)
also need ``SCHEDULER["API_WRITE_PERMISSION_CLASSES"]`` and, whatever those say, an authenticated
user: no setting can let anonymous users change anything.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated

from scheduler_app import conf
from scheduler_app.permissions import can_operate


class CanOperateTasks(BasePermission):
    """Users granted ``scheduler_app.operate_task`` ("Can trigger, enable, disable and reschedule
    tasks"), directly or through a group; superusers have it. Staff status alone is not enough."""

    message = "Changing tasks needs the scheduler_app.operate_task permission."

    def has_permission(self, request: Any, view: Any) -> bool:
        return can_operate(request.user)


@cache
def _load(paths: tuple[str, ...]) -> tuple[type[BasePermission], ...]:
    classes = []
    for path in paths:
        try:
            classes.append(import_string(path))
        except ImportError as exc:
            raise ImproperlyConfigured(f"SCHEDULER permission class {path!r} cannot be imported: {exc}") from exc
    return tuple(classes)


def configured(key: str) -> list[BasePermission]:
    paths = conf.get(key)
    if isinstance(paths, str):
        paths = [paths]
    return [cls() for cls in _load(tuple(paths))]


def permissions_for(method: str) -> list[BasePermission]:
    """The permission instances a request with this HTTP method must pass, all of them."""
    permissions = configured("API_READ_PERMISSION_CLASSES")
    if method not in SAFE_METHODS:
        permissions += [IsAuthenticated(), *configured("API_WRITE_PERMISSION_CLASSES")]
    return permissions
