"""The spawner's own wait for a started server's port, on real sockets (no Docker)."""

import asyncio
import socket

from opsbook_hub.spawner import port_open, wait_listening


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_returns_once_a_server_starts_listening():
    port = free_port()

    async def scenario() -> bool:
        async def listen_later() -> asyncio.Server:
            await asyncio.sleep(0.3)
            return await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)

        starting = asyncio.create_task(listen_later())
        ready = await wait_listening("127.0.0.1", port, timeout=10, interval=0.05)
        server = await starting
        server.close()
        return ready

    assert asyncio.run(scenario()) is True


def test_gives_up_after_its_timeout_when_nothing_listens():
    port = free_port()
    assert asyncio.run(wait_listening("127.0.0.1", port, timeout=0.3, interval=0.05)) is False
    assert asyncio.run(port_open("127.0.0.1", port)) is False
