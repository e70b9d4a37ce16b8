"""The spawner's own wait for a started server's port, on real sockets, and its Docker calls'
concurrency (no Docker)."""

import asyncio
import socket
import threading
import time
from types import SimpleNamespace

from opsbook_hub.spawner import OpsbookDockerSpawner, StartQueue, port_open, wait_listening


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


def test_docker_calls_of_concurrent_spawns_run_side_by_side(monkeypatch):
    """DockerSpawner's own executor has one thread for the whole hub: ten engineers starting
    together would wait in line for each other's create, start and inspect."""
    in_flight, most = [0], [0]
    lock = threading.Lock()

    class SlowEngine:
        def start(self, container: str) -> str:
            with lock:
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])
            time.sleep(0.2)
            with lock:
                in_flight[0] -= 1
            return container

    monkeypatch.setattr(OpsbookDockerSpawner, "_client", SlowEngine())
    spawners = [
        OpsbookDockerSpawner(user=SimpleNamespace(name=name, url=f"/user/{name}/"))
        for name in ("erin", "bob", "carol", "dave")
    ]

    async def together() -> list[str]:
        return await asyncio.gather(*(s.docker("start", s.user.name) for s in spawners))

    assert asyncio.run(together()) == ["erin", "bob", "carol", "dave"]
    assert most[0] == 4
    assert spawners[0].executor is spawners[3].executor  # one pool for the whole hub


def test_servers_start_a_few_at_a_time_in_the_order_asked():
    queue = StartQueue(slots=2, hold_at_most=60)
    running, most, order = [0], [0], []

    async def start(name: str, ready: asyncio.Event) -> None:
        async with queue.slot():
            order.append(name)
            running[0] += 1
            most[0] = max(most[0], running[0])
            await ready.wait()
            running[0] -= 1

    async def storm() -> None:
        readies = [asyncio.Event() for _ in range(5)]
        tasks = []
        for n, ready in enumerate(readies):
            tasks.append(asyncio.create_task(start(f"engineer-{n}", ready)))
            await asyncio.sleep(0)  # asked one after the other
        for ready in readies:
            await asyncio.sleep(0.01)
            ready.set()
        await asyncio.gather(*tasks)

    asyncio.run(storm())
    assert most[0] == 2
    assert order == [f"engineer-{n}" for n in range(5)]


def test_a_server_that_hangs_gives_its_slot_up_and_a_slot_is_released_once():
    queue = StartQueue(slots=1, hold_at_most=0.05)

    async def hung_then_next() -> list[str]:
        seen = []
        never = asyncio.Event()

        async def hung() -> None:
            async with queue.slot():
                seen.append("hung started")
                await never.wait()

        async def next_one() -> None:
            async with queue.slot():
                seen.append("next started")

        hanging = asyncio.create_task(hung())
        await asyncio.sleep(0)
        await next_one()  # gets the slot when the hung start's hold runs out
        hanging.cancel()
        await asyncio.gather(hanging, return_exceptions=True)
        # The hung start's exit did not release a second time: still one slot.
        assert queue._slots._value == 1
        return seen

    assert asyncio.run(hung_then_next()) == ["hung started", "next started"]
