"""The ``/scheduler/`` REST API: thin shells over ``scheduler_app.services``.

Nothing here runs a task: a trigger queues a ``pending`` record that a scheduler process runs.
Every error is JSON (``{"detail": ..., "code": ...}``, or ``{field: [messages]}`` for bad input).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.decorators import action
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.viewsets import GenericViewSet

from scheduler_app import conf, coordination, services
from scheduler_app.api import permissions, throttling
from scheduler_app.api.serializers import (
    RECORD_STATUSES,
    TRIGGERS,
    DisableSerializer,
    ErrorSerializer,
    HistoryFilterSerializer,
    OptionsSerializer,
    ProcessSerializer,
    RecordSerializer,
    ScheduleSerializer,
    StatusSerializer,
    TaskSerializer,
    TimeoutSerializer,
    TriggerResponseSerializer,
    queued_counts,
    waiting_counts,
)
from scheduler_app.exceptions import TaskBusy, TaskNotFound
from scheduler_app.models import SchedulerProcess, TaskConfig, TaskExecutionRecord
from scheduler_app.registry import task_registry
from scheduler_app.tasks.base import TaskStatus
from scheduler_app.triggers import build_trigger, next_fire_times
from scheduler_app.validation import TASK_NAME_MAX_LENGTH, TASK_NAME_PATTERN, ScheduleValidationError, task_name_error


class TaskBusyError(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The task is running and does not allow concurrent runs."
    default_code = "task_busy"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than the server accepts."
    default_code = "payload_too_large"


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser; a document nested deeper than Python can decode is bad input, not a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, taught our errors, with a ``code`` beside every ``detail``."""
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = PayloadTooLarge(f"The request body is larger than the {limit} bytes the server accepts.")
    elif isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        exc = exceptions.ParseError(str(exc))
    elif isinstance(exc, TaskNotFound):
        exc = exceptions.NotFound(str(exc), code="task_not_found")
    elif isinstance(exc, TaskBusy):
        exc = TaskBusyError(f"{exc} (retry when it has finished)")
    elif isinstance(exc, ScheduleValidationError):
        exc = exceptions.ValidationError({field: [message] for field, message in exc.errors.items()})
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        detail = response.data["detail"]
        response.data.setdefault("code", getattr(detail, "code", None) or "error")
    return response


# Reusable schema fragments.
ERROR = OpenApiResponse(ErrorSerializer, description="`detail` says what went wrong; `code` is stable.")
DENIED = OpenApiResponse(ErrorSerializer, description="Not authenticated, or not allowed.")
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No task (or record) of that name (or id).")
INVALID = OpenApiResponse(OpenApiTypes.OBJECT, description="`{field: [messages]}` naming each bad field.")
READ_ERRORS = {401: DENIED, 403: DENIED}
TASK_ERRORS = {**READ_ERRORS, 404: NOT_FOUND}
FILTER_NAMES = ("status", "trigger", "since", "until")
STATUS_LIST_PATTERN = "^({0})(,({0}))*$".format("|".join(RECORD_STATUSES))
FILTER_PARAMETERS = [
    OpenApiParameter(
        "status",
        {"type": "string", "pattern": STATUS_LIST_PATTERN},
        description="Only records of this status; several, comma-separated, match any.",
    ),
    OpenApiParameter("trigger", str, enum=TRIGGERS, description="`scheduled` or `manual`."),
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="Records created at or after this time."),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="Records created before this time."),
]


