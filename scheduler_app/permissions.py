"""Who may operate tasks: the one rule that the API, the admin and anything else ask.

Django's convention: staff status only lets a person into the admin; what they may do there (and
through the API) is a permission. Operating a task (trigger, enable, disable, reschedule, its
policies and its timeout) needs ``scheduler_app.operate_task``, which superusers have and others get
directly or through a group. Staff status neither grants it nor is needed for it.
"""

from __future__ import annotations

from typing import Any

OPERATE_PERMISSION = "scheduler_app.operate_task"


def can_operate(user: Any) -> bool:
    """True when ``user`` (any object with Django's user interface, or None) may change tasks."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return bool(user.has_perm(OPERATE_PERMISSION))
