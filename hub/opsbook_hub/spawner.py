"""DockerSpawner, returning as soon as the engineer's server listens, and built for a storm.

After a spawner's `start()` the hub waits for the server with `wait_for_http_server`, whose
exponential backoff (0.2 s doubling, with jitter) polls a server that needs about two seconds to
start at roughly 0.2, 0.6, 1.4, 3.0 and 6.2 s: measured here, the engineer waited 0.6 to 2.9 s
more than the server needed (docs/benchmarks.md). Waiting for the port ourselves, every
`listen_poll_interval`, makes the hub's first check the one that succeeds.

Each engineer's server runs on a network of their own (opsbook_hub.networks): created at their
first start, kept between servers, removed with them.

When a team starts its servers together, the Docker calls of all spawns go out side by side
(`docker_api_workers`; DockerSpawner makes them in one thread), and the servers themselves start
a few at a time in the order asked (StartQueue).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from dockerspawner import DockerSpawner
from traitlets import Bool, Float, Integer, Unicode, default

from .configure import HOME_VOLUME_TEMPLATE
from .networks import CONNECTIONS, EngineerNetworks, network_name

# Seconds of waiting for the port between two checks that the container still runs (one more
# Docker API call each): a server that starts normally is never checked.
ALIVE_CHECK_EVERY = 2.0
# A start holds its slot (StartQueue) until its server listens, or this long at most: a server
# that hangs holds up nobody else's.
START_SLOT_SECONDS = 15.0


async def port_open(ip: str, port: int) -> bool:
    """Whether something accepts TCP connections on ip:port now."""
    try:
        _, writer = await asyncio.open_connection(ip, port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def wait_listening(ip: str, port: int, timeout: float, interval: float) -> bool:
    """Poll ip:port every `interval` s until it accepts connections or `timeout` s pass.

    False on timeout: the hub's own check then fails the spawn with its usual message.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await port_open(ip, port):
            return True
        await asyncio.sleep(interval)
    return False


class StartQueue:
    """Servers start a few at a time, first come first served.

    A server's start is about a CPU-second of Python imports. Thirty started at once on two cores
    share them evenly, so every one of them finishes at about the end: in the bench's storm of
    thirty, all waited 27 to 34 s for their server (the hub's own spawn times). Started a core's
    worth at a time, in the order asked, the first engineers of an incident get theirs in seconds;
    the last waited as long or longer in the bench's storms (tests/bench/notes.md).
    """

    def __init__(self, slots: int, hold_at_most: float) -> None:
        self._slots = asyncio.Semaphore(slots)
        self.hold_at_most = hold_at_most

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a slot; hold it for the block, or `hold_at_most` seconds if that is sooner."""
        await self._slots.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._slots.release()

        timer = asyncio.get_running_loop().call_later(self.hold_at_most, release)
        try:
            yield
        finally:
            timer.cancel()
            release()


class OpsbookDockerSpawner(DockerSpawner):
    """Configured as `c.DockerSpawner` (traitlets applies a parent's section to subclasses)."""

    listen_poll_interval = Float(
        0.02,
        config=True,
        help="Seconds between checks that a started server listens, before the hub's own check. "
        "Half of it is added to an average start; a refused check costs the hub 0.06 ms of CPU "
        "(measured on loopback).",
    )

    network_internal = Bool(
        True,
        config=True,
        help="Engineers' networks have no route out (ENGINEER_NETWORK_EGRESS=none); False: "
        "routed through the Docker host, whose firewall then decides (README, Networks).",
    )

    network_pool = Unicode(
        "10.99.0.0/16",
        config=True,
        help="The private range engineers' networks take a /26 each from (ENGINEER_NETWORK_POOL).",
    )

    docker_api_workers = Integer(
        8,
        config=True,
        help="Docker API calls of all spawns in flight at once. DockerSpawner makes them in one "
        "thread for the whole hub, so engineers starting together waited in line for each "
        "other's create, start and inspect, which the engine runs side by side.",
    )

    # One pool for the whole hub, as DockerSpawner's own executor (docker_api_workers threads).
    _api_executor: ClassVar[ThreadPoolExecutor | None] = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        cls = OpsbookDockerSpawner
        if cls._api_executor is None:
            cls._api_executor = ThreadPoolExecutor(
                self.docker_api_workers, thread_name_prefix="docker-api"
            )
        return cls._api_executor

    @default("network_name")
    def _network_of_its_own(self) -> str:
        return network_name(self.prefix, self.escaped_name)

    def engineer_networks(self) -> EngineerNetworks:
        return EngineerNetworks(
            self.client,
            self.prefix,
            internal=self.network_internal,
            pool=ipaddress.IPv4Network(self.network_pool),
        )

    start_slots = Integer(
        config=True,
        help="Servers starting at once (default: the machine's cores, at least 2); the others "
        "wait their turn, first come first served.",
    )

    @default("start_slots")
    def _one_per_core(self) -> int:
        return max(2, os.cpu_count() or 2)

    _start_queue: ClassVar[StartQueue | None] = None

    def start_queue(self) -> StartQueue:
        cls = OpsbookDockerSpawner
        if cls._start_queue is None:
            cls._start_queue = StartQueue(self.start_slots, START_SLOT_SECONDS)
        return cls._start_queue

    async def start(self) -> tuple[str, int]:
        began = time.monotonic()
        networks = self.engineer_networks()
        # The home volume first (Docker would create it with the container): from now on the
        # engineer is present for the network keeper, which never removes their network under
        # a start waiting for its slot.
        home = HOME_VOLUME_TEMPLATE.format(prefix=self.prefix, username=self.escaped_name)
        await self.docker("create_volume", home)
        network_id = await asyncio.to_thread(networks.ensure, self.network_name, self.escaped_name)
        missing = await asyncio.to_thread(networks.missing, network_id)
        # Every member on before the server starts: it asks the hub for its version as it starts,
        # and its engineer may ssh to the fleet at once. Only a first start has any to connect.
        # A member that cannot be connected fails the start: a server that cannot reach the hub
        # would not start anyway, and one that reached less than it should would fail later,
        # less clearly.
        await asyncio.gather(
            *(asyncio.wrap_future(CONNECTIONS.submit(networks, m, network_id)) for m in missing)
        )
        if missing:
            self.log.info(
                "Network %s ready for %s: %d members connected in %.2f s",
                self.network_name,
                self.user.name,
                len(missing),
                time.monotonic() - began,
            )
        async with self.start_queue().slot():
            ip, port = await super().start()
            # A server that dies at start is left to the hub's own handling at once, not after
            # http_timeout: every ALIVE_CHECK_EVERY seconds without an answer, is it still running?
            deadline = time.monotonic() + self.http_timeout
            while not await wait_listening(ip, port, ALIVE_CHECK_EVERY, self.listen_poll_interval):
                if time.monotonic() >= deadline or await self.poll() is not None:
                    break
        return ip, port

    async def delete_forever(self) -> None:
        """The hub deletes the engineer: their network goes too (their home volume stays, as
        DockerSpawner leaves it: removing data is an administrator's decision)."""
        removed = await asyncio.to_thread(self.engineer_networks().remove, self.network_name)
        if not removed:
            self.log.warning("Network %s not removed; the network keeper will", self.network_name)
