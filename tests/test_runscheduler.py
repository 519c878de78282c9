"""``runscheduler``'s signal handling, in this process (the real process's stops: test_scheduler.py)."""

from __future__ import annotations

import signal
import threading

from scheduler_app.management.commands.runscheduler import StopOnSignal
from tests.processes import wait_for

RECEIVED_SIGINT = "received SIGINT, stopping... (Ctrl-C again: at once)"


def test_a_signal_that_lands_while_the_loop_holds_its_stop_events_lock_still_stops_it() -> None:
    # The handler runs in the control loop's thread between two bytecodes, maybe inside
    # Event.wait's `with self._cond:`. A handler that set the event there waited for its own
    # thread's lock: the stop hung after "received SIGINT", with every later signal stuck behind it.
    stopping = threading.Event()
    said: list[str] = []
    stop_on_signal = StopOnSignal(stopping.set, said.append, said.append)
    handled = threading.Event()

    def control_loop_holding_the_lock() -> None:
        with stopping._cond:  # type: ignore[attr-defined]  # where Event.wait holds it
            stop_on_signal.handle(signal.SIGINT, None)
            handled.set()

    threading.Thread(target=control_loop_holding_the_lock, daemon=True).start()
    assert handled.wait(5), "the handler waited for a lock its own thread held"
    assert stopping.wait(5), "the stop was never asked for"
    wait_for(lambda: said == [RECEIVED_SIGINT], timeout=5, message="the stop to be announced")


def test_sigterm_asks_for_the_graceful_stop_and_does_not_count_as_a_second_ctrl_c() -> None:
    stops: list[str] = []
    said: list[str] = []
    stop_on_signal = StopOnSignal(lambda: stops.append("stop"), said.append, said.append)
    stop_on_signal.handle(signal.SIGINT, None)
    stop_on_signal.handle(signal.SIGTERM, None)  # `make run`'s script forwards the terminal's Ctrl-C
    wait_for(lambda: len(stops) == 2, timeout=5, message="both signals to ask for the stop")
    assert stop_on_signal.interrupts == 1
    assert said == [RECEIVED_SIGINT, "received SIGTERM, stopping... (Ctrl-C again: at once)"]
