"""File descriptors: the open-file limit raised at start-up, one line when accept() runs dry."""

from __future__ import annotations

import asyncio
import errno
import json
import resource
import subprocess
import sys
from typing import Any

import pytest

from server.http.descriptors import (
    RESERVED_DESCRIPTORS,
    AcceptFailures,
    connection_cap,
    raise_open_file_limit,
)
from server.http.throttle import Throttle

RAISE_IN_A_CHILD = """
import resource, sys
from server.http.descriptors import raise_open_file_limit
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[1])
"""


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    """Make sure a process started with the usual 1,024 takes what the system allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("needs a finite hard open-file limit above 256")
    result = subprocess.run(
        [sys.executable, "-c", RAISE_IN_A_CHILD, "256", str(hard)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == [str(hard), str(hard)]


def test_raising_when_already_at_the_hard_limit_changes_nothing() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_open_file_limit() >= soft


@pytest.mark.parametrize(
    ("configured", "open_files", "cap"),
    [
        (1000, 1_048_576, 1000),
        (1000, 1024, 1024 - RESERVED_DESCRIPTORS),
        (10, 1024, 10),
        (1000, 100, 1),
    ],
)
def test_the_cap_leaves_descriptors_for_everything_else(
    configured: int, open_files: int, cap: int
) -> None:
    assert connection_cap(configured, open_files) == cap


def test_a_lowered_cap_is_said_once_at_start_up(log_output: Any) -> None:
    connection_cap(1000, 1024)
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["WARNING"]
    assert "HTTP_MAX_CONNECTIONS" in lines[0]["message"]


def test_failed_accepts_are_one_line_per_interval_without_a_traceback(log_output: Any) -> None:
    """A flood of accepts failing with EMFILE: one line, counted, instead of a traceback each."""
    now = [0.0]
    handler = AcceptFailures(None, Throttle(interval=10, clock=lambda: now[0]))
    loop = asyncio.new_event_loop()
    try:
        for second in range(25):
            now[0] = float(second)
            for _ in range(1000):
                error = OSError(errno.EMFILE, "Too many open files")
                handler(
                    loop, {"message": "socket.accept() out of system resource", "exception": error}
                )
    finally:
        loop.close()
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["WARNING"] * 3  # at 0, 10 and 20 s
    assert "accepts failed: 1;" in lines[0]["message"]
    assert "accepts failed: 10000;" in lines[1]["message"]
    assert not [line for line in lines if "exception" in line]


def test_other_loop_errors_reach_the_handler_that_was_there() -> None:
    seen: list[dict[str, Any]] = []
    handler = AcceptFailures(lambda loop, context: seen.append(context))
    loop = asyncio.new_event_loop()
    try:
        context = {"message": "boom", "exception": OSError(errno.EPIPE, "Broken pipe")}
        handler(loop, context)
    finally:
        loop.close()
    assert seen == [context]


def test_the_throttle_counts_what_it_kept_quiet() -> None:
    now = [0.0]
    throttle = Throttle(interval=10, clock=lambda: now[0])
    heard = []
    for second in (0, 1, 2, 9.9, 10, 11, 30):
        now[0] = second
        heard.append(throttle.event())
    assert heard == [1, None, None, None, 4, None, 2]
