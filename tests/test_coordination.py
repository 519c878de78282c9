"""The leader lease and process liveness rules of coordination.py, on the real database."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler_app.coordination import alive, leader, leader_lease, release_lease, try_acquire_lease
from scheduler_app.models import SchedulerLease, SchedulerProcess

pytestmark = pytest.mark.django_db(transaction=True)


def move_expiry(seconds_from_now: float) -> None:
    """Stand in for the clock: the lease's expiry as if time had passed."""
    SchedulerLease.objects.update(expires_at=timezone.now() + timedelta(seconds=seconds_from_now))


def test_a_held_lease_is_refused_to_others_until_it_expires() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    assert try_acquire_lease(first)
    lease = leader_lease()
    assert lease is not None and lease.holder == first
    assert try_acquire_lease(second) is False
    move_expiry(0.5)
    assert try_acquire_lease(second) is False, "a lease that has not expired yet is not taken over"
    move_expiry(-0.001)
    assert try_acquire_lease(second) is True
    lease = leader_lease()
    assert lease is not None and lease.holder == second
    assert try_acquire_lease(first) is False, "the old holder has lost it"


def test_renewing_extends_the_lease_and_keeps_when_it_was_acquired(settings: object) -> None:
    holder = uuid.uuid4()
    assert try_acquire_lease(holder)
    acquired = SchedulerLease.objects.get().acquired_at
    move_expiry(-5)  # even a lapsed lease is renewed by its own holder, if nobody took it
    assert try_acquire_lease(holder)
    lease = SchedulerLease.objects.get()
    assert lease.acquired_at == acquired
    assert lease.expires_at > timezone.now() + timedelta(seconds=1)


def test_lease_length_follows_the_setting(settings: object) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "LEASE_SECONDS": 42}  # type: ignore[attr-defined]
    before = timezone.now()
    assert try_acquire_lease(uuid.uuid4())
    expires = SchedulerLease.objects.get().expires_at
    assert before + timedelta(seconds=41.9) <= expires <= timezone.now() + timedelta(seconds=42)


def test_a_released_lease_is_free_at_once() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    assert try_acquire_lease(first)
    release_lease(second)  # someone else's release changes nothing
    assert try_acquire_lease(second) is False
    release_lease(first)
    assert try_acquire_lease(second) is True


def test_the_lease_not_the_role_says_who_leads() -> None:
    assert leader() is None and alive() is False
    says_active = SchedulerProcess.objects.create(kind="scheduler", role="active", host="a", pid=1)
    holder = SchedulerProcess.objects.create(kind="scheduler", role="standby", host="b", pid=2)
    assert alive() is True
    assert leader() is None, "a role of active without the lease leads nothing"
    assert try_acquire_lease(holder.pk)
    assert leader() == holder and leader([says_active, holder]) == holder
    assert leader([says_active]) is None and leader([]) is None
    # A holder whose heartbeat went stale is dead: it leads nothing, whatever its lease says.
    SchedulerProcess.objects.filter(pk=holder.pk).update(last_heartbeat=timezone.now() - timedelta(hours=1))
    assert leader() is None
    holder.refresh_from_db()
    assert not holder.is_alive() and says_active.is_alive()
