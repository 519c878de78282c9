"""The admin's task form: the operators' overrides, checked by the rules in ``validation.py``.

The form only validates. Saving goes through ``services`` (see ``TaskConfigAdmin.save_model``), so
the admin, the API and code change a task the same way and leave the same trail.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from scheduler_app.models import TaskConfig
from scheduler_app.options import CHOICE, DATETIME, OPTION_DEFAULTS, OPTIONS, WHOLE, Option, ScheduleType
from scheduler_app.validation import (
    ASCII_INTEGER,
    ASCII_NUMBER,
    disabled_reason_error,
    options_errors,
    schedule_errors,
    timeout_error,
)

# validation.schedule_errors names fields the way the API does; the form's fields are the model's.
SCHEDULE_FIELDS = {
    "schedule_type": "schedule_type_override",
    "cron_expression": "cron_expression_override",
    "interval_seconds": "interval_seconds_override",
    "timezone": "timezone_override",
}


class AsciiIntegerField(forms.IntegerField):
    """Django reads "٣" as 3; the API does not, so neither does the form. Bounds: validation.py."""

    def to_python(self, value: Any) -> int | None:
        if isinstance(value, str) and value.strip() and not ASCII_INTEGER.fullmatch(value.strip()):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class AsciiFloatField(forms.FloatField):
    def to_python(self, value: Any) -> float | None:
        if isinstance(value, str) and value.strip() and not ASCII_NUMBER.fullmatch(value.strip()):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


def _option_field(option: Option) -> forms.Field:
    """The form field of one schedule option (options.py); empty means the code's value."""
    common: dict[str, Any] = {"required": False, "label": option.label, "help_text": option.help_text}
    if option.kind == CHOICE:
        return forms.ChoiceField(choices=[("", "Code default"), *[(v, v) for v in option.choice_values]], **common)
    if option.kind == DATETIME:
        attrs = {"size": 30, "placeholder": option.placeholder}
        return forms.CharField(widget=forms.TextInput(attrs=attrs), **common)
    return (AsciiIntegerField if option.kind == WHOLE else AsciiFloatField)(**common)


# The schedule policies an operator may override (TaskConfig.options_override); empty: the code's.
OPTION_FIELDS = tuple(OPTION_DEFAULTS)
# A form class holding one field per option, so that the ModelForm below declares them as its own.
OptionFields = type("OptionFields", (forms.Form,), {option.name: _option_field(option) for option in OPTIONS})


class TaskConfigForm(OptionFields, forms.ModelForm):
    enabled = forms.BooleanField(
        required=False,
        help_text="Unticking it disables the task: the scheduler stops firing it within a second or two.",
    )
    # The model's fields, with ASCII digits only; their bounds are validation.py's (see clean()).
    interval_seconds_override = AsciiIntegerField(
        required=False, label="Interval (seconds)", help_text="A whole number of seconds greater than 0."
    )
    timeout_override = AsciiFloatField(
        required=False,
        label="Timeout (seconds)",
        help_text="Empty: the code's timeout, or SCHEDULER['DEFAULT_TIMEOUT']. At most 30 days.",
    )

    class Meta:
        model = TaskConfig
        fields = [
            "enabled",
            "disabled_reason",
            "schedule_type_override",
            "cron_expression_override",
            "interval_seconds_override",
            "timezone_override",
            "timeout_override",
            *OPTION_FIELDS,
        ]
        labels = {
            "disabled_reason": "Why it is disabled",
            "schedule_type_override": "Schedule type",
            "cron_expression_override": "Cron expression",
            "timezone_override": "Time zone",
        }
        help_texts = {
            "disabled_reason": "Optional note, kept while the task is disabled.",
            "schedule_type_override": "Empty: the schedule defined in code.",
            "cron_expression_override": "Five fields: minute hour day-of-month month day-of-week, e.g. 0 2 * * *.",
            "timezone_override": "IANA name such as Europe/Berlin for cron schedules; empty: the project's zone.",
        }
        widgets = {
            "disabled_reason": forms.Textarea(attrs={"rows": 2, "cols": 60}),
            "cron_expression_override": forms.TextInput(attrs={"size": 30, "placeholder": "0 2 * * *"}),
            "timezone_override": forms.TextInput(attrs={"size": 30, "placeholder": "Europe/Berlin"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["enabled"].initial = self.instance.enabled
            for key, value in (self.instance.options_override or {}).items():
                if key in self.fields:
                    self.fields[key].initial = value
        if "schedule_type_override" in self.fields:
            self.fields["schedule_type_override"].choices = [
                ("", "Code default"),
                *[(t.value, t.value) for t in ScheduleType],
            ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind = data.get("schedule_type_override")
        if kind:
            errors = schedule_errors(
                schedule_type=kind,
                cron_expression=data.get("cron_expression_override"),
                interval_seconds=data.get("interval_seconds_override"),
                timezone=data.get("timezone_override") or None,
            )
            for field, message in errors.items():
                self.add_error(SCHEDULE_FIELDS.get(field), message)
        elif "schedule_type_override" in data and any(
            data.get(f) not in (None, "") for f in list(SCHEDULE_FIELDS.values())[1:]
        ):
            # Without a type the other override fields would be dropped without a word.
            self.add_error(
                "schedule_type_override",
                "Pick cron or interval to override the code's schedule, or empty the override fields.",
            )
        if "timeout_override" in data and (message := timeout_error(data.get("timeout_override"))):
            self.add_error("timeout_override", message)
        if "disabled_reason" in data and (message := disabled_reason_error(data.get("disabled_reason"))):
            self.add_error("disabled_reason", message)
        self._clean_options(data)
        if (
            data.get("enabled")
            and (data.get("disabled_reason") or "").strip()
            and "disabled_reason" in self.changed_data
        ):
            self.add_error("disabled_reason", "Untick Enabled to disable the task, or leave the reason empty.")
        return data

    def _clean_options(self, data: dict[str, Any]) -> None:
        if not self.options_changed():
            return
        proposed = self.options_override()
        if errors := options_errors(proposed):
            for field, message in errors.items():
                self.add_error(field if field in self.fields else None, message)
            return
        config = self.instance
        # The policies as they will be (built-in, code, new overrides), and as services.set_options
        # checks them, so that a form that passes is never refused on saving.
        effective = {**OPTION_DEFAULTS, **(config.default_options or {}), **proposed}
        as_services_check = {**config.options, **proposed}
        for candidate in (effective, as_services_check):
            for field, message in options_errors(candidate).items():
                if field not in self.errors:
                    self.add_error(field if field in self.fields else None, message)

    def options_override(self) -> dict[str, Any]:
        """The options the form sets: the filled-in fields (an empty field means the code's value)."""
        values = {key: self.cleaned_data.get(key) for key in OPTION_FIELDS}
        return {key: value for key, value in values.items() if value not in (None, "")}

    def options_changed(self) -> bool:
        return any(key in self.changed_data for key in OPTION_FIELDS)

    def schedule_changed(self) -> bool:
        return any(field in self.changed_data for field in SCHEDULE_FIELDS.values())
