"""`ghvault serve --workers N`: N server processes sharing one port.

Each worker is a whole `ghvault serve` (its own event loop, pool and
caches) listening on the same address with SO_REUSEPORT, so the kernel
spreads new connections over them. The parent only starts them, forwards
SIGTERM/SIGINT, and exits when they have: if one worker exits, it stops
the others and exits with that worker's code, so a supervisor (systemd)
restarts the whole set. A port of 0 is chosen once, here, for all.
`on_exit` hears of each worker's end (its pid), e.g. to forget its metrics.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

# How long a stopping worker may take, beyond its own grace period, before it is killed.
STOP_MARGIN_SECONDS = 20.0


def reserve_port(host: str, port: int) -> tuple[socket.socket | None, int]:
    """The port the workers bind; for 0, a socket holding a free one until they have."""
    if port != 0:
        return None, port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, 0))
    return holder, holder.getsockname()[1]


def run_workers(
    count: int,
    host: str,
    port: int,
    worker: Callable[[str, int], int],
    *,
    grace_seconds: float = 10.0,
    on_exit: Callable[[int], None] | None = None,
) -> int:
    """Run `worker(host, port)` in `count` processes; their first non-zero exit code, or 0.

    A worker still running `grace_seconds` (SHUTDOWN_GRACE_SECONDS) and a
    margin after being told to stop is killed. `on_exit(pid)` is called once
    for each worker, after it has exited.
    """
    holder, port = reserve_port(host, port)
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    ended: set[int] = set()
    stopping = False

    def exited(process: BaseProcess) -> None:
        if process.pid is not None and process.pid not in ended:
            ended.add(process.pid)
            if on_exit is not None:
                on_exit(process.pid)

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(count):
            started = context.Process(target=_exit_with, args=(worker, host, port), daemon=False)
            started.start()
            processes.append(started)
        exit_code = 0
        waiting = {process.sentinel: process for process in processes}
        while waiting:
            for sentinel in multiprocessing.connection.wait(list(waiting)):
                assert isinstance(sentinel, int)  # wait() hands back what it was given
                process = waiting.pop(sentinel)
                process.join()
                exited(process)
                if holder is not None:
                    # Every worker bound the port (or failed): it is theirs now.
                    holder.close()
                    holder = None
                code = process.exitcode or 0
                if code != 0 and not stopping:
                    exit_code = exit_code or (code if code > 0 else 1)
                if not stopping:
                    stop(signal.SIGTERM, None)
        return exit_code
    finally:
        for process in processes:
            process.join(grace_seconds + STOP_MARGIN_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
            exited(process)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if holder is not None:
            holder.close()


def _exit_with(worker: Callable[[str, int], int], host: str, port: int) -> None:
    sys.exit(worker(host, port))
