"""Model rules that exist twice, once in Python and once in SQL, must agree."""

from __future__ import annotations

import itertools

import pytest

from scheduler_app.models import TaskConfig
from scheduler_app.services import sync_task_rows

pytestmark = pytest.mark.django_db


def test_enabled_in_sql_agrees_with_the_property() -> None:
    sync_task_rows()
    combos = list(itertools.product([True, False], [None, True, False]))
    names = [config.name for config in TaskConfig.objects.all()][: len(combos)]
    assert len(names) == len(combos)
    for name, (default, override) in zip(names, combos, strict=True):
        TaskConfig.objects.filter(name=name).update(default_enabled=default, enabled_override=override)
    configs = {config.name: config for config in TaskConfig.objects.filter(name__in=names)}
    enabled = set(TaskConfig.objects.filter(name__in=names).enabled().values_list("name", flat=True))
    disabled = set(TaskConfig.objects.filter(name__in=names).disabled().values_list("name", flat=True))
    assert enabled == {name for name, config in configs.items() if config.enabled}
    assert disabled == set(names) - enabled and enabled and disabled


def test_schedule_type_in_sql_agrees_with_the_property() -> None:
    sync_task_rows()
    TaskConfig.objects.filter(name="tick").update(schedule_type_override="cron", cron_expression_override="* * * * *")
    for kind in ("cron", "interval"):
        expected = {config.name for config in TaskConfig.objects.all() if config.schedule_type == kind}
        assert set(TaskConfig.objects.of_schedule_type(kind).values_list("name", flat=True)) == expected
    # The override wins over the code's interval.
    assert "tick" in TaskConfig.objects.of_schedule_type("cron").values_list("name", flat=True)
    assert "tick" not in TaskConfig.objects.of_schedule_type("interval").values_list("name", flat=True)


def test_an_option_follows_its_layers_when_they_are_replaced() -> None:
    """``option()`` keeps the merge of the layers while they are the same objects; a new override,
    an assignment or a fresh read from the database is seen at once."""
    sync_task_rows()
    config = TaskConfig.objects.get(name="tick")
    assert config.option("overlap") == config.options.get("overlap")
    before = config.overlap_policy
    config.options_override = {**(config.options_override or {}), "overlap": "allow"}
    assert config.option("overlap") == "allow" and config.overlap_policy == "allow"
    config.options_override = {"catch_up_window_seconds": 7}
    assert config.catch_up_window_seconds == 7.0 and config.overlap_policy == before
    config.default_options = {**(config.default_options or {}), "jitter_seconds": 3}
    assert config.option("jitter_seconds") == 3
    config.save()
    TaskConfig.objects.filter(name="tick").update(options_override={"jitter_seconds": 9})
    config.refresh_from_db()
    assert config.option("jitter_seconds") == 9 and config.option("catch_up_window_seconds") is None
    for name in config.options:
        assert config.option(name) == config.options[name], name
