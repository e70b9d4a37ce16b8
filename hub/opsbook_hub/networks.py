"""One Docker network per engineer, joined only by what that engineer may reach.

Docker bridges have no per-port rules: containers on one network reach every port of each other.
So each engineer's container gets a network of its own, which no other engineer's joins (they never
reach each other's servers), created `internal` (no route out) unless ENGINEER_NETWORK_EGRESS says
`routed`. Only containers labelled `org.opsbook.engineer-networks=<CONTAINER_PREFIX>` in
docker-compose.yml join it: the proxy and the hub, which reach the server, and the hub's API, the
runs service, Prometheus, the package repository and the demo fleet, which the server reaches.
Ports of theirs that engineers must not reach listen on a backend address only (compose says which).

Who does what:
- the spawner (`prepare`, `remove`) creates the network and connects the members, concurrently,
  before the server starts, and removes the network once the server's container is gone;
- the keeper (`python -m opsbook_hub.networks`, a service the hub runs and restarts) connects a
  member that starts later (compose recreating the runs service or a fleet host, the hub itself
  after an upgrade) to every engineer's network, and removes networks a dead hub left behind.

The decisions (`missing_members`, `leftovers`, names) are plain functions, tested without Docker;
`EngineerNetworks` is the thin layer that asks Docker.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from docker.errors import APIError

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
    engineers_running: set[str],
    now: float,
    grace: float = LEFTOVER_GRACE_SECONDS,
) -> list[Mapping[str, Any]]:
    """Engineers' networks whose engineer has no container, older than `grace` seconds.

    `engineers_running`: the escaped names of engineers whose server container exists.
    """
    return [
        n
        for n in networks
        if (n.get("Labels") or {}).get(ENGINEER_LABEL) not in engineers_running
        and now - docker_time(n["Created"]) > grace
    ]


def _already(error: APIError, *words: str) -> bool:
    """Whether Docker's refusal says one of `words` (its API has no codes for these cases)."""
    explanation = str(error.explanation or error).lower()
    return any(word in explanation for word in words)


class EngineerNetworks:
    """Engineers' networks of one deployment (CONTAINER_PREFIX), through a docker.APIClient.

    Blocking calls: the spawner runs them in a thread (`prepare`/`remove` are called through
    `asyncio.to_thread`); connections and disconnections go out concurrently, CONNECT_WORKERS
    at a time, since each one waits for Docker to set up an interface in another container.
    """

    def __init__(self, client: Any, prefix: str, internal: bool = True) -> None:
        self.client = client
        self.prefix = prefix
        self.internal = internal

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

    def prepare(self, name: str, engineer: str) -> tuple[str, int]:
        """Create `name` for `engineer` unless it exists, and connect every member not on it.

        Returns the network's id and how many members were connected now. Fails when a member
        cannot be connected: a server that cannot reach the hub would not start anyway, and one
        that reached less than it should would fail later, less clearly.
        """
        network = self.find(name)
        if network is None:
            network = self.client.create_network(
                name,
                driver="bridge",
                internal=self.internal,
                check_duplicate=True,
                options={"com.docker.network.bridge.name": bridge_name(name)},
                labels={NETWORK_LABEL: self.prefix, ENGINEER_LABEL: engineer},
            )
        network_id = network["Id"]
        missing = missing_members(self.members(), self.attached(network_id))
        self._each(lambda m: self.connect(m, network_id), missing)
        return network_id, len(missing)

    def connect(self, member: Member, network_id: str) -> None:
        try:
            self.client.connect_container_to_network(member.id, network_id, aliases=[member.alias])
        except APIError as error:
            if not _already(error, "already exists", "already attached"):
                raise

    def remove(self, name: str, timeout: float = REMOVE_TIMEOUT_SECONDS) -> bool:
        """Disconnect everything from `name` and remove it; False if Docker still refused at
        `timeout` (the keeper removes it later). A server's container being removed by Docker
        may still hold its endpoint for a moment: that is what the retries are for."""
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
        """Every member on every engineer's network; networks of no running engineer removed."""
        members = self.members()
        networks = self.networks()
        engineers = self.engineers_with_containers()
        gone = leftovers(networks, engineers, time.time() if now is None else now)
        for network in gone:
            log.info("removing %s: its engineer has no container", network["Name"])
            self.remove(network["Name"])
        gone_ids = {n["Id"] for n in gone}
        for network in networks:
            if network["Id"] in gone_ids:
                continue
            missing = missing_members(members, self.attached(network["Id"]))
            self._each(lambda m, nid=network["Id"]: self.connect(m, nid), missing)
            if missing:
                log.info("%s: connected %s", network["Name"], ", ".join(m.alias for m in missing))

    def engineers_with_containers(self) -> set[str]:
        """Escaped names of engineers whose container `<prefix>-<name>` exists (running or not)."""
        head = f"/{self.prefix}-"
        names = (n for c in self.client.containers(all=True) for n in c.get("Names") or [])
        return {n[len(head) :] for n in names if n.startswith(head)}

    def keep(self, retry_seconds: float = 2.0) -> None:
        """Reconcile, then follow members' starts for good; after a lost stream (dockerd
        restarted), reconcile again and follow on from where it broke."""
        while True:
            since = int(time.time())
            try:
                self.reconcile()
                events = self.client.events(
                    decode=True,
                    since=since,
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
