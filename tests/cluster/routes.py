"""Route forwarders for the split test: every route between the cluster's nodes runs through
one here, so a node can be cut off from the others while its clients stay connected.

Each forwarder stands before one node's route port. The node that dials a route says who it
is in its first line (`CONNECT {..., "name": <server id>}`), so each connection is known by
the two nodes it joins, and cutting node n closes every connection with n at either end and
refuses new ones until it is healed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json


class RouteForwarders:
    def __init__(self, listen_ports: list[int], target_ports: list[int], names: list[str]) -> None:
        self.listen_ports = listen_ports
        self.target_ports = target_ports
        self.names = names  # node i's server_name
        self.ids: dict[str, str] = {}  # server id -> server_name, learnt from /varz
        self.cut: set[str] = set()
        # (dialer's server id, target's server_name, the two ends)
        self.links: list[tuple[str, str, asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.servers: list[asyncio.base_events.Server] = []
        self.refused = 0

    async def start(self) -> None:
        for i, port in enumerate(self.listen_ports):
            self.servers.append(
                await asyncio.start_server(lambda r, w, i=i: self._link(i, r, w), "127.0.0.1", port)
            )

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for *_, a, b in self.links:
            a.close()
            b.close()

    def isolate(self, name: str) -> None:
        """Cut node `name` off: its links closed, new ones refused. Needs `ids` filled in."""
        self.cut.add(name)
        for link in list(self.links):
            dialer, target, a, b = link
            if name in (self.ids.get(dialer, "?"), target):
                self.links.remove(link)
                a.close()
                b.close()

    def heal(self, name: str) -> None:
        self.cut.discard(name)

    async def _link(
        self, i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # A cancelled connection callback is logged by asyncio as an error: end quietly.
        with contextlib.suppress(asyncio.CancelledError):
            await self._forward(i, reader, writer)

    async def _forward(
        self, i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        target = self.names[i]
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_ports[i])
        except OSError:
            writer.close()
            return
        # The accepting node speaks first (INFO); the dialer answers with CONNECT.
        pump_down = asyncio.create_task(self._pump(up_r, writer))
        first = await reader.readline()
        dialer = ""  # its server id: the nodes' ids are known only once they run
        if first.startswith(b"CONNECT "):
            with contextlib.suppress(ValueError):
                dialer = str(json.loads(first[8:]).get("name", ""))
        name = self.ids.get(dialer, "?")
        if self.cut and (target in self.cut or name in self.cut or name == "?"):
            self.refused += 1
            writer.close()
            up_w.close()
            pump_down.cancel()
            return
        up_w.write(first)
        link = (dialer, target, writer, up_w)
        self.links.append(link)
        try:
            await self._pump(reader, up_w)
        finally:
            pump_down.cancel()
            with contextlib.suppress(ValueError):
                self.links.remove(link)
            writer.close()
            up_w.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
