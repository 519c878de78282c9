"""Hooks for code that reacts to runs (alerts, metrics): sent after the record is committed."""

from django.dispatch import Signal

# Sent when a run starts executing. kwargs: record (TaskExecutionRecord), task (BaseTask).
run_started = Signal()
# Sent when a record reaches a terminal status, whatever it is (success, failed, timeout, skipped,
# missed, interrupted). kwargs: record (TaskExecutionRecord).
run_finished = Signal()
