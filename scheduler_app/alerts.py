"""Failure alerts: tell the operators when a task keeps failing, and when it is fine again.

Rules, per task:

* an alert when a run fails or times out and that makes N failures in a row (N is the task class's
  ``alert_after_failures``, else ``SCHEDULER["ALERT_AFTER_FAILURES"]``; 0 turns alerts off);
* nothing more while the streak goes on (one alert per streak, however long);
* one recovery notice when a run succeeds after such a streak.

Skipped, missed and interrupted runs neither extend nor end a streak. Streaks are read from the
execution records (the N outcomes that finished before this one), so every process that runs tasks
(schedulers, ``trigger_task``) judges alike, without shared memory, and a restart forgets nothing.

Delivery (mail to ``settings.ADMINS`` and/or a JSON POST to ``ALERT_WEBHOOK_URL``) happens in a background
thread of the process that ran the task: the scheduler never waits for a mail server or a webhook,
and a delivery failure is logged, never raised.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import django
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.mail import EmailMessage
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Max
from django.utils import timezone

from scheduler_app import conf
from scheduler_app.models import FAILURE_STATUSES, TaskExecutionRecord
from scheduler_app.registry import task_registry
from scheduler_app.signals import run_finished
from scheduler_app.tasks.base import TaskStatus

logger = logging.getLogger("scheduler_app.alerts")

FAILING = "task_failing"
RECOVERED = "task_recovered"
OUTCOME_STATUSES = (TaskStatus.SUCCESS, *FAILURE_STATUSES)
# Alerts waiting for delivery; beyond this (a receiver down for long), new ones are dropped and logged.
QUEUE_SIZE = 1000
ERROR_EXCERPT = 4000
# Records beyond the threshold read to put overlapping runs in the order they finished.
OVERLAP_WINDOW = 50
# The delivery thread ends after this many idle seconds (a new alert starts it again).
IDLE_SECONDS = 2.0


@dataclass
class Alert:
    event: str
    task: str
    streak: int
    threshold: int
    record: dict[str, Any]

    @property
    def subject(self) -> str:
        if self.event == FAILING:
            runs = "run" if self.streak == 1 else f"{self.streak} runs in a row"
            return f"task {self.task} is failing: {runs} {self.record['status']}"
        return f"task {self.task} recovered after {self.streak} failed run(s)"

    def payload(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "task": self.task,
            "summary": self.subject,
            "consecutive_failures": self.streak,
            "alert_after_failures": self.threshold,
            "record": self.record,
            "sent_at": timezone.now().isoformat(),
        }

    def body(self) -> str:
        record = self.record
        lines = [
            self.subject,
            "",
            f"task:      {self.task}",
            f"run:       #{record['id']} ({record['trigger']}), {record['status']}",
            f"started:   {record['started_at']}",
            f"finished:  {record['finished_at']} ({record['duration_seconds']} s)",
            f"process:   {record['worker'] or '-'}",
            f"message:   {record['message'] or '-'}",
        ]
        if record.get("error"):
            lines += ["", record["error"]]
        return "\n".join(lines)


def threshold_for(task_name: str) -> int:
    """N for this task: its class's ``alert_after_failures``, else the SCHEDULER setting."""
    value = None
    if task_name in task_registry:
        value = getattr(task_registry.get(task_name), "alert_after_failures", None)
    if value is None:
        value = conf.get("ALERT_AFTER_FAILURES")
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        logger.warning("alert_after_failures of %s is not a number (%r); alerts are off for it", task_name, value)
        return 0


@dataclass(frozen=True)
class Channels:
    """Where alerts go, read from settings when the alert is raised (not when it is delivered)."""

    mail: bool = False
    webhook_url: str = ""
    webhook_headers: tuple[tuple[str, str], ...] = ()
    webhook_timeout: float = 5.0

    def __bool__(self) -> bool:
        return self.mail or bool(self.webhook_url)

    def names(self) -> list[str]:
        return [name for name, on in (("mail", self.mail), ("webhook", bool(self.webhook_url))) if on]


def channels() -> Channels:
    headers = conf.get("ALERT_WEBHOOK_HEADERS") or {}
    return Channels(
        mail=bool(conf.get("ALERT_EMAIL") and getattr(settings, "ADMINS", None)),
        webhook_url=str(conf.get("ALERT_WEBHOOK_URL") or ""),
        webhook_headers=tuple((str(k), str(v)) for k, v in headers.items()),
        webhook_timeout=float(conf.get("ALERT_WEBHOOK_TIMEOUT")),
    )


