"""Sampling profiles of a server under load, with py-spy (`pip install py-spy`).

`record` runs ``py-spy record -r 200 -f raw`` on a process for some seconds;
`summary` folds the raw stacks into each function's inclusive share of the
samples (the share of samples with the function anywhere on the stack), the
view that says where a request's time goes.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

# On PATH, or installed into the virtualenv running the benchmark.
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
RATE = 200
_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^)]*)\)$")


def available() -> bool:
    return Path(PY_SPY).is_file()


async def record(pid: int, seconds: float, output: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        PY_SPY,
        "record",
        "-r",
        str(RATE),
        "-f",
        "raw",
        "-d",
        str(max(1, round(seconds))),
        "-p",
        str(pid),
        "-o",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await process.wait()


def _label(frame: str) -> str:
    """`function (path/to/module.py:line)` -> `function (module.py)`."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match["file"].rsplit(":", 1)[0]
    parts = file.replace("\\", "/").split("/")
    return f"{match['function']} ({'/'.join(parts[-2:])})"


def summary(raw: Path, top: int = 25) -> list[tuple[str, float]]:
    """The `top` functions by inclusive share of all samples."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        for label in {_label(frame) for frame in stack.split(";")}:
            inclusive[label] += samples
    if not total:
        return []
    return [(label, samples / total) for label, samples in inclusive.most_common(top)]


def format_summary(title: str, shares: list[tuple[str, float]]) -> str:
    lines = [f"{title}: inclusive share of samples"]
    lines += [f"  {share * 100:5.1f} %  {label}" for label, share in shares]
    return "\n".join(lines)
