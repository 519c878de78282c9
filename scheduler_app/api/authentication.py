"""DRF's token and basic authentication, refusing credentials no database column can hold, and
braking password guessing (``throttling.FailedAuthThrottle``).

A NUL byte in a username or token reaches the user lookup, and PostgreSQL rejects the query with a
DataError: a 500 instead of the 401 that wrong credentials deserve.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate, get_user_model
from drf_spectacular import authentication as spectacular_authentication
from rest_framework import authentication, exceptions

from scheduler_app.api.throttling import FailedAuthThrottle


def _refuse_nul(*values: str) -> None:
    if any("\x00" in value for value in values):
        raise exceptions.AuthenticationFailed("Invalid credentials: they contain a NUL character.")


def password_user(request: Any, username: str, password: str) -> Any:
    """The active user these Basic credentials name, or ``AuthenticationFailed``; ``Throttled``
    while the client's address has used up its failed tries. Used by the API and the metrics."""
    _refuse_nul(username, password)
    FailedAuthThrottle().refuse_if_exhausted(request)
    credentials = {get_user_model().USERNAME_FIELD: username, "password": password}
    # A failure is counted by the user_login_failed signal (throttling), as for the admin's login.
    user = authenticate(getattr(request, "_request", request), **credentials)
    if user is None or not user.is_active:
        raise exceptions.AuthenticationFailed("Invalid username/password.")
    return user


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> Any:
        _refuse_nul(key)
        return super().authenticate_credentials(key)


class BasicAuthentication(authentication.BasicAuthentication):
    def authenticate_credentials(self, userid: str, password: str, request: Any = None) -> Any:
        return (password_user(request, userid, password), None)


class BasicScheme(spectacular_authentication.BasicScheme):
    """The schema's ``basicAuth``: drf-spectacular knows DRF's class, not subclasses of it."""

    target_class = "scheduler_app.api.authentication.BasicAuthentication"
