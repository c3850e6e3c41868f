"""A headless Chromium driven over the DevTools protocol (CDP), for the browser tests.

Raw CDP over aiohttp's WebSocket client rather than Selenium: it needs no driver process
and no new dependency, runs on the tests' own event loop, and reports every network
request (including ones the browser blocks) as events, which is what these tests check.

The browser is offline in effect: every host name resolves to nothing, so only the
loopback servers a test starts by IP address can be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

# Waiting limits, not measurements: a page that never gets there fails with a clear message.
STARTUP_SECONDS = 30.0
COMMAND_SECONDS = 30.0
WAIT_SECONDS = 30.0

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

# Runs in each new document before its own scripts: records CSP violations and errors.
_RECORDER = """
window.__violations = [];
window.__errors = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
window.addEventListener("error", (event) => { window.__errors.push(String(event.message)); });
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(Exception):
    pass


@dataclass
class Page:
    """One tab: CDP commands on its session, and the events it has seen."""

    browser: Browser
    session_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, session_id=self.session_id, **params)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), or BrowserError."""
        reply = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error: {text}")
        return reply["result"].get("value")

    async def goto(self, url: str) -> None:
        """Open `url` and wait for its load event."""
        loaded = len(self.events_named("Page.loadEventFired"))
        await self.send("Page.navigate", url=url)
        await self.wait_for_event("Page.loadEventFired", after=loaded)

    async def wait_for(self, expression: str, what: str) -> Any:
        """Poll `expression` until it is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise BrowserError(f"gave up waiting for {what}")
            await asyncio.sleep(0.1)

    async def wait_for_event(self, method: str, *, after: int = 0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while len(self.events_named(method)) <= after:
            if asyncio.get_running_loop().time() > deadline:
                raise BrowserError(f"gave up waiting for {method}")
            await asyncio.sleep(0.05)
        return self.events_named(method)[after]

    def events_named(self, method: str) -> list[dict[str, Any]]:
        return [event["params"] for event in self.events if event["method"] == method]

    def requested_urls(self) -> list[str]:
        return [event["request"]["url"] for event in self.events_named("Network.requestWillBeSent")]


class Browser:
    """A Chromium process and one CDP connection to it."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self._websocket = websocket
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def send(
        self, method: str, *, session_id: str | None = None, **params: Any
    ) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        future = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._websocket.send_str(json.dumps(message))
        try:
            async with asyncio.timeout(COMMAND_SECONDS):
                return await future
        finally:
            self._pending.pop(message_id, None)

    async def new_page(self) -> Page:
        """A fresh tab with network events on and the recorder installed."""
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(self, attached["sessionId"])
        self._pages[page.session_id] = page
        await page.send("Page.enable")
        await page.send("Network.enable")
        await page.send("Runtime.enable")
        await page.send("Page.addScriptToEvaluateOnNewDocument", source=_RECORDER)
        return page

    async def _read(self) -> None:
        async for message in self._websocket:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.get(data["id"])
                if future is None or future.done():
                    continue
                if "error" in data:
                    future.set_exception(BrowserError(f"CDP error: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            elif data.get("sessionId") in self._pages:
                self._pages[data["sessionId"]].events.append(data)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("the browser closed the connection"))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._websocket.close()


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process) -> str:
    """Chromium writes the port it picked, and the browser's path, to DevToolsActivePort."""
    port_file = profile / "DevToolsActivePort"
    deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
    while True:
        if port_file.exists():
            lines = port_file.read_text().split()
            if len(lines) == 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        if process.returncode is not None:
            raise BrowserError(f"chromium exited with {process.returncode} at start-up")
        if asyncio.get_running_loop().time() > deadline:
            raise BrowserError("chromium did not open its DevTools port")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def launch(executable: str) -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh profile, closed (and its profile removed) after."""
    profile = Path(tempfile.mkdtemp(prefix="ghvault-chromium-"))
    # A session of its own, so the browser's helper processes can be ended with it.
    process = await asyncio.create_subprocess_exec(
        executable,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "LANG": "C.UTF-8"},
        start_new_session=True,
    )
    try:
        url = await _devtools_port(profile, process)
        async with aiohttp.ClientSession() as session:
            websocket = await session.ws_connect(url, max_msg_size=0)
            browser = Browser(websocket)
            try:
                yield browser
            finally:
                with contextlib.suppress(BrowserError, TimeoutError):
                    await browser.send("Browser.close")
                await browser.close()
    finally:
        await _end(process)
        await _remove(profile)


async def _end(process: asyncio.subprocess.Process) -> None:
    """End the browser and every helper process it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(10):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _remove(profile: Path) -> None:
    """Remove the profile; helpers that were still exiting may write into it for a moment."""
    for _ in range(50):
        try:
            shutil.rmtree(profile)
        except FileNotFoundError:
            return
        except OSError:
            await asyncio.sleep(0.1)
        else:
            return
    shutil.rmtree(profile)
