"""DRF's token and basic authentication, refusing credentials no database column can hold.

A NUL byte in a username or token reaches the user lookup, and PostgreSQL rejects the query with a
DataError: a 500 instead of the 401 that wrong credentials deserve.
"""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions


def _refuse_nul(*values: str) -> None:
    if any("\x00" in value for value in values):
        raise exceptions.AuthenticationFailed("Invalid credentials: they contain a NUL character.")


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> Any:
        _refuse_nul(key)
        return super().authenticate_credentials(key)


class BasicAuthentication(authentication.BasicAuthentication):
    def authenticate_credentials(self, userid: str, password: str, request: Any = None) -> Any:
        _refuse_nul(userid, password)
        return super().authenticate_credentials(userid, password, request)
