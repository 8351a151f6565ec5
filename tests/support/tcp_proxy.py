"""A TCP proxy in a thread that a test can sever, like a load balancer cutting a socket."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from support.servers import LoopThread, free_port


class TcpProxy(LoopThread):
    """Forwards ``127.0.0.1:port`` to ``target_port``; ``sever()`` aborts every live
    connection on both sides (an RST, no close frame), new connections still work."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.severed = 0
        self._live: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter):
        self.connections += 1
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            c_writer.transport.abort()
            return
        self._live |= {c_writer, u_writer}
        try:
            await asyncio.gather(self._pipe(c_reader, u_writer), self._pipe(u_reader, c_writer))
        finally:
            self._live -= {c_writer, u_writer}

    def sever(self) -> int:
        """Abort every connection now; returns how many were cut."""
        assert self._loop is not None
        done = threading.Event()
        cut: list[int] = []

        def abort() -> None:
            cut.append(len(self._live) // 2)
            for w in list(self._live):
                w.transport.abort()
            done.set()

        self._loop.call_soon_threadsafe(abort)
        assert done.wait(5)
        self.severed += cut[0]
        return cut[0]

    async def _server(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", self.port)
