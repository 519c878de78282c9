"""``conf.get``: the SCHEDULER settings with their defaults, as they are at the time of use."""

from __future__ import annotations

from typing import Any

from django.test import override_settings

from scheduler_app import conf


def test_get_follows_a_replaced_scheduler_dict_and_its_defaults(settings: Any) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER, "DEFAULT_TIMEOUT": 12}
    assert conf.get("DEFAULT_TIMEOUT") == 12
    settings.SCHEDULER = {key: value for key, value in settings.SCHEDULER.items() if key != "DEFAULT_TIMEOUT"}
    assert conf.get("DEFAULT_TIMEOUT") == conf.DEFAULTS["DEFAULT_TIMEOUT"]
    with override_settings(SCHEDULER={"DEFAULT_TIMEOUT": 7}):
        assert conf.get("DEFAULT_TIMEOUT") == 7
    assert conf.get("DEFAULT_TIMEOUT") == conf.DEFAULTS["DEFAULT_TIMEOUT"]


def test_get_sees_a_change_made_inside_the_scheduler_dict(settings: Any) -> None:
    settings.SCHEDULER = {**settings.SCHEDULER}
    assert conf.get("POLL_INTERVAL") == settings.SCHEDULER.get("POLL_INTERVAL", conf.DEFAULTS["POLL_INTERVAL"])
    settings.SCHEDULER["POLL_INTERVAL"] = 0.25
    assert conf.get("POLL_INTERVAL") == 0.25
