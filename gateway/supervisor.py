"""Long-lived workers of the daemon never die silently: a crash is logged and the worker restarted.

Theory of operation. Every task the daemon keeps for its whole life (line keepers, the identity
worker, push forwarders, dial-outs, scans, the registry flush, the watchdog) runs under
``supervise``. When the worker raises, or returns although it should run for ever, one error
line with the traceback is logged and the worker is started again after a back-off that doubles
from ``backoff_min_s`` up to ``backoff_max_s``; a worker that then runs for ``healthy_s`` starts
again from the shortest back-off next time. Cancellation (shutdown) ends the supervisor too.
We restart in place rather than exit, because one failed part (say, a scan of one line) must not
cut every HES association on the others; the restart count is in ``status``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)

Worker = Callable[[], Coroutine[Any, Any, None]]

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0  # a worker that keeps failing costs one log line a minute at most
HEALTHY_S = 300.0  # a worker that ran this long before failing is restarted at once (after the shortest back-off)


class Supervisor:
    """Restarts failed workers; counts restarts per worker name."""

    def __init__(self, *, backoff_min_s: float = BACKOFF_MIN_S, backoff_max_s: float = BACKOFF_MAX_S,
                 healthy_s: float = HEALTHY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.healthy_s = healthy_s
        self.restarts: Counter[str] = Counter()
        self._clock = clock

    async def supervise(self, work: Worker, name: str) -> None:
        """Run ``work()`` until cancelled, starting it again whenever it fails."""
        backoff = self.backoff_min_s
        while True:
            started = self._clock()
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.error("worker.crashed", worker=name, restart_in_s=backoff, exc_info=True)
            else:
                log.error("worker.ended", worker=name, restart_in_s=backoff)  # it should run for ever
            if self._clock() - started >= self.healthy_s:
                backoff = self.backoff_min_s
            self.restarts[name] += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)
