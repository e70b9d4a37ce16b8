"""One Docker network per engineer, joined only by what that engineer may reach.

Docker bridges have no per-port rules: containers on one network reach every port of each other.
So each engineer's container gets a network of its own, which no other engineer's joins (they never
reach each other's servers), created `internal` (no route out) unless ENGINEER_NETWORK_EGRESS says
`routed`. Only containers labelled `org.opsbook.engineer-networks=<CONTAINER_PREFIX>` in
docker-compose.yml join it: the proxy and the hub, which reach the server, and the hub's API, the
runs service, Prometheus, the package repository and the demo fleet, which the server reaches.
Ports of theirs that engineers must not reach listen on a backend address only (compose says which).

A network lives as long as its engineer's home volume, not as long as one server: the first start
creates it (with a /26 of ENGINEER_NETWORK_POOL: Docker's default address pools hold only about
thirty networks) and connects the members, which costs that start most of a second; every later
start finds it ready. On a stopped server's network there is nobody but the members.

Who does what:
- the spawner (`ensure`, `missing`, CONNECTIONS) creates the network and connects the members
  while the server's container starts; when the hub deletes the engineer, it removes the
  network (`remove`);
- the keeper (`python -m opsbook_hub.networks`, a service the hub runs and restarts) connects a
  member that starts later (compose recreating the runs service or a fleet host, the hub itself
  after an upgrade) to every engineer's network, and removes the network of an engineer who has
  neither a container nor a home volume any more (deleted outside the hub).

The decisions (`missing_members`, `leftovers`, names) are plain functions, tested without Docker;
`EngineerNetworks` is the thin layer that asks Docker.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from docker.errors import APIError

from .configure import HOME_VOLUME_TEMPLATE

# On a container engineers' networks include (value: the deployment's CONTAINER_PREFIX).
MEMBER_LABEL = "org.opsbook.engineer-networks"
# On each engineer's network: whose deployment (CONTAINER_PREFIX), and whose network.
NETWORK_LABEL = "org.opsbook.engineer-network"
ENGINEER_LABEL = "org.opsbook.engineer"
# The name a member answers to on engineers' networks: its compose service (hub, runs, web-1 ...).
SERVICE_LABEL = "com.docker.compose.service"
# A network younger than this is never a leftover: its spawn may still be creating the server.
LEFTOVER_GRACE_SECONDS = 120.0
# How long `remove` keeps trying while Docker finishes removing the server's container.
REMOVE_TIMEOUT_SECONDS = 15.0
CONNECT_WORKERS = 8
# Members a starting server needs at once: it asks the hub's API for its version as it starts
# (and waits 2, 4, 8, then 16 s before asking again, then gives up); the proxy then routes to it.
CONNECT_FIRST = ("hub", "proxy")
# Each engineer's network: a /26 of ENGINEER_NETWORK_POOL (61 addresses: the gateway, the
# server, and the members, eleven in the demo).
SUBNET_PREFIX = 26
# How often the keeper reconciles even when no member starts (leftovers of deleted engineers).
RECONCILE_EVERY_SECONDS = 300

log = logging.getLogger("opsbook.networks")


@dataclass(frozen=True)
class Member:
    """A container that joins every engineer's network, under its compose service's name."""

    id: str
    alias: str


def network_name(prefix: str, escaped_username: str) -> str:
    """`<prefix>-net-<user>`, beside the container `<prefix>-<user>` and `<prefix>-home-<user>`."""
    return f"{prefix}-net-{escaped_username}"


def bridge_name(network: str) -> str:
    """The Linux bridge of an engineer's network: `obk-` and a hash (at most 15 characters, as
    Linux wants), so that a host firewall can match every engineer's bridge with `obk-+`."""
    return "obk-" + hashlib.sha256(network.encode()).hexdigest()[:11]


def member_of(container: Mapping[str, Any]) -> Member:
    """A member from Docker's container listing: its compose service, else its own name."""
    labels = container.get("Labels") or {}
    alias = labels.get(SERVICE_LABEL) or container["Names"][0].lstrip("/")
    return Member(container["Id"], alias)


