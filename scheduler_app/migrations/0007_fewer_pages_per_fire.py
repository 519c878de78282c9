"""Fewer index pages written by every fire's commit (BENCHMARKS.md, session 8).

The records' own index on ``task`` goes (``record_task_latest``, on task and id, serves every lookup by
task), and the indexes on ``triggered_by`` and ``retry_of`` become partial, without the NULLs that
every scheduled fire has. Done as index changes only: ``AlterField`` would make SQLite copy the whole
history table (three times) to change what is only an index.
"""

from typing import Any

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# The columns whose index of their own goes (on PostgreSQL also the ``_like`` index of a text key).
COLUMNS = ("task_name", "triggered_by_id", "retry_of_id")


def drop_column_indexes(apps: Any, schema_editor: Any) -> None:
    model = apps.get_model("scheduler_app", "TaskExecutionRecord")
    table = model._meta.db_table
    with schema_editor.connection.cursor() as cursor:
        constraints = schema_editor.connection.introspection.get_constraints(cursor, table)
    for name, info in constraints.items():
        single = len(info["columns"]) == 1 and info["columns"][0] in COLUMNS
        if single and info["index"] and not info["unique"] and not info["primary_key"]:
            schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")


def create_column_indexes(apps: Any, schema_editor: Any) -> None:
    model = apps.get_model("scheduler_app", "TaskExecutionRecord")
    for field_name in ("task", "triggered_by", "retry_of"):
        field = model._meta.get_field(field_name)
        schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler_app", "0006_fleet_queued_worker"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="taskexecutionrecord",
                    name="retry_of",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        help_text="The first run of which this is a retry.",
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="retries",
                        to="scheduler_app.taskexecutionrecord",
                    ),
                ),
                migrations.AlterField(
                    model_name="taskexecutionrecord",
                    name="task",
                    field=models.ForeignKey(
                        db_column="task_name",
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="records",
                        to="scheduler_app.taskconfig",
                    ),
                ),
                migrations.AlterField(
                    model_name="taskexecutionrecord",
                    name="triggered_by",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_column_indexes, create_column_indexes)],
        ),
        migrations.AddIndex(
            model_name="taskexecutionrecord",
            index=models.Index(
                condition=models.Q(("triggered_by__isnull", False)), fields=["triggered_by"], name="record_triggered_by"
            ),
        ),
        migrations.AddIndex(
            model_name="taskexecutionrecord",
            index=models.Index(
                condition=models.Q(("retry_of__isnull", False)), fields=["retry_of"], name="record_retry_of"
            ),
        ),
    ]