def evaluate(record: TaskExecutionRecord) -> Alert | None:
    """The alert this finished record calls for, if any. At most two small indexed queries.

    Streaks follow the order in which runs finished: of two overlapping runs (a task that allows
    concurrent runs), the one that ended first comes first, however their ids compare.
    """
    if record.status not in OUTCOME_STATUSES:
        return None
    threshold = threshold_for(record.task_id)
    if threshold <= 0:
        return None
    previous = _finished_before(record, threshold)
    leading_failures = next((i for i, status in enumerate(previous) if status == TaskStatus.SUCCESS), len(previous))
    if record.status in FAILURE_STATUSES:
        # Exactly N-1 failures before this one (then a success, or nothing): the streak reaches N now.
        if leading_failures != threshold - 1:
            return None
        return Alert(FAILING, record.task_id, threshold, threshold, _describe(record))
    if leading_failures < threshold:
        return None  # no streak long enough to have been alerted on
    outcomes = TaskExecutionRecord.objects.filter(task_id=record.task_id, pk__lt=record.pk)
    last_success = outcomes.filter(status=TaskStatus.SUCCESS).aggregate(pk=Max("pk"))["pk"] or 0
    streak = outcomes.filter(pk__gt=last_success, status__in=FAILURE_STATUSES).count()
    return Alert(RECOVERED, record.task_id, max(streak, leading_failures), threshold, _describe(record))


def _finished_before(record: TaskExecutionRecord, count: int) -> list[str]:
    """Statuses of the ``count`` outcomes of the task that finished before ``record``, newest first.

    Read from the task's latest records by id (the index), then put in finish order: runs that
    overlap are never far apart in ids, so a window of OVERLAP_WINDOW more records holds them.
    """
    recent = (
        TaskExecutionRecord.objects.filter(task_id=record.task_id, status__in=OUTCOME_STATUSES)
        .exclude(pk=record.pk)
        .order_by("-pk")
        .values_list("pk", "status", "finished_at")[: count + OVERLAP_WINDOW]
    )
    ended = record.finished_at
    before = [
        (finished_at, pk, status)
        for pk, status, finished_at in recent
        if finished_at is not None and ended is not None and (finished_at, pk) < (ended, record.pk)
    ]
    before.sort(reverse=True)
    return [status for _, _, status in before[:count]]


def _describe(record: TaskExecutionRecord) -> dict[str, Any]:
    error = record.error or ""
    if len(error) > ERROR_EXCERPT:
        error = "...\n" + error[-ERROR_EXCERPT:]  # the end of a traceback says the most
    return {
        "id": record.pk,
        "trigger": record.trigger,
        "status": str(record.status),
        "attempt": record.attempt,
        "scheduled_at": record.scheduled_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "duration_seconds": record.duration_seconds,
        "message": record.message,
        "error": error,
        "worker": record.worker_label,
    }


# -- delivery ------------------------------------------------------------------------------------


def admin_addresses() -> list[str]:
    """``settings.ADMINS`` as addresses: Django 6 lists addresses, 5.2 (name, address) pairs; both go."""
    return [str(entry[1]) if isinstance(entry, list | tuple) else str(entry) for entry in settings.ADMINS or ()]


def send_mail(alert: Alert, to: Channels) -> None:
    """What ``mail_admins`` does, with either form of ADMINS, through the default mailer.

    ``send()`` without a connection takes the default mailer: ``MAILERS["default"]`` on Django 6.1+,
    ``EMAIL_BACKEND`` and the ``EMAIL_*`` settings before.
    """
    EmailMessage(
        subject=f"{settings.EMAIL_SUBJECT_PREFIX}{alert.subject}",
        body=alert.body(),
        from_email=settings.SERVER_EMAIL,
        to=admin_addresses(),
    ).send()


def send_webhook(alert: Alert, to: Channels) -> None:
    url = to.webhook_url
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"ALERT_WEBHOOK_URL must be an http(s) URL, got {url!r}")
    body = json.dumps(alert.payload(), cls=DjangoJSONEncoder).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "scheduler-app-alerts/1", **dict(to.webhook_headers)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=to.webhook_timeout) as response:
        response.read(1024)


SENDERS = {"mail": send_mail, "webhook": send_webhook}


def deliver(alert: Alert, to: Channels) -> dict[str, bool]:
    """Send through each channel; a failure is logged and the other channels still go."""
    results = {}
    for channel in to.names():
        try:
            SENDERS[channel](alert, to)
            results[channel] = True
            logger.info("alert sent by %s: %s", channel, alert.subject, extra={"task": alert.task})
        except Exception as exc:
            results[channel] = False
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            logger.warning(
                "alert delivery by %s failed (%s: %s): %s",
                channel,
                type(exc).__name__,
                reason,
                alert.subject,
                extra={"task": alert.task, "run_id": alert.record["id"]},
            )
    return results


