"""Load generation with wrk: a C load generator, so the driver takes little of
the CPU the server under test needs (the machine has two cores).

Each request is picked at random from a list of prepared requests (a user's
JWT each); a response counts as an error unless it is HTTP 200 and its body
contains an expected string. The Lua script reports in one JSON line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WRK = "wrk"

_SCRIPT = """
local requests = {}
local raw = {
%(calls)s
}
bad = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for i, call in ipairs(raw) do
    requests[i] = wrk.format(call[1], call[2], call[3], call[4])
  end
  math.randomseed(%(seed)d)
end

function request()
  return requests[math.random(#requests)]
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, [==[%(expect)s]==], 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do failed = failed + thread:get("bad") end
  local e = summary.errors
  io.write(string.format(
    '\\nWRK-RESULT {"requests": %%d, "duration_us": %%d, "bad": %%d, "socket_errors": %%d, ' ..
    '"p50": %%d, "p95": %%d, "p99": %%d}\\n',
    summary.requests, summary.duration, failed, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: str | None


@dataclass(frozen=True)
class WrkResult:
    requests: int
    errors: int
    rate: float
    p50: float  # milliseconds
    p95: float
    p99: float


def available() -> bool:
    return shutil.which(WRK) is not None


def _lua_string(value: str) -> str:
    assert "]==]" not in value
    return f"[==[{value}]==]"


def _lua_call(request: Request) -> str:
    headers = ", ".join(
        f"[ {_lua_string(name)} ] = {_lua_string(value)}" for name, value in request.headers.items()
    )
    body = _lua_string(request.body) if request.body is not None else "nil"
    return (
        f"  {{{_lua_string(request.method)}, {_lua_string(request.path)}, {{{headers}}}, {body}}},"
    )


def run(
    base_url: str,
    requests: Sequence[Request],
    *,
    expect: str,
    duration: float,
    connections: int,
    seed: int = 1,
) -> WrkResult:
    """One wrk run (one thread, `connections` connections, `duration` seconds)."""
    script = _SCRIPT % {
        "calls": "\n".join(_lua_call(request) for request in requests),
        "seed": seed,
        "expect": expect,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
        path = Path(file.name)
    try:
        result = subprocess.run(  # noqa: S603 -- wrk with our own arguments
            [
                WRK,
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "30s",
                "-s",
                str(path),
                base_url,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 120,
            check=False,
        )
    finally:
        path.unlink(missing_ok=True)
    line = next(
        (line for line in result.stdout.splitlines() if line.startswith("WRK-RESULT ")), None
    )
    if line is None:
        raise RuntimeError(f"wrk failed: {result.stdout[-500:]} {result.stderr[-500:]}")
    data = json.loads(line.removeprefix("WRK-RESULT "))
    seconds = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"],
        errors=data["bad"] + data["socket_errors"],
        rate=data["requests"] / seconds if seconds else 0.0,
        p50=data["p50"] / 1000,
        p95=data["p95"] / 1000,
        p99=data["p99"] / 1000,
    )
