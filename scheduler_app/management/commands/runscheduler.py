"""``manage.py runscheduler``: run the scheduler in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand

from scheduler_app import alerts, conf
from scheduler_app.scheduler import EXIT_THREAD_DIED, task_scheduler


class Command(BaseCommand):
    help = (
        "Run the task scheduler in the foreground (APScheduler with DjangoJobStore). Several may run "
        "against one database: one is active, the others stand by and take over when it dies. "
        "SIGINT or SIGTERM stops it cleanly: running tasks get SCHEDULER['SHUTDOWN_GRACE'] seconds, "
        "then are recorded as interrupted; the exit status is 0. When one of its long-lived threads dies "
        f"(a bug), it says so, stops the same way and exits with status {EXIT_THREAD_DIED}: restart it. "
        "A second SIGINT (Ctrl-C) exits at once (130)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        interrupts = 0

        def request_stop(signum: int, frame: FrameType | None) -> None:
            nonlocal interrupts
            # Only SIGINT counts: under `make run` one Ctrl-C brings the terminal's SIGINT and the
            # script's SIGTERM, and that must still be the graceful stop.
            interrupts += signum == signal.SIGINT
            if interrupts >= 2:
                self.stderr.write(
                    "second Ctrl-C: exiting now, without waiting for running tasks "
                    "(a scheduler that starts on this host records them interrupted)"
                )
                logging.shutdown()
                sys.stdout.flush()
                os._exit(130)
            self.stdout.write(f"received {signal.Signals(signum).name}, stopping... (Ctrl-C again: at once)")
            task_scheduler.request_stop()

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        threading.excepthook = log_thread_death
        self.stdout.write(
            f"scheduler starting with {len(task_scheduler.registry)} task(s); "
            f"poll every {conf.get('POLL_INTERVAL')}s, lease {conf.get('LEASE_SECONDS')}s"
        )
        # Django, the tasks' modules and the settings are loaded: kept out of the collector's full
        # passes, which otherwise walk them all while every thread waits (one took 73 ms with
        # 1,000 tasks, and the fires due then were that late).
        gc.collect()
        gc.freeze()
        task_scheduler.run_forever()
        alerts.shutdown(timeout=5.0)  # the last runs' alerts go out before the process exits
        status = EXIT_THREAD_DIED if task_scheduler.problem else 0
        if status:
            self.stderr.write(f"scheduler stopped: {task_scheduler.problem}")
        else:
            self.stdout.write("scheduler stopped")
        exit_if_threads_linger(status)
        if status:
            sys.exit(status)


def log_thread_death(args: threading.ExceptHookArgs) -> None:
    """A thread ended by an exception: through the logging setup (JSON in production), not bare stderr.
    The control loop notices the dead thread and stops the process (see TaskScheduler._check_threads)."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("scheduler_app.scheduler").critical(
        "thread %s died", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


def exit_if_threads_linger(status: int = 0) -> None:
    """Exit at once when abandoned task code still holds a thread.

    An interrupted async task keeps running in asgiref's event-loop thread, a thread-pool worker
    that the interpreter joins at exit: forever, if the task never ends. Its record is already
    `interrupted`, the job store flushed and the lease released, so nothing is lost by not waiting.
    """
    # Daemon threads (the worker pool's, abandoned or not) never hold up the exit; the others would.
    lingering = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if lingering:
        logging.getLogger("scheduler_app.scheduler").warning(
            "exiting without waiting for %d thread(s) still in task code: %s",
            len(lingering),
            ", ".join(t.name for t in lingering),
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
