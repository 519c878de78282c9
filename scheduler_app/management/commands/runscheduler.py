"""``manage.py runscheduler``: run the scheduler in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
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
        stop_on_signal = StopOnSignal(task_scheduler.request_stop, self.stdout.write, self.stderr.write)
        signal.signal(signal.SIGINT, stop_on_signal.handle)
        signal.signal(signal.SIGTERM, stop_on_signal.handle)
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


class StopOnSignal:
    """SIGINT and SIGTERM ask for the graceful stop; a second SIGINT exits at once.

    The handler runs in the main thread, which is the control loop, between two of its bytecodes:
    maybe while it holds the lock of the stop event it waits on (``Event.wait`` holds it on the way
    in and out). ``Event.set()`` there would wait for that lock forever, and so would every later
    signal (a stop that hung after "received SIGINT"). So the handler takes no lock: it puts the
    signal on a ``SimpleQueue``, whose ``put`` is reentrant, and a relay thread asks for the stop.
    """

    def __init__(
        self,
        request_stop: Callable[[], None],
        say: Callable[[str], None],
        complain: Callable[[str], None],
    ) -> None:
        self.request_stop = request_stop
        self.say = say
        self.complain = complain
        self.interrupts = 0
        self._received: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.relay = threading.Thread(target=self._relay, name="signal-relay", daemon=True)
        self.relay.start()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        # Only SIGINT counts: under `make run` one Ctrl-C brings the terminal's SIGINT and the
        # script's SIGTERM, and that must still be the graceful stop.
        self.interrupts += signum == signal.SIGINT
        if self.interrupts >= 2:
            try:
                self.complain(
                    "second Ctrl-C: exiting now, without waiting for running tasks "
                    "(a scheduler that starts on this host records them interrupted)"
                )
                logging.shutdown()
                sys.stdout.flush()
            finally:  # the main thread may have been writing too (a reentrant write raises): exit anyway
                os._exit(130)
        self._received.put(signum)

    def _relay(self) -> None:
        while True:
            signum = self._received.get()
            self.say(f"received {signal.Signals(signum).name}, stopping... (Ctrl-C again: at once)")
            self.request_stop()


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
