"""The no-op job the baselines run (APScheduler jobs and django-q2 schedules need a dotted function)."""


def noop() -> None:
    return None
