"""Users of the tests, with the one permission that lets a person operate tasks."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission, User


def grant_operate(user: User) -> User:
    """Give ``user`` scheduler_app.operate_task (what staff status alone no longer gives)."""
    user.user_permissions.add(Permission.objects.get(codename="operate_task", content_type__app_label="scheduler_app"))
    return user


def operator(username: str, password: str | None = None, **extra: Any) -> User:
    """A staff user who may operate tasks: the everyday operator of the admin and the API."""
    extra.setdefault("is_staff", True)
    return grant_operate(User.objects.create_user(username, password=password, **extra))
