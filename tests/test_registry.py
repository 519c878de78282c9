from __future__ import annotations

import pytest

from scheduler_app.exceptions import DuplicateTaskError, InvalidTaskError, TaskNotFound
from scheduler_app.registry import TaskRegistry
from tests import bad_tasks
from tests.tasks import TickTask


def test_register_lists_and_finds_tasks() -> None:
    registry = TaskRegistry()
    task = registry.register(TickTask)
    assert registry.get("tick") is task
    assert "tick" in registry and len(registry) == 1 and registry.names() == ["tick"]
    registry.register(TickTask)  # the same class again is harmless
    assert len(registry) == 1


@pytest.mark.parametrize(
    ("task_class", "fragment"),
    [
        (bad_tasks.BadCronTask, "task 'bad_cron': cron_expression: invalid cron expression '61 * * * *'"),
        (bad_tasks.ZeroIntervalTask, "task 'zero_interval': interval_seconds: interval_seconds must be greater than 0"),
        (bad_tasks.UnknownTypeTask, "task 'unknown_type': schedule_type: unknown schedule type 'fortnightly'"),
        (bad_tasks.BadNameTask, "may contain only lowercase letters, digits and underscores"),
        (bad_tasks.NotATask, "is not a BaseTask subclass"),
    ],
)
def test_invalid_tasks_are_rejected_naming_the_task(task_class: type, fragment: str) -> None:
    with pytest.raises(InvalidTaskError) as error:
        TaskRegistry().register(task_class)
    assert fragment in str(error.value)


def test_two_classes_cannot_share_a_name() -> None:
    registry = TaskRegistry()
    registry.register(TickTask)
    with pytest.raises(DuplicateTaskError, match=r"task 'tick': name already used by tests.tasks.TickTask"):
        registry.register(bad_tasks.TickTwinTask)


def test_load_collects_errors_instead_of_raising() -> None:
    registry = TaskRegistry()
    registry.load(["tests.tasks.TickTask", "tests.bad_tasks.BadCronTask", "tests.nowhere.Task", "tests.tasks.TickTask"])
    assert registry.names() == ["tick"]
    messages = [error.message for error in registry.load_errors]
    assert any("bad_cron" in m for m in messages)
    assert any("cannot import 'tests.nowhere.Task'" in m for m in messages)
    assert any("duplicate name" in m for m in messages)


def test_unknown_name_lists_the_known_ones() -> None:
    registry = TaskRegistry()
    registry.register(TickTask)
    with pytest.raises(TaskNotFound) as error:
        registry.get("tock")
    assert str(error.value) == "unknown task 'tock'; known tasks: tick"
