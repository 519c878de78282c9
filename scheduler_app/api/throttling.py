"""Request rates of the API and a brake on password guessing, in ``REST_FRAMEWORK`` terms.

Rates live in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` under the scopes ``anon``, ``user`` and
``failed_auth`` ("10/minute", "1000/hour", ... or None for no limit) and are read when a request is
checked, so a settings change applies without reimport. ``anon`` and ``user`` are off unless set;
``failed_auth`` defaults to FAILED_AUTH_RATE: every wrong Basic password costs a password hash (the
hasher is slow on purpose, about 0.45 s of CPU), so guesses from one client address are refused
once that many failed in the window, before any hashing: 429 from the API and the metrics, "wrong
password" from the admin's login form. Every failed ``django.contrib.auth.authenticate`` counts (the
``user_login_failed`` signal); ``FailedLoginGate``, first in ``AUTHENTICATION_BACKENDS``, refuses.
Clients are told apart by their address (``REST_FRAMEWORK["NUM_PROXIES"]`` says how many proxies'
``X-Forwarded-For`` entries to trust).
Counts live in Django's cache: with several web processes, a shared cache makes the limits shared.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from rest_framework import exceptions, throttling
from rest_framework.settings import api_settings

FAILED_AUTH_RATE = "10/minute"


class _ConfiguredRate:
    """Reads the scope's rate from the settings of now (DRF reads them once, at import)."""

    scope: str
    default_rate: str | None = None

    def get_rate(self) -> str | None:
        return (api_settings.DEFAULT_THROTTLE_RATES or {}).get(self.scope, self.default_rate)


class AnonRateThrottle(_ConfiguredRate, throttling.AnonRateThrottle):
    """``anon``: requests of anonymous clients, per address."""


class UserRateThrottle(_ConfiguredRate, throttling.UserRateThrottle):
    """``user``: requests of each authenticated user (anonymous ones per address)."""


class FailedAuthThrottle(_ConfiguredRate, throttling.SimpleRateThrottle):
    """``failed_auth``: failed password checks per client address; only failures count."""

    scope = "failed_auth"
    default_rate = FAILED_AUTH_RATE

    def get_cache_key(self, request: Any, view: Any = None) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def _recent(self, request: Any) -> list[float]:
        self.key = self.get_cache_key(request)
        self.now = self.timer()
        self.history = [t for t in self.cache.get(self.key, []) if t > self.now - self.duration]
        return self.history

    def exhausted(self, request: Any) -> bool:
        return self.rate is not None and len(self._recent(request)) >= self.num_requests

    def refuse_if_exhausted(self, request: Any) -> None:
        """Raise ``Throttled`` (429, with ``Retry-After``) while this client has no tries left."""
        if self.exhausted(request):
            raise exceptions.Throttled(wait=self.wait(), detail="Too many failed logins from this address.")

    def count_failure(self, request: Any) -> None:
        if self.rate is not None:
            history = self._recent(request)
            history.insert(0, self.now)
            # The newest num_requests decide; an address that keeps trying cannot grow the entry.
            self.cache.set(self.key, history[: self.num_requests], self.duration)


class FailedLoginGate:
    """An authentication backend that authenticates nobody: first in ``AUTHENTICATION_BACKENDS``, it
    stops ``authenticate()`` (before the password backends hash anything) for an address that has
    used up its failed tries. It has no ``get_user``, so sessions never name it."""

    def authenticate(self, request: Any, **credentials: Any) -> None:
        if request is not None and FailedAuthThrottle().exhausted(request):
            raise PermissionDenied("Too many failed logins from this address.")
        return None


@receiver(user_login_failed, dispatch_uid="scheduler_app.failed_login")
def _count_failed_login(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    if request is not None:
        FailedAuthThrottle().count_failure(request)
