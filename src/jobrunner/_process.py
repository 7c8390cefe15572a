"""Ending a worker process that must not wait for what cannot be stopped.

A plain ``def`` handler's thread cannot be interrupted, an ``async def`` handler may ignore
cancellation, and Temporal's SDK runs native threads: interpreter exit would wait for them
although their attempts are recorded (or handed back) already.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn

__all__ = ["hard_exit"]


def hard_exit(code: int) -> NoReturn:
    """Flush logs and standard streams, then end the process at once with ``code``."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
