"""The schedule options are declared once (options.py); everything else is derived from that list."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from scheduler_app.api.serializers import EffectiveOptionsSerializer, OptionsSerializer
from scheduler_app.forms import TaskConfigForm
from scheduler_app.options import OPTION_DEFAULTS, OPTIONS
from scheduler_app.tasks.base import TaskSchedule
from scheduler_app.validation import options_errors

ROOT = Path(__file__).resolve().parent.parent
NAMES = [option.name for option in OPTIONS]


def test_options_module_imports_nothing_of_the_project() -> None:
    tree = ast.parse((ROOT / "scheduler_app" / "options.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)] + [
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    ]
    assert not [name for name in imported if name.startswith("scheduler_app")]


def test_task_schedule_fields_and_defaults_are_the_options() -> None:
    fields = {field.name: field.default for field in dataclasses.fields(TaskSchedule)}
    assert {name: fields[name] for name in NAMES} == OPTION_DEFAULTS


def test_admin_form_and_api_take_exactly_the_options_with_their_bounds() -> None:
    assert [name for name in TaskConfigForm.base_fields if name in OPTION_DEFAULTS] == NAMES
    for serializer in (OptionsSerializer(), EffectiveOptionsSerializer()):
        assert list(serializer.fields) == NAMES
    fields = OptionsSerializer().fields
    for option in OPTIONS:
        if option.low is not None:
            assert (fields[option.name].min_value, fields[option.name].max_value) == (option.low, option.high)
        if option.choices:
            assert list(fields[option.name].choices) == option.choice_values


def test_validation_applies_each_options_bounds() -> None:
    for option in OPTIONS:
        if option.high is not None:
            assert options_errors({option.name: option.high}) == {}
            assert option.name in options_errors({option.name: option.high * 2})
            assert option.name in options_errors({option.name: option.low - 1})
        if option.choices:
            assert option.name in options_errors({option.name: "nonsense"})


def test_readme_table_lists_every_option_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Schedule fields") :]
    table = table[: table.index("\n\n", table.index("| field |"))]
    for option in OPTIONS:
        rows = [line for line in table.splitlines() if line.startswith("| ")]
        row = next((line for line in rows if f"`{option.name}`" in line.split("|")[1]), None)
        assert row is not None, option.name
        if option.default is not None:
            default = row.split("|")[2]
            assert repr(option.default).strip("'") in default, (option.name, default)
