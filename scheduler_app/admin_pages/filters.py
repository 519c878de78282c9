"""The list filters of the task list and of the run history."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from scheduler_app.tasks.base import OPEN_STATUSES, ScheduleType, TaskStatus


class RegisteredFilter(admin.SimpleListFilter):
    """Tasks removed from the code keep their row (and history) but are hidden unless asked for."""

    title = "defined in code"
    parameter_name = "registered"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("all", "All, with removed tasks"), ("no", "Removed from code")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "all":
            return queryset
        return queryset.filter(registered=self.value() != "no")

    def choices(self, changelist: Any) -> Iterable[dict[str, Any]]:
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Registered tasks",
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }


class EnabledFilter(admin.SimpleListFilter):
    title = "enabled"
    parameter_name = "enabled"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.enabled()
        if self.value() == "no":
            return queryset.disabled()
        return queryset


class StoredWordFilter(admin.SimpleListFilter):
    """A filter on a choices field that offers the stored words (``success``, ``manual``), as the
    badges, the API and the other filters show them, instead of Django's capitalised labels. The
    parameter keeps Django's own name (``status__exact``), so links made before stay valid."""

    field_name = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(value, value) for value, _ in model_admin.model._meta.get_field(self.field_name).choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.field_name: value}) if value else queryset


class RecordStatusFilter(StoredWordFilter):
    title = "status"
    field_name = "status"
    parameter_name = "status__exact"


class RecordTriggerFilter(StoredWordFilter):
    title = "trigger"
    field_name = "trigger"
    parameter_name = "trigger__exact"


class ScheduleTypeFilter(admin.SimpleListFilter):
    title = "schedule type"
    parameter_name = "schedule_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(t.value, t.value) for t in ScheduleType] + [("override", "overridden in admin/API")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "override":
            return queryset.exclude(schedule_type_override="")
        if value in {t.value for t in ScheduleType}:
            return queryset.of_schedule_type(value)
        return queryset


class LastResultFilter(admin.SimpleListFilter):
    title = "last result"
    parameter_name = "last_result"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        terminal = [s for s in TaskStatus if s not in OPEN_STATUSES]
        return [(s.value, s.value) for s in terminal] + [("never", "never run")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "never":
            return queryset.filter(Q(state__isnull=True) | Q(state__last_result=""))
        if value:
            return queryset.filter(state__last_result=value)
        return queryset
