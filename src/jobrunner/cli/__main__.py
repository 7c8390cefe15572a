"""``python -m jobrunner.cli ...``: the same as the ``jobrunner`` command."""

from jobrunner.cli import main

raise SystemExit(main())
