"""Named crash points for proving delivery guarantees: the process dies on the spot (as with
kill -9) when FAILPOINTS names the point. Off unless set; never set in production."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

EXIT_CODE = 137  # what a SIGKILL'd process reports


class Failpoints:
    def __init__(self, spec: str) -> None:
        self._active = frozenset(name.strip() for name in spec.split(",") if name.strip())

    def __call__(self, name: str) -> None:
        if name in self._active:
            log.critical("Failpoint %s: exiting now", name)
            logging.shutdown()
            os._exit(EXIT_CODE)


NO_FAILPOINTS = Failpoints("")
