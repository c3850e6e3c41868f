"""File descriptors: as many as the system grants, and one line when they run out.

Every client connection holds a descriptor. Systems start processes with a
soft limit of 1,024 while allowing far more (the hard limit): `serve` takes
what is allowed, and keeps the connection cap below it with room for the
database pool, GitHub's connections and the files a process has open.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from collections.abc import Callable
from typing import Any

from server.http.throttle import Throttle

logger = logging.getLogger("ghvault.server")

# Descriptors kept free of client connections: the database pool and the
# notification listener, GitHub's connection pool (aiohttp's 100), the
# listening socket, the event loop's own, log and SQLite files, and a burst
# of new connections (asyncio accepts up to its backlog of 100 at once,
# before any of them is counted).
RESERVED_DESCRIPTORS = 320
# The errors with which accept() says the process or the system is out of them.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            # macOS refuses more than kern.maxfilesperproc even below the hard limit.
            logger.warning("cannot raise the open-file limit to %d: %s", hard, exc)
        else:
            logger.info("open-file limit raised from %d to %d", soft, hard)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(configured: int, open_files: int) -> int:
    """The most client connections: HTTP_MAX_CONNECTIONS, if the descriptors allow it."""
    if open_files == resource.RLIM_INFINITY:
        return configured
    allowed = max(1, open_files - RESERVED_DESCRIPTORS)
    if allowed < configured:
        logger.warning(
            "HTTP_MAX_CONNECTIONS lowered from %d to %d: the open-file limit is %d "
            "(raise LimitNOFILE / ulimit -n)",
            configured,
            allowed,
            open_files,
        )
        return allowed
    return configured


class AcceptFailures:
    """The event loop's exception handler: one line per interval when accept() runs dry.

    asyncio reports every failed accept with a traceback and retries a second
    later; against a flood of connections that was megabytes of log a second.
    Anything else goes to the handler that was there before.
    """

    def __init__(self, previous: ExceptionHandler | None, throttle: Throttle | None = None) -> None:
        self._previous = previous
        self._throttle = throttle or Throttle()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in OUT_OF_DESCRIPTORS:
            if (count := self._throttle.event()) is not None:
                logger.warning(
                    "out of file descriptors (%s), accepts failed: %d; connections wait "
                    "in the listen queue (logged at most every %g s)",
                    errno.errorcode.get(error.errno or 0, "?"),
                    count,
                    self._throttle.interval,
                )
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
