#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        # Loaded here so that a settings error is one line: Django's command loader would swallow it
        # and fail later with "KeyError: '<command>'" and a long traceback.
        settings.INSTALLED_APPS  # noqa: B018
    except ImproperlyConfigured as exc:
        sys.exit(f'manage.py: {exc} For the local setup of `make run`: make manage ARGS="{" ".join(sys.argv[1:])}"')
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