class HistoryPagination(PageNumberPagination):
    """Numbered pages, ``SCHEDULER["API_PAGE_SIZE"]`` records each unless ``?page_size=`` says
    otherwise, up to ``SCHEDULER["API_MAX_PAGE_SIZE"]``; a size out of bounds is a 400."""

    page_size_query_param = "page_size"

    def get_page_size(self, request: Request) -> int:
        maximum = int(conf.get("API_MAX_PAGE_SIZE"))
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return min(int(conf.get("API_PAGE_SIZE")), maximum)
        size = int(raw) if raw.isascii() and raw.isdigit() else 0
        if not 1 <= size <= maximum:
            raise exceptions.ValidationError({"page_size": [f"a whole number from 1 to {maximum}"]})
        return size

    def get_page_number(self, request: Request, paginator: Any) -> int:
        # DRF reads `?page=` (empty) as page 1; a page that is no number is a client's mistake.
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise exceptions.ValidationError({"page": ["a whole number from 1"]})
        return int(raw)

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paginated = super().get_paginated_response_schema(schema)
        paginated["required"] = ["count", "next", "previous", "results"]
        return paginated

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=int(conf.get("API_MAX_PAGE_SIZE")))
            if parameter["name"] == self.page_query_param:
                parameter["schema"].update(minimum=1)
        return parameters


class SchedulerAPIMixin:
    """Permissions from ``SCHEDULER`` settings, rates from ``REST_FRAMEWORK`` (``throttling``) and
    our exception handler, for every view."""

    parser_classes = [JSONParser, parsers.FormParser, parsers.MultiPartParser]
    throttle_classes = [throttling.AnonRateThrottle, throttling.UserRateThrottle]

    # drf-spectacular's inspector, whatever the host's REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] says.
    schema = AutoSchema()

    def get_permissions(self) -> list[Any]:
        return permissions.permissions_for(self.request.method)

    def get_exception_handler(self):
        return exception_handler

    def get_authenticate_header(self, request: Request) -> str | None:
        """401 + ``WWW-Authenticate`` for a script whose Basic or Token credentials are wrong.

        DRF takes the header from the first authentication class, the session, which has none, so
        every failure would be a 403; and naming Basic to a browser would pop up its login dialog.
        """
        header = super().get_authenticate_header(request)
        scheme = request.META.get("HTTP_AUTHORIZATION", "").split(" ", 1)[0].lower()
        if header or not scheme:
            return header
        for authenticator in request.authenticators:
            offered = authenticator.authenticate_header(request)
            if offered and offered.split(" ", 1)[0].lower() == scheme:
                return offered
        return None


def expected_next_run(config: TaskConfig) -> datetime | None:
    """When the task fires next under its current configuration (None: disabled, or never again)."""
    if not config.enabled:
        return None
    times = next_fire_times(build_trigger(config), timezone.now(), 1)
    return times[0] if times else None


def tasks_queryset() -> QuerySet[TaskConfig]:
    """The registered tasks with their state and last editor: one query, whatever their number."""
    return services.registered_tasks().select_related("updated_by")


def all_tasks() -> list[TaskConfig]:
    tasks = list(tasks_queryset())
    if len(tasks) != len(task_registry):
        # A task registered since the rows were last synced (e.g. in code, at run time).
        services.sync_task_rows()
        tasks = list(tasks_queryset())
    return tasks


def filtered_records(request: Request, queryset: QuerySet[TaskExecutionRecord]) -> QuerySet[TaskExecutionRecord]:
    # DRF skips empty query parameters; `?until=` is a mistake worth telling apart from no filter.
    empty = {key: ["must not be empty"] for key in ("task", *FILTER_NAMES) if request.query_params.get(key) == ""}
    if empty:
        raise exceptions.ValidationError(empty)
    params = HistoryFilterSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    filters = params.validated_data
    if "status" in filters:
        queryset = queryset.filter(status__in=filters["status"])
    if "trigger" in filters:
        queryset = queryset.filter(trigger=filters["trigger"])
    if "since" in filters:
        queryset = queryset.filter(created_at__gte=filters["since"])
    if "until" in filters:
        queryset = queryset.filter(created_at__lt=filters["until"])
    return queryset


def records_queryset() -> QuerySet[TaskExecutionRecord]:
    return TaskExecutionRecord.objects.select_related("triggered_by").order_by("-id")


