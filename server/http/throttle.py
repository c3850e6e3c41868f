"""At most one log line per interval for what an outsider can repeat at will.

A flood of connections the server cannot take, or has no descriptor for,
would otherwise log once per connection: megabytes a second, drowning the
lines an operator needs. The first event logs at once; later ones within
the interval are counted into the next line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

LOG_INTERVAL_SECONDS = 10.0


class Throttle:
    def __init__(
        self,
        interval: float = LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._next_line = -math.inf
        self._unlogged = 0

    def event(self) -> int | None:
        """Count one event: how many to report now (this one included), or None to stay quiet."""
        self._unlogged += 1
        now = self._clock()
        if now < self._next_line:
            return None
        self._next_line = now + self.interval
        count, self._unlogged = self._unlogged, 0
        return count
