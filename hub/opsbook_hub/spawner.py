"""DockerSpawner, returning as soon as the engineer's server listens.

After a spawner's `start()` the hub waits for the server with `wait_for_http_server`, whose
exponential backoff (0.2 s doubling, with jitter) polls a server that needs about two seconds to
start at roughly 0.2, 0.6, 1.4, 3.0 and 6.2 s: measured here, the engineer waited 0.6 to 2.9 s
more than the server needed (docs/benchmarks.md). Waiting for the port ourselves, every
`listen_poll_interval`, makes the hub's first check the one that succeeds.

Each server runs on a network of its own (opsbook_hub.networks): made ready before the container
starts, removed after it is gone.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from dockerspawner import DockerSpawner
from traitlets import Bool, Float, default

from .networks import EngineerNetworks, network_name

# Seconds of waiting for the port between two checks that the container still runs (one more
# Docker API call each): a server that starts normally is never checked.
ALIVE_CHECK_EVERY = 2.0


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


class OpsbookDockerSpawner(DockerSpawner):
    """Configured as `c.DockerSpawner` (traitlets applies a parent's section to subclasses)."""

    listen_poll_interval = Float(
        0.05,
        config=True,
        help="Seconds between checks that a started server listens, before the hub's own check.",
    )

    network_internal = Bool(
        True,
        config=True,
        help="Engineers' networks have no route out (ENGINEER_NETWORK_EGRESS=none); False: "
        "routed through the Docker host, whose firewall then decides (README, Networks).",
    )

    @default("network_name")
    def _network_of_its_own(self) -> str:
        return network_name(self.prefix, self.escaped_name)

    # Removals of engineers' networks under way, by network: the engineer's stop does not wait
    # for one (the hub answers a stop as soon as the container is gone); their next start does.
    _network_removals: ClassVar[dict[str, asyncio.Task]] = {}

    def engineer_networks(self) -> EngineerNetworks:
        return EngineerNetworks(self.client, self.prefix, internal=self.network_internal)

    async def network_removed(self) -> None:
        """Until a removal of this server's network started by a stop is over."""
        pending = self._network_removals.get(self.network_name)
        if pending is not None:
            await asyncio.wait([pending])

    async def _remove_network(self) -> None:
        name = self.network_name
        try:
            await asyncio.to_thread(self.engineer_networks().remove, name)
        except Exception:  # the keeper removes leftovers; a stop must not fail for this
            self.log.exception("Network %s not removed; the network keeper will", name)
        finally:
            if self._network_removals.get(name) is asyncio.current_task():
                del self._network_removals[name]

    async def start(self) -> tuple[str, int]:
        await self.network_removed()
        began = time.monotonic()
        networks = self.engineer_networks()
        _, connected = await asyncio.to_thread(
            networks.prepare, self.network_name, self.escaped_name
        )
        self.log.info(
            "Network %s ready for %s: %d members connected in %.2f s",
            self.network_name,
            self.user.name,
            connected,
            time.monotonic() - began,
        )
        ip, port = await super().start()
        # A server that dies at start is left to the hub's own handling at once, not after
        # http_timeout: every ALIVE_CHECK_EVERY seconds without an answer, is it still running?
        deadline = time.monotonic() + self.http_timeout
        while not await wait_listening(ip, port, ALIVE_CHECK_EVERY, self.listen_poll_interval):
            if time.monotonic() >= deadline or await self.poll() is not None:
                break
        return ip, port

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        if self.remove:
            removal = asyncio.ensure_future(self._remove_network())
            self._network_removals[self.network_name] = removal