class StatusView(SchedulerAPIMixin, APIView):
    """The scheduler's state and every task, in the seed's shape."""

    @extend_schema(
        operation_id="scheduler_status",
        summary="Scheduler status and all tasks",
        responses={200: StatusSerializer, **READ_ERRORS},
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        tasks = all_tasks()
        processes = list(SchedulerProcess.objects.order_by("started_at"))
        # Manual runs waiting for a scheduler and runs waiting for a worker, in one query.
        waiting = waiting_counts(TaskStatus.PENDING, TaskStatus.QUEUED)
        queued = queued_counts(waiting)
        context = {"request": request, "now": now, "queued_runs": queued}
        # Liveness is judged from the heartbeats just read, so `running` and `processes` agree.
        alive = [p for p in processes if p.is_alive(now)]
        schedulers = [p for p in alive if p.kind == SchedulerProcess.Kind.SCHEDULER]
        leading = coordination.leader(schedulers)
        leader = leading.label if leading else None
        # Hosts, pids and the processes' details are the operators' business: staff only.
        staff = bool(request.user and request.user.is_staff)
        body = {
            "running": bool(schedulers),
            "task_count": len(tasks),
            "tasks": TaskSerializer(tasks, many=True, context=context).data,
            "process_count": len(alive),
            **(
                {"processes": ProcessSerializer(processes, many=True, context=context).data, "leader": leader}
                if staff
                else {}
            ),
            "pending_runs": sum(n for (_, status), n in waiting.items() if status == TaskStatus.PENDING),
            "queued_runs": sum(queued.values()),
            "heartbeat_timeout_seconds": float(conf.get("LEASE_SECONDS")),
            "server_time": serializers.DateTimeField().to_representation(now),
        }
        return Response(body)


@extend_schema_view(
    list=extend_schema(summary="All registered tasks", responses={200: TaskSerializer(many=True), **READ_ERRORS}),
    retrieve=extend_schema(summary="One task", responses={200: TaskSerializer, **TASK_ERRORS}),
)
class TaskViewSet(SchedulerAPIMixin, GenericViewSet):
    """Registered tasks: see them, trigger, enable, disable and reschedule them, read their history."""

    serializer_class = TaskSerializer
    lookup_field = "name"
    # Any name reaches the view, so that an unknown one gets our JSON 404 naming the known tasks.
    lookup_value_regex = "[^/]+"
    # The task list is short and whole (as in the seed); only history is paginated.
    pagination_class = None

    def get_queryset(self) -> QuerySet[TaskConfig]:
        return tasks_queryset()

    def get_object(self) -> TaskConfig:
        return services.get_task(self.kwargs["name"])

    def _task_response(
        self, name: str, status_code: int = status.HTTP_200_OK, before: TaskConfig | None = None
    ) -> Response:
        """The task as it is now; after a write (``before``: the task before it) that changed when it
        fires, ``next_run_at`` is computed from the new schedule: the scheduler applies the change
        within a poll, and the answer shows the state after the write, not the one before."""
        config = tasks_queryset().get(name=name)
        if before is not None and (before.enabled, before.schedule_fingerprint()) != (
            config.enabled,
            config.schedule_fingerprint(),
        ):
            config.state.next_run_at = expected_next_run(config)
        return Response(TaskSerializer(config, context=self.get_serializer_context()).data, status=status_code)

    def list(self, request: Request) -> Response:
        return Response(TaskSerializer(all_tasks(), many=True, context=self.get_serializer_context()).data)

    def retrieve(self, request: Request, name: str) -> Response:
        self.get_object()
        return self._task_response(name)

    @extend_schema(
        summary="Run the task now (queued for the scheduler process)",
        description=(
            "Records a `pending` manual run and answers 202 with it; the `Location` header (and `url`) is where "
            "to follow it. The web process never runs the task: a scheduler process starts it within a few "
            "seconds. If no scheduler is alive, the run stays queued until one starts (`scheduler_running` is "
            "false). If the task is running and does not allow concurrent runs, nothing is queued: 409. "
            "A disabled task can still be run by hand."
        ),
        request=None,
        responses={
            202: TriggerResponseSerializer,
            **TASK_ERRORS,
            409: OpenApiResponse(ErrorSerializer, description="The task is running and allows no concurrent run."),
        },
    )
    @action(detail=True, methods=["post"])
    def trigger(self, request: Request, name: str) -> Response:
        record = services.request_run(name, user=request.user, origin="api")
        record = records_queryset().get(pk=record.pk)
        context = {**self.get_serializer_context(), "scheduler_running": coordination.alive()}
        data = TriggerResponseSerializer(record, context=context).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})

    @extend_schema(
        summary="Enable the task (overrides the code's `enabled`)",
        request=None,
        responses={200: TaskSerializer, **TASK_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, name: str) -> Response:
        before = services.get_task(name)
        services.enable_task(name, user=request.user)
        return self._task_response(name, before=before)

    @extend_schema(
        summary="Disable the task (overrides the code's `enabled`)",
        description="Its job is removed from the running scheduler within seconds; running runs finish.",
        request=DisableSerializer,
        responses={200: TaskSerializer, 400: INVALID, **TASK_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, name: str) -> Response:
        before = services.get_task(name)
        # No body at all is fine (an empty form); a body that is no JSON object is not.
        data = request.data if not isinstance(request.data, dict) or request.data else {}
        body = DisableSerializer(data=data)
        body.is_valid(raise_exception=True)
        services.disable_task(name, user=request.user, reason=body.validated_data["reason"])
        return self._task_response(name, before=before)

    @extend_schema(
        methods=["PUT"],
        summary="Override the task's schedule",
        description=(
            "Replaces the code's schedule until cleared with DELETE; checked by the same rules as schedules in "
            "code. The running scheduler picks it up within seconds, without restart."
        ),
        request=ScheduleSerializer,
        responses={200: TaskSerializer, 400: INVALID, **TASK_ERRORS},
    )
    @extend_schema(
        methods=["DELETE"],
        summary="Go back to the schedule defined in code",
        request=None,
        responses={200: TaskSerializer, **TASK_ERRORS},
    )
    @action(detail=True, methods=["put", "delete"])
    def schedule(self, request: Request, name: str) -> Response:
        before = services.get_task(name)
        if request.method == "DELETE":
            services.clear_schedule(name, user=request.user)
            return self._task_response(name, before=before)
        body = ScheduleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        services.set_schedule(
            name,
            schedule_type=values["schedule_type"],
            cron_expression=values.get("cron_expression"),
            interval_seconds=values.get("interval_seconds"),
            timezone_name=values.get("timezone") or None,
            user=request.user,
        )
        return self._task_response(name, before=before)

    @extend_schema(
        methods=["PATCH"],
        summary="Override schedule policies (jitter, overlap, catch-up, retries, start/end)",
        description=(
            "Each key given replaces the code's value until cleared; `null` goes back to the code's value for that "
            "key; keys left out stay. Checked by the same rules as policies in code, together with the ones in "
            "force (e.g. `end_date` after `start_date`). The running scheduler picks them up within seconds."
        ),
        request=OptionsSerializer,
        responses={200: TaskSerializer, 400: INVALID, **TASK_ERRORS},
    )
    @extend_schema(
        methods=["DELETE"],
        summary="Go back to the schedule policies defined in code",
        request=None,
        responses={200: TaskSerializer, **TASK_ERRORS},
    )
    # Not named `options`: that is the HTTP OPTIONS handler of every view.
    @action(detail=True, methods=["patch", "delete"], url_path="options", url_name="options")
    def schedule_options(self, request: Request, name: str) -> Response:
        before = services.get_task(name)
        if request.method == "DELETE":
            services.clear_options(name, user=request.user)
            return self._task_response(name, before=before)
        body = OptionsSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        services.set_options(name, dict(body.validated_data), user=request.user)
        return self._task_response(name, before=before)

    @extend_schema(
        methods=["PUT"],
        summary="Override the run time limit",
        request=TimeoutSerializer,
        responses={200: TaskSerializer, 400: INVALID, **TASK_ERRORS},
    )
    @extend_schema(
        methods=["DELETE"],
        summary="Go back to the code's (or the settings') time limit",
        request=None,
        responses={200: TaskSerializer, **TASK_ERRORS},
    )
    @action(detail=True, methods=["put", "delete"])
    def timeout(self, request: Request, name: str) -> Response:
        services.get_task(name)
        if request.method == "DELETE":
            services.set_timeout(name, None, user=request.user)
            return self._task_response(name)
        body = TimeoutSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.set_timeout(name, body.validated_data["timeout_seconds"], user=request.user)
        return self._task_response(name)

    @extend_schema(
        summary="The task's runs, newest first",
        parameters=FILTER_PARAMETERS,
        responses={200: RecordSerializer(many=True), 400: INVALID, **TASK_ERRORS},
    )
    @action(detail=True, methods=["get"], pagination_class=HistoryPagination)
    def history(self, request: Request, name: str) -> Response:
        services.get_task(name)
        queryset = filtered_records(request, records_queryset().filter(task_id=name))
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(RecordSerializer(page, many=True).data)

    @extend_schema(
        summary="One run of the task",
        responses={200: RecordSerializer, **TASK_ERRORS},
    )
    @action(detail=True, methods=["get"], url_path=r"history/(?P<record_id>[0-9]{1,18})", pagination_class=None)
    def history_record(self, request: Request, name: str, record_id: str) -> Response:
        services.get_task(name)
        record = records_queryset().filter(task_id=name, pk=int(record_id)).first()
        if record is None:
            raise exceptions.NotFound(f"task {name!r} has no record {record_id}", code="record_not_found")
        return Response(RecordSerializer(record).data)


@extend_schema_view(
    list=extend_schema(
        summary="Runs of all tasks, newest first",
        parameters=[
            OpenApiParameter(
                "task",
                {"type": "string", "pattern": TASK_NAME_PATTERN.pattern, "maxLength": TASK_NAME_MAX_LENGTH},
                description="Only this task's runs (also of a task no longer registered).",
            ),
            *FILTER_PARAMETERS,
        ],
        responses={
            200: RecordSerializer(many=True),
            400: INVALID,
            **READ_ERRORS,
            404: OpenApiResponse(ErrorSerializer, description="No such page."),
        },
    ),
    retrieve=extend_schema(summary="One run", responses={200: RecordSerializer, **TASK_ERRORS}),
)
class RecordViewSet(SchedulerAPIMixin, GenericViewSet):
    """Execution records of every task (including tasks no longer registered)."""

    serializer_class = RecordSerializer
    pagination_class = HistoryPagination
    lookup_value_regex = "[0-9]{1,18}"

    def get_queryset(self) -> QuerySet[TaskExecutionRecord]:
        return records_queryset()

    def list(self, request: Request) -> Response:
        queryset = filtered_records(request, self.get_queryset())
        if task := request.query_params.get("task"):
            # Checked before it reaches SQL: PostgreSQL refuses some strings (NUL) with an error.
            if message := task_name_error(task):
                raise exceptions.ValidationError({"task": [message]})
            queryset = queryset.filter(task_id=task)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(RecordSerializer(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        record = self.get_queryset().filter(pk=int(pk)).first()
        if record is None:
            raise exceptions.NotFound(f"no record {pk}", code="record_not_found")
        return Response(RecordSerializer(record).data)


class RootView(SchedulerAPIMixin, APIView):
    """Where everything is."""

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        def link(name: str, **kwargs: Any) -> str:
            return reverse(f"scheduler-api:{name}", kwargs=kwargs, request=request)

        return Response(
            {
                "status": link("status"),
                "tasks": link("task-list"),
                "history": link("record-list"),
                "schema": link("schema"),
                "docs": link("docs"),
            }
        )


class NotFoundView(SchedulerAPIMixin, APIView):
    """Any other path under /scheduler/: a JSON 404 instead of Django's HTML page."""

    def get_permissions(self) -> list[Any]:
        return []

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound(f"no such endpoint: {request.path}", code="no_endpoint")

    post = put = patch = delete = options = get