def missing_members(members: Iterable[Member], attached: Iterable[str]) -> list[Member]:
    """The members not yet on a network whose attached container ids are `attached`."""
    on_network = set(attached)
    return [m for m in members if m.id not in on_network]


class ConnectionQueue:
    """Connections of members to new engineers' networks, for the whole hub, in the order asked.

    The engine makes network connections one after the other, however many are asked at once. In
    a storm of thirty first starts, each asking for its eleven members at once, every engineer
    waited 36.8 to 37.0 s (tests/bench/notes.md): all connections ended together, at the end.
    Queued first come first served, the first engineer waits for their own eleven and the last
    for everybody's. CONNECT_FIRST members have a queue of their own, so that no starting server
    waits behind other engineers' fleet hosts for the hub it asks for its version.
    """

    def __init__(self, first_workers: int = 2, other_workers: int = 4) -> None:
        self._first = ThreadPoolExecutor(first_workers, thread_name_prefix="connect-first")
        self._others = ThreadPoolExecutor(other_workers, thread_name_prefix="connect")

    def submit(self, networks: EngineerNetworks, member: Member, network_id: str) -> Future:
        queue = self._first if member.alias in CONNECT_FIRST else self._others
        return queue.submit(networks.connect, member, network_id)


Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


def subnets_in_use(networks: Iterable[Mapping[str, Any]]) -> list[Subnet]:
    """Every subnet of Docker's network listing (all networks of the engine, any deployment)."""
    found = []
    for network in networks:
        for config in (network.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet"):
                found.append(ipaddress.ip_network(config["Subnet"], strict=False))
    return found


def free_subnet(pool: ipaddress.IPv4Network, taken: Iterable[Subnet]) -> ipaddress.IPv4Network:
    """The first /SUBNET_PREFIX of `pool` that overlaps nothing in `taken`.

    Raises RuntimeError naming ENGINEER_NETWORK_POOL when every one is taken: the engineer's
    start fails with that message rather than with Docker's about its default pools.
    """
    size = 1 << (32 - SUBNET_PREFIX)
    first, count = int(pool.network_address), pool.num_addresses // size
    used: set[int] = set()
    for subnet in taken:
        if subnet.version != 4 or not subnet.overlaps(pool):
            continue
        low = max(int(subnet.network_address), first) - first
        high = min(int(subnet.broadcast_address), first + pool.num_addresses - 1) - first
        used.update(range(low // size, high // size + 1))
    for index in range(count):
        if index not in used:
            return ipaddress.IPv4Network((first + index * size, SUBNET_PREFIX))
    raise RuntimeError(
        f"ENGINEER_NETWORK_POOL {pool} is full: all {count} networks of /{SUBNET_PREFIX} are in "
        "use on this Docker engine (README, Networks: a larger pool)"
    )


_DOCKER_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$")


def docker_time(text: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, Z or an offset) as a Unix time."""
    match = _DOCKER_TIME.match(text)
    if not match:
        raise ValueError(f"not a Docker timestamp: {text!r}")
    offset = "+00:00" if match.group(2) == "Z" else match.group(2)
    return datetime.fromisoformat(match.group(1) + offset).timestamp()


def leftovers(
    networks: Iterable[Mapping[str, Any]],
    engineers_present: set[str],
    now: float,
    grace: float = LEFTOVER_GRACE_SECONDS,
) -> list[Mapping[str, Any]]:
    """Engineers' networks of engineers who are gone, older than `grace` seconds.

    `engineers_present`: the escaped names of engineers with a server container or a home volume.
    """
    return [
        n
        for n in networks
        if (n.get("Labels") or {}).get(ENGINEER_LABEL) not in engineers_present
        and now - docker_time(n["Created"]) > grace
    ]


def _already(error: APIError, *words: str) -> bool:
    """Whether Docker's refusal says one of `words` (its API has no codes for these cases)."""
    explanation = str(error.explanation or error).lower()
    return any(word in explanation for word in words)


class EngineerNetworks:
    """Engineers' networks of one deployment (CONTAINER_PREFIX), through a docker.APIClient.

    Blocking calls: the spawner runs them in a thread (through `asyncio.to_thread`); connections
    and disconnections go out concurrently, CONNECT_WORKERS at a time, since each one waits for
    Docker to set up an interface in another container. `pool`: where `ensure` takes subnets
    (the keeper creates no network and passes none).
    """

    # One hub's spawns choose subnets one at a time; another deployment on the same engine may
    # still take the same one first, and `ensure` then chooses again.
    _creating = threading.Lock()

    def __init__(
        self,
        client: Any,
        prefix: str,
        internal: bool = True,
        pool: ipaddress.IPv4Network | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.internal = internal
        self.pool = pool

    # --- what is there ---

    def members(self) -> list[Member]:
        running = self.client.containers(filters={"label": f"{MEMBER_LABEL}={self.prefix}"})
        return [member_of(c) for c in running]

    def networks(self) -> list[dict]:
        return self.client.networks(filters={"label": f"{NETWORK_LABEL}={self.prefix}"})

    def find(self, name: str) -> dict | None:
        return next((n for n in self.networks() if n["Name"] == name), None)

    def attached(self, network_id: str) -> list[str]:
        return list(self.client.inspect_network(network_id).get("Containers") or {})

    # --- the spawner's side ---

    def ensure(self, name: str, engineer: str, attempts: int = 5) -> str:
        """The id of `name`, created for `engineer` with a free subnet of the pool unless it
        exists. A subnet another engine user took meanwhile is refused by Docker: choose again."""
        with self._creating:
            for attempt in range(1, attempts + 1):
                network = self.find(name)
                if network is not None:
                    return network["Id"]
                try:
                    return self.create(name, engineer)["Id"]
                except APIError as error:
                    if not _already(error, "overlaps") or attempt == attempts:
                        raise
                    log.info("subnet for %s taken meanwhile (%s); choosing again", name, error)
        raise AssertionError("unreachable")

    def create(self, name: str, engineer: str) -> dict:
        ipam = None
        if self.pool is not None:
            subnet = free_subnet(self.pool, subnets_in_use(self.client.networks()))
            ipam = {"Driver": "default", "Config": [{"Subnet": str(subnet)}]}
        return self.client.create_network(
            name,
            driver="bridge",
            internal=self.internal,
            check_duplicate=True,
            options={"com.docker.network.bridge.name": bridge_name(name)},
            labels={NETWORK_LABEL: self.prefix, ENGINEER_LABEL: engineer},
            ipam=ipam,
        )

    def missing(self, network_id: str) -> list[Member]:
        """The members not on the network yet (CONNECTIONS connects them for the spawner)."""
        return missing_members(self.members(), self.attached(network_id))

    def connect(self, member: Member, network_id: str) -> None:
        try:
            self.client.connect_container_to_network(member.id, network_id, aliases=[member.alias])
        except APIError as error:
            if not _already(error, "already exists", "already attached"):
                raise

    def remove(self, name: str, timeout: float = REMOVE_TIMEOUT_SECONDS) -> bool:
        """Disconnect everything from `name` and remove it; False if Docker still refused at
        `timeout` (the keeper removes it later, once the engineer is gone). A server's container
        being removed by Docker may still hold its endpoint for a moment: that is what the
        retries are for."""
        deadline = time.monotonic() + timeout
        while True:
            network = self.find(name)
            if network is None:
                return True
            try:
                self.delete(network["Id"])
                return True
            except APIError as error:
                if not _already(error, "active endpoints", "in use") or (
                    time.monotonic() >= deadline
                ):
                    log.warning("network %s not removed yet: %s", name, error)
                    return False
                time.sleep(0.2)

    def delete(self, network_id: str) -> None:
        attached = self.attached(network_id)
        self._each(
            lambda c: self.client.disconnect_container_from_network(c, network_id, force=True),
            attached,
        )
        self.client.remove_network(network_id)

    # --- the keeper's side ---

    def connect_everywhere(self, member: Member) -> int:
        """Connect a (re)started member to every engineer's network it is not on."""
        targets = [n["Id"] for n in self.networks() if member.id not in self.attached(n["Id"])]
        self._each(lambda network_id: self.connect(member, network_id), targets)
        return len(targets)

    def reconcile(self, now: float | None = None) -> None:
        """Every member on every engineer's network; networks of engineers gone removed."""
        members = self.members()
        networks = self.networks()
        engineers = self.engineers_present()
        gone = leftovers(networks, engineers, time.time() if now is None else now)
        for network in gone:
            log.info(
                "removing %s: its engineer has no container and no home volume", network["Name"]
            )
            self.remove(network["Name"])
        gone_ids = {n["Id"] for n in gone}
        for network in networks:
            if network["Id"] in gone_ids:
                continue
            missing = missing_members(members, self.attached(network["Id"]))
            self._each(lambda m, nid=network["Id"]: self.connect(m, nid), missing)
            if missing:
                log.info("%s: connected %s", network["Name"], ", ".join(m.alias for m in missing))

    def engineers_present(self) -> set[str]:
        """Escaped names of engineers with a container `<prefix>-<name>` (running or not) or a
        home volume `<prefix>-home-<name>`."""
        container_head = f"/{self.prefix}-"
        names = (n for c in self.client.containers(all=True) for n in c.get("Names") or [])
        present = {n[len(container_head) :] for n in names if n.startswith(container_head)}
        volume_head = HOME_VOLUME_TEMPLATE.format(prefix=self.prefix, username="")
        volumes = self.client.volumes().get("Volumes") or []
        present.update(
            v["Name"][len(volume_head) :] for v in volumes if v["Name"].startswith(volume_head)
        )
        return present

    def keep(self, retry_seconds: float = 2.0) -> None:
        """Reconcile, then follow members' starts; every RECONCILE_EVERY_SECONDS, and after a
        lost stream (dockerd restarted), reconcile again and follow on from where it stopped."""
        while True:
            since = int(time.time())
            try:
                self.reconcile()
                events = self.client.events(
                    decode=True,
                    since=since,
                    until=since + RECONCILE_EVERY_SECONDS,
                    filters={
                        "type": "container",
                        "event": "start",
                        "label": f"{MEMBER_LABEL}={self.prefix}",
                    },
                )
                for event in events:
                    attributes = event.get("Actor", {}).get("Attributes", {})
                    member = Member(event["id"], attributes.get(SERVICE_LABEL) or event["id"])
                    connected = self.connect_everywhere(member)
                    if connected:
                        log.info("%s started: on %d engineers' networks", member.alias, connected)
                continue  # the stream ended at `until`: reconcile again at once
            except Exception as error:  # the stream or the engine went away: start over
                log.warning(
                    "following Docker's events failed (%s); again in %s s", error, retry_seconds
                )
            time.sleep(retry_seconds)

    def _each(self, action, items: list) -> None:
        """`action` on every item, concurrently; the first failure is raised after all ran."""
        if not items:
            return
        with ThreadPoolExecutor(min(CONNECT_WORKERS, len(items))) as pool:
            for future in [pool.submit(action, item) for item in items]:
                future.result()


# The hub's one queue (its spawners share it).
CONNECTIONS = ConnectionQueue()


def main(argv: list[str] | None = None) -> None:
    """The keeper, as the hub runs it (configure.network_keeper_service)."""
    import docker  # the client; the spawner passes DockerSpawner's own

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="CONTAINER_PREFIX of the deployment")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname).1s %(asctime)s opsbook-networks] %(message)s"
    )
    EngineerNetworks(docker.APIClient(version="auto"), args.prefix).keep()


if __name__ == "__main__":
    main(sys.argv[1:])