class Dispatcher:
    """One daemon thread per process that delivers queued alerts in order."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[Alert, Channels] | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def submit(self, alert: Alert, to: Channels) -> bool:
        try:
            self.queue.put_nowait((alert, to))
        except queue.Full:
            logger.error("alert queue full (%d); dropped: %s", QUEUE_SIZE, alert.subject)
            return False
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._work, name="scheduler-alerts", daemon=True)
                self.thread.start()
        return True

    def _work(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self.lock:
                    # Idle: end the thread, so that a stopping process has no thread to wait for.
                    # submit() starts a new one for an alert queued after this check.
                    if self.queue.empty():
                        self.thread = None
                        return
                continue
            try:
                if item is None:
                    with self.lock:
                        self.thread = None
                    return
                deliver(*item)
            except Exception:
                logger.exception("alert delivery crashed")
            finally:
                self.queue.task_done()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert was tried; False if some are still queued at the deadline."""
        with self.queue.all_tasks_done:
            return self.queue.all_tasks_done.wait_for(lambda: not self.queue.unfinished_tasks, timeout)

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued (within ``timeout``) and end the thread; True if nothing was left."""
        delivered = self.flush(timeout)
        with self.lock:
            thread = self.thread
        if thread is not None and thread.is_alive():
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                return False
            thread.join(timeout=1.0)
        return delivered


dispatcher = Dispatcher()
flush = dispatcher.flush
shutdown = dispatcher.shutdown
# Alerts of the last runs before a clean stop still go out (within a short bound).
atexit.register(dispatcher.flush, 5.0)


def on_run_finished(sender: Any, record: TaskExecutionRecord, **kwargs: Any) -> None:
    to = channels()
    if not to:
        return  # nothing configured: not even a query
    try:
        alert = evaluate(record)
    except Exception:
        logger.exception("could not evaluate the alert rules for run %s of %s", record.pk, record.task_id)
        return
    if alert is not None:
        logger.info("alert: %s", alert.subject, extra={"task": alert.task, "run_id": record.pk})
        dispatcher.submit(alert, to)


run_finished.connect(on_run_finished, dispatch_uid="scheduler_app.alerts.on_run_finished")


@register("scheduler")
def check_operations_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The alert, metrics and health keys: a typo must fail ``manage.py check``, not a 2 a.m. alert."""
    errors: list[CheckMessage] = []

    def error(key: str, message: str, code: str) -> None:
        errors.append(Error(f"SCHEDULER[{key!r}] {message}", id=f"scheduler.{code}"))

    threshold = conf.get("ALERT_AFTER_FAILURES")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        error("ALERT_AFTER_FAILURES", f"must be a whole number >= 0 (0 turns alerts off), got {threshold!r}.", "E030")
    for task in task_registry.all():
        value = getattr(task, "alert_after_failures", None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            errors.append(
                Error(
                    f"Task {task.name!r}: alert_after_failures must be None or a whole number >= 0, got {value!r}.",
                    id="scheduler.E030",
                )
            )
    url = conf.get("ALERT_WEBHOOK_URL")
    if not isinstance(url, str) or (
        url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc)
    ):
        error("ALERT_WEBHOOK_URL", f"must be empty or an http(s) URL, got {url!r}.", "E031")
    headers = conf.get("ALERT_WEBHOOK_HEADERS")
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        error("ALERT_WEBHOOK_HEADERS", "must be a dict of header names to string values.", "E032")
    for key in ("ALERT_WEBHOOK_TIMEOUT", "HEALTH_MAX_HEARTBEAT_AGE"):
        value = conf.get(key)
        if value is None and key == "HEALTH_MAX_HEARTBEAT_AGE":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            error(key, f"must be a number of seconds greater than 0, got {value!r}.", "E033")
    token_env = conf.get("METRICS_TOKEN_ENV")
    if token_env is not None and not isinstance(token_env, str):
        error("METRICS_TOKEN_ENV", f"must be the name of an environment variable, got {token_env!r}.", "E034")
    return errors


@register("scheduler")
def check_mail_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not channels().mail:
        return []
    names = ("MAILERS", "EMAIL_BACKEND", "EMAIL_HOST")
    return mail_settings_warnings(django.VERSION, {name for name in names if settings.is_overridden(name)})


def mail_settings_warnings(version: tuple[Any, ...], configured: set[str]) -> list[CheckMessage]:
    """``MAILERS`` exists from Django 6.1 on: before, a project that sets only it would lose its alert mails."""
    if tuple(version[:2]) >= (6, 1) or "MAILERS" not in configured or configured & {"EMAIL_BACKEND", "EMAIL_HOST"}:
        return []
    return [
        Warning(
            f"settings.MAILERS is read by Django 6.1 and later only; on Django {version[0]}.{version[1]} the alert "
            "mails to ADMINS go through EMAIL_BACKEND and the EMAIL_* settings, which are not set here.",
            hint="Set EMAIL_BACKEND (and EMAIL_HOST, EMAIL_PORT, ...) when django.VERSION < (6, 1), "
            "MAILERS from 6.1 on (README: Use it in your own project).",
            id="scheduler.W050",
        )
    ]
