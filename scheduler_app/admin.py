"""The admin: the operators' place to see and steer every task. This module only registers the pages.

The pages live in ``admin_pages/``, laid out by concern: ``tasks``, ``history`` and ``processes`` hold
the ModelAdmins; ``display`` how tasks and runs read (its markup in
templates/admin/scheduler_app/display/); ``filters`` the list filters; ``actions`` the list actions;
``views`` the task page's extra views; ``read_only`` the base of the pages nobody edits.
"""

from __future__ import annotations

from django.contrib import admin

from scheduler_app.admin_pages.history import TaskExecutionRecordAdmin
from scheduler_app.admin_pages.processes import SchedulerProcessAdmin
from scheduler_app.admin_pages.tasks import TaskConfigAdmin
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord

# django-apscheduler's own pages edit and delete APScheduler jobs behind the scheduler's back; the
# task pages are where jobs are steered. Import its admin first so that it cannot register after
# we unregister.
try:
    from django_apscheduler import admin as _apscheduler_admin  # noqa: F401
    from django_apscheduler.models import DjangoJob, DjangoJobExecution

    for _model in (DjangoJob, DjangoJobExecution):
        if admin.site.is_registered(_model):
            admin.site.unregister(_model)
except ImportError:  # pragma: no cover - django_apscheduler is a requirement
    pass

admin.site.register(TaskConfig, TaskConfigAdmin)
admin.site.register(TaskExecutionRecord, TaskExecutionRecordAdmin)
admin.site.register(SchedulerProcess, SchedulerProcessAdmin)
