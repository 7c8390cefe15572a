#!/usr/bin/env python
"""The test project's manage.py (tests run ``jobrunner_worker`` through it)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jrproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
