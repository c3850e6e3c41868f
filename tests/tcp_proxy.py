"""A TCP proxy on loopback that tests cut, stall and restore, as a network path fails."""

from __future__ import annotations

import asyncio
from typing import Any


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target, until told otherwise.

    `cut()` resets every open connection and every new one, as a database
    that went away does; `stall()` keeps connections open but moves no more
    bytes, as a dropped network path does; `restore()` forwards again. With
    `cut_before` set, the proxy cuts itself when the client sends those
    bytes, before they reach the server.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.cut_before: bytes | None = None
        self._up = True
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def cut(self) -> None:
        self._up = False
        for transport in list(self._transports):
            transport.abort()
        self._flowing.set()  # stalled pipes wake up to find their connection gone

    def stall(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._up = True
        self._flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        transports = {writer.transport}
        self._transports |= transports
        try:
            await self._flowing.wait()
            if not self._up:
                return
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            transports.add(server_writer.transport)
            self._transports.add(server_writer.transport)
            if not self._up:  # cut while connecting
                return
            await asyncio.gather(
                self._pipe(reader, server_writer, watch=True),
                self._pipe(server_reader, writer),
            )
        finally:
            for transport in transports:
                transport.abort()
            self._transports -= transports
            self._handlers.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool = False
    ) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if not self._up:
                    return
                if watch and self.cut_before is not None and self.cut_before in data:
                    self.cut_before = None
                    self.cut()
                    return
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            # One side hung up: so does the other.
            writer.transport.abort()
