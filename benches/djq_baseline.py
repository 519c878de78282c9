"""Baseline helper for django-q2 (scheduler + ORM broker): create schedules, run one scheduler pass.

``python -m benches.djq_baseline setup --schedules N --due`` creates N schedules of the no-op job;
``fire`` runs django-q2's own ``scheduler()`` once (what its cluster does every 30 s), so that the
due schedules are queued on the ORM broker now instead of up to 30 s later.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["setup", "fire"])
    parser.add_argument("--schedules", type=int, default=0)
    parser.add_argument("--due", action="store_true", help="due now (else next run in a day)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benches.settings")
    os.environ["BENCH_DJANGO_Q"] = "1"
    import django

    django.setup()
    from django.utils import timezone
    from django_q.models import Schedule

    if args.action == "setup":
        next_run = timezone.now() - timedelta(seconds=1) if args.due else timezone.now() + timedelta(days=1)
        Schedule.objects.bulk_create(
            [
                Schedule(
                    name=f"noop_{index:05d}",
                    func="benches.jobs.noop",
                    schedule_type=Schedule.MINUTES,
                    minutes=1 if args.due else 1440,
                    repeats=-1,
                    next_run=next_run,
                )
                for index in range(args.schedules)
            ]
        )
        print(f"created {args.schedules} schedules", flush=True)
    else:
        from django_q.brokers import get_broker
        from django_q.scheduler import scheduler

        started = time.time()
        scheduler(broker=get_broker())
        print(f"FIRED {started:.6f} {time.time():.6f}", flush=True)


if __name__ == "__main__":
    main()
