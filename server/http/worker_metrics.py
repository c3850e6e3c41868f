"""The directory where the workers of `ghvault serve --workers N` add up their metrics.

prometheus-client shares numbers between processes through files in
PROMETHEUS_MULTIPROC_DIR, and chooses that mode when it is imported: so the parent
names the directory in its own environment before it spawns the workers, which start
with a copy of it. When a worker exits, its live gauges (the pool in use) must stop
counting; its counters and histograms stay, so totals never go backwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from prometheus_client import multiprocess

from server.config import ConfigError

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# What prometheus-client writes there: <type>[_<gauge mode>]_<pid>.db. It reads every
# *.db file of the directory as one of its own.
_METRICS_FILE = re.compile(
    r"(counter|histogram|summary|gauge_(live)?(all|min|max|sum|mostrecent))_\d+\.db"
)


@contextlib.contextmanager
def shared_metrics_directory(
    environ: MutableMapping[str, str], configured: Path | None
) -> Iterator[Path]:
    """The workers' metrics directory, named in `environ` while the block runs.

    `configured` (the operator's PROMETHEUS_MULTIPROC_DIR) first loses the metrics files
    of earlier processes, so their numbers do not add in; other files stay, but another
    *.db file is refused. Without one, a private temporary directory (mode 0700) is
    made, and removed when the block ends.
    """
    if configured is not None:
        _remove_metrics_files(configured)
        yield configured
        return
    try:
        directory = Path(tempfile.mkdtemp(prefix="ghvault-metrics-"))
    except OSError as exc:
        raise ConfigError(
            f"cannot create a temporary directory for the workers' metrics in "
            f"{tempfile.gettempdir()} ({exc.strerror}): set TMPDIR or {VARIABLE}"
        ) from None
    previous = environ.get(VARIABLE)
    environ[VARIABLE] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            environ.pop(VARIABLE, None)
        else:
            environ[VARIABLE] = previous
        shutil.rmtree(directory, ignore_errors=True)


def forget_process(directory: Path, pid: int) -> None:
    """After the worker `pid` exited: its live gauges no longer count."""
    multiprocess.mark_process_dead(pid, str(directory))


def _remove_metrics_files(directory: Path) -> None:
    """Remove the metrics files of earlier processes; refuse another *.db file, which
    would break every scrape (and may be something an operator needs, like a database)."""
    try:
        files = [entry for entry in os.scandir(directory) if entry.name.endswith(".db")]
        for entry in files:
            if not _METRICS_FILE.fullmatch(entry.name):
                raise ConfigError(
                    f"{VARIABLE} holds {entry.name!r}, which is not a metrics file: "
                    "give the metrics a directory of their own"
                )
        for entry in files:
            os.remove(entry.path)
    except OSError as exc:
        raise ConfigError(
            f"{VARIABLE}: cannot remove the metrics files of earlier processes ({exc.strerror})"
        ) from None
