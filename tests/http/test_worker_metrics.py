"""The metrics directory of `ghvault serve --workers N` (the workers in action:
tests/test_serve_workers.py)."""

from __future__ import annotations

import tempfile
from collections.abc import MutableMapping
from pathlib import Path

import pytest

from server.config import ConfigError
from server.http.worker_metrics import shared_metrics_directory


def workers_that_fail(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Run "workers" in a private directory; they fail. What their environment said."""
    seen: dict[str, str] = {}
    try:
        with shared_metrics_directory(environ, None):
            seen.update(environ)
            raise RuntimeError("a worker could not start")
    except RuntimeError:
        return seen


def test_a_private_directory_is_named_only_while_the_workers_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make sure the private directory leaves the environment and the disk when the
    workers end, even when they end in an error."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    environ = {"OTHER": "kept"}

    seen = workers_that_fail(environ)

    directory = Path(seen.pop("PROMETHEUS_MULTIPROC_DIR"))
    assert directory.parent == tmp_path
    assert seen == {"OTHER": "kept"}
    assert environ == {"OTHER": "kept"}
    assert list(tmp_path.iterdir()) == []


def test_no_place_for_a_private_directory_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make sure an unusable temporary directory is one clear line, not a traceback."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    environ: dict[str, str] = {}
    with pytest.raises(ConfigError, match="TMPDIR or PROMETHEUS_MULTIPROC_DIR"):
        workers_that_fail(environ)
    assert environ == {}
