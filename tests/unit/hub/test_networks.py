"""Engineers' networks without Docker: a fake engine that keeps containers, networks and their
endpoints as Docker's API reports them, and fails as Docker does (an endpoint that exists, a
network with active endpoints)."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import docker.errors
import pytest
from dockerspawner import DockerSpawner
from opsbook_hub import networks as nets
from opsbook_hub.networks import EngineerNetworks, Member
from opsbook_hub.spawner import OpsbookDockerSpawner
from traitlets.config import Config

PREFIX = "opsbook"
LONG_AGO = "2026-01-01T00:00:00.123456789Z"


class APIError(docker.errors.APIError):
    """Docker's refusal, with its message as the engine words it."""

    def __init__(self, explanation: str) -> None:
        super().__init__(explanation, explanation=explanation)


class FakeDocker:
    """The parts of docker.APIClient the networks use."""

    def __init__(self, connect_seconds: float = 0.0) -> None:
        self.containers_ = {}
        self.networks_ = {}
        self.ids = itertools.count(1)
        self.connect_seconds = connect_seconds
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        self.removing = {}  # network id -> refusals left ("active endpoints")
        self.event_batches = []
        self.volumes_ = []
        self.taken_by_others = []  # subnets another deployment takes just before each create

    def run(self, name, labels=None, running=True) -> str:
        cid = f"c{next(self.ids)}"
        self.containers_[cid] = {
            "Id": cid,
            "Names": [f"/{name}"],
            "Labels": labels or {},
            "running": running,
        }
        return cid

    def member(self, service, prefix=PREFIX) -> str:
        labels = {nets.MEMBER_LABEL: prefix, nets.SERVICE_LABEL: service}
        return self.run(f"{prefix}_{service}_1", labels)

    def network(self, name, engineer, created=LONG_AGO, subnet=None) -> str:
        nid = f"n{next(self.ids)}"
        labels = {nets.NETWORK_LABEL: PREFIX, nets.ENGINEER_LABEL: engineer} if engineer else {}
        self.networks_[nid] = {
            "Id": nid,
            "Name": name,
            "Labels": labels,
            "Created": created,
            "Internal": True,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": subnet}] if subnet else []},
            "Containers": {},
            "Aliases": {},
        }
        return nid

    def subnets(self):
        return [
            ipaddress.ip_network(c["Subnet"])
            for n in self.networks_.values()
            for c in n["IPAM"]["Config"]
        ]

    # --- docker.APIClient ---

    def containers(self, filters=None, all=False):
        found = [c for c in self.containers_.values() if all or c["running"]]
        if filters and "label" in filters:
            key, value = filters["label"].split("=", 1)
            found = [c for c in found if c["Labels"].get(key) == value]
        return [dict(c) for c in found]

    def networks(self, filters=None):
        key, value = filters["label"].split("=", 1) if filters else (None, None)
        return [
            {k: v for k, v in n.items() if k != "Containers"}
            for n in self.networks_.values()
            if key is None or n["Labels"].get(key) == value
        ]

    def create_volume(self, name):
        if name not in self.volumes_:
            self.volumes_.append(name)
        return {"Name": name}

    def volumes(self):
        return {"Volumes": [{"Name": name} for name in self.volumes_], "Warnings": None}

    def inspect_network(self, nid):
        return {**self.networks_[nid], "Containers": dict(self.networks_[nid]["Containers"])}

    def create_network(self, name, driver, internal, check_duplicate, options, labels, ipam):
        assert driver == "bridge" and check_duplicate is True
        if self.taken_by_others:
            self.network("other", None, subnet=self.taken_by_others.pop(0))
        subnet = ipam["Config"][0]["Subnet"] if ipam else None
        if subnet and any(ipaddress.ip_network(subnet).overlaps(t) for t in self.subnets()):
            raise APIError("Pool overlaps with other one on this address space")
        nid = self.network(
            name, labels[nets.ENGINEER_LABEL], created="2999-01-01T00:00:00Z", subnet=subnet
        )
        self.networks_[nid].update(Internal=internal, Options=options, Labels=labels)
        return {"Id": nid, "Warning": ""}

    def connect_container_to_network(self, container, nid, aliases):
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.connect_seconds)
        with self.lock:
            self.in_flight -= 1
            endpoints = self.networks_[nid]["Containers"]
            if container in endpoints:
                raise APIError(f"endpoint with name x already exists in network {nid}")
            endpoints[container] = {"Name": container}
            self.networks_[nid]["Aliases"][container] = aliases

    def disconnect_container_from_network(self, container, nid, force):
        self.networks_[nid]["Containers"].pop(container)

    def remove_network(self, nid):
        if self.removing.get(nid):
            self.removing[nid] -= 1
            raise APIError(f"error while removing network: network {nid} has active endpoints")
        assert not self.networks_[nid]["Containers"], "Docker refuses while endpoints remain"
        del self.networks_[nid]

    def events(self, decode, since, until, filters):
        assert until - since == nets.RECONCILE_EVERY_SECONDS
        assert filters["label"] == f"{nets.MEMBER_LABEL}={PREFIX}"
        assert filters["event"] == "start"
        if not self.event_batches:
            raise APIError("connection to the engine lost")
        yield from self.event_batches.pop(0)

    # --- what a test asks ---

    def by_name(self, name):
        return next(n for n in self.networks_.values() if n["Name"] == name)

    def aliases_on(self, name):
        return sorted(a for aliases in self.by_name(name)["Aliases"].values() for a in aliases)


@pytest.fixture
def engine():
    fake = FakeDocker()
    for service in ("proxy", "hub", "runs", "prometheus", "pkgrepo", "web-1", "db-1"):
        fake.member(service)
    # Not members: the provider, Alertmanager, another deployment's runs service, bob's server.
    fake.run("opsbook_idp_1", {nets.SERVICE_LABEL: "idp"})
    fake.run("opsbook_alertmanager_1", {nets.SERVICE_LABEL: "alertmanager"})
    fake.member("runs", prefix="opsbook-test")
    fake.run("opsbook-bob")
    return fake


MEMBERS = ["db-1", "hub", "pkgrepo", "prometheus", "proxy", "runs", "web-1"]
POOL = ipaddress.IPv4Network("10.99.0.0/16")


def prepare(
    networks: EngineerNetworks, name: str, engineer: str, queue: nets.ConnectionQueue | None = None
) -> tuple[str, int]:
    """What the spawner does: the network, then its members through the hub's queue."""
    network_id = networks.ensure(name, engineer)
    missing = networks.missing(network_id)
    queue = queue or nets.CONNECTIONS
    for future in [queue.submit(networks, m, network_id) for m in missing]:
        future.result()
    return network_id, len(missing)


def test_names_are_the_deployments_and_bridges_fit_linux():
    assert nets.network_name("opsbook", "erin") == "opsbook-net-erin"
    bridges = {nets.bridge_name(nets.network_name("opsbook-test", u)) for u in ("erin", "bob")}
    assert len(bridges) == 2
    assert all(b.startswith("obk-") and len(b) <= 15 for b in bridges)


def test_prepare_makes_an_internal_network_of_the_members_alone(engine):
    network_id, connected = prepare(EngineerNetworks(engine, PREFIX), "opsbook-net-erin", "erin")
    network = engine.networks_[network_id]
    assert network["Internal"] is True
    assert network["Labels"] == {nets.NETWORK_LABEL: PREFIX, nets.ENGINEER_LABEL: "erin"}
    bridge = nets.bridge_name(network["Name"])
    assert network["Options"] == {"com.docker.network.bridge.name": bridge}
    assert connected == len(MEMBERS)
    # Each under its compose service's name: what engineers' containers resolve.
    assert engine.aliases_on("opsbook-net-erin") == MEMBERS


def test_prepare_again_connects_only_what_is_missing(engine):
    networks = EngineerNetworks(engine, PREFIX)
    first, _ = prepare(networks, "opsbook-net-erin", "erin")
    # A fleet host recreated while erin's network exists: a new container, not on it yet.
    engine.containers_.pop(next(c for c, v in engine.containers_.items() if "web-1" in str(v)))
    engine.networks_[first]["Containers"] = {
        cid: e
        for cid, e in engine.networks_[first]["Containers"].items()
        if cid in engine.containers_
    }
    engine.member("web-1")
    again, connected = prepare(networks, "opsbook-net-erin", "erin")
    assert (again, connected) == (first, 1)
    assert len([n for n in engine.networks_.values() if n["Name"] == "opsbook-net-erin"]) == 1


def test_an_endpoint_that_already_exists_is_no_failure(engine):
    networks = EngineerNetworks(engine, PREFIX)
    network_id, _ = prepare(networks, "opsbook-net-erin", "erin")
    hub = next(m for m in networks.members() if m.alias == "hub")
    networks.connect(hub, network_id)  # Docker says "already exists": fine


def test_the_queue_serves_engineers_in_the_order_they_came():
    """Thirty first starts asking at once were all served at the end, together; in order, the
    first engineer waits for their own members only."""
    engine = FakeDocker(connect_seconds=0.02)
    for service in ("proxy", "hub", "runs", "prometheus", "pkgrepo", "web-1", "web-2", "db-1"):
        engine.member(service)
    networks = EngineerNetworks(engine, PREFIX)
    done: dict[str, float] = {}
    queue = nets.ConnectionQueue()
    futures = []
    for engineer in ("erin", "bob", "carol"):
        network_id = networks.ensure(f"opsbook-net-{engineer}", engineer)
        for member in networks.missing(network_id):
            future = queue.submit(networks, member, network_id)
            future.add_done_callback(lambda _, e=engineer: done.__setitem__(e, time.monotonic()))
            futures.append(future)
    for future in futures:
        future.result()
    assert done["erin"] < done["bob"] < done["carol"]


def test_the_hub_and_proxy_do_not_wait_behind_other_engineers_fleet_hosts():
    engine = FakeDocker(connect_seconds=0.05)
    hosts = [engine.member(f"web-{n}") for n in range(16)]
    hub = engine.member("hub")
    networks = EngineerNetworks(engine, PREFIX)
    queue = nets.ConnectionQueue(first_workers=1, other_workers=1)
    bob = networks.ensure("opsbook-net-bob", "bob")
    erin = networks.ensure("opsbook-net-erin", "erin")
    fleet = [queue.submit(networks, Member(h, "web"), bob) for h in hosts]  # 0.8 s in line
    queue.submit(networks, Member(hub, "hub"), erin).result()
    assert not all(f.done() for f in fleet)  # the hub went past the fleet's line


# --- subnets: a /26 each from ENGINEER_NETWORK_POOL, not Docker's default pools ---


def test_free_subnet_is_the_first_26_that_overlaps_nothing():
    taken = [
        ipaddress.ip_network("10.99.0.0/26"),  # an engineer's
        ipaddress.ip_network("10.99.0.64/28"),  # smaller, inside the second /26
        ipaddress.ip_network("10.98.0.0/15"),  # 10.98.0.0-10.99.255.255: the whole pool
        ipaddress.ip_network("fd00::/64"),  # IPv6: another address space
        ipaddress.ip_network("172.17.0.0/16"),
    ]
    assert nets.free_subnet(POOL, taken[:2] + taken[3:]) == ipaddress.ip_network("10.99.0.128/26")
    with pytest.raises(RuntimeError, match=r"ENGINEER_NETWORK_POOL 10\.99\.0\.0/16 is full"):
        nets.free_subnet(POOL, taken)  # the /15 covers the whole pool
    wide = [ipaddress.ip_network("10.99.0.0/24"), ipaddress.ip_network("10.99.1.5/32")]
    assert nets.free_subnet(POOL, wide) == ipaddress.ip_network("10.99.1.64/26")


def test_a_full_pool_names_the_setting():
    small = ipaddress.IPv4Network("10.99.0.0/25")
    with pytest.raises(RuntimeError, match=r"all 2 networks of /26 are in use"):
        nets.free_subnet(small, [small])


def test_each_engineer_gets_a_subnet_of_the_pool_and_other_networks_are_avoided(engine):
    engine.network("opsbook_default", None, subnet="10.99.0.0/26")  # a network someone made
    networks = EngineerNetworks(engine, PREFIX, pool=POOL)
    erin, _ = prepare(networks, "opsbook-net-erin", "erin")
    bob, _ = prepare(networks, "opsbook-net-bob", "bob")
    assert engine.networks_[erin]["IPAM"]["Config"] == [{"Subnet": "10.99.0.64/26"}]
    assert engine.networks_[bob]["IPAM"]["Config"] == [{"Subnet": "10.99.0.128/26"}]


def test_a_subnet_another_deployment_took_meanwhile_is_chosen_again(engine):
    engine.taken_by_others = ["10.99.0.0/26", "10.99.0.64/26"]  # twice in a row
    network_id = EngineerNetworks(engine, PREFIX, pool=POOL).ensure("opsbook-net-erin", "erin")
    assert engine.networks_[network_id]["IPAM"]["Config"] == [{"Subnet": "10.99.0.128/26"}]


def test_concurrent_spawns_of_one_hub_never_choose_the_same_subnet(engine):
    networks = EngineerNetworks(engine, PREFIX, pool=POOL)
    names = [f"e{n}" for n in range(12)]
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda e: networks.ensure(f"opsbook-net-{e}", e), names))
    subnets = [str(s) for s in engine.subnets()]
    assert len(set(subnets)) == len(names)


def test_another_docker_error_fails_the_spawn(engine):
    def refuse(*args, **kwargs):
        raise APIError("could not attach to network: no space left")

    engine.connect_container_to_network = refuse
    with pytest.raises(APIError, match="no space left"):
        prepare(EngineerNetworks(engine, PREFIX), "opsbook-net-erin", "erin")


def test_routed_networks_are_not_internal(engine):
    network_id, _ = prepare(EngineerNetworks(engine, PREFIX, internal=False), "opsbook-net-e", "e")
    assert engine.networks_[network_id]["Internal"] is False


def test_members_are_connected_concurrently():
    engine = FakeDocker(connect_seconds=0.05)
    for n in range(8):
        engine.member(f"web-{n}")
    prepare(EngineerNetworks(engine, PREFIX), "opsbook-net-erin", "erin")
    assert engine.most_in_flight > 1


def test_remove_disconnects_everything_and_waits_out_a_container_being_removed(engine):
    networks = EngineerNetworks(engine, PREFIX)
    network_id, _ = prepare(networks, "opsbook-net-erin", "erin")
    engine.removing[network_id] = 3  # Docker still removing erin's container, three times
    assert networks.remove("opsbook-net-erin", timeout=10) is True
    assert network_id not in engine.networks_
    assert networks.remove("opsbook-net-erin") is True  # gone already: nothing to do


def test_remove_gives_up_at_its_deadline_and_says_so(engine, caplog):
    networks = EngineerNetworks(engine, PREFIX)
    network_id, _ = prepare(networks, "opsbook-net-erin", "erin")
    engine.removing[network_id] = 10**6
    assert networks.remove("opsbook-net-erin", timeout=0.5) is False
    assert "opsbook-net-erin not removed yet" in caplog.text


def test_reconcile_connects_recreated_members_and_removes_leftovers(engine):
    networks = EngineerNetworks(engine, PREFIX)
    now = time.time()
    engine.run("opsbook-erin")  # erin's server: her network stays
    erin = engine.network("opsbook-net-erin", "erin")
    # carol was deleted outside the hub (container and home volume gone); dana's network was
    # just made; frank's server is stopped (his home volume stays, and so does his network).
    carol = engine.network("opsbook-net-carol", "carol")
    engine.networks_[carol]["Containers"] = {"c2": {}}
    dana = engine.network("opsbook-net-dana", "dana", created="2999-01-01T00:00:00Z")
    frank = engine.network("opsbook-net-frank", "frank")
    engine.volumes_ = ["opsbook-home-frank", "opsbook-test-home-carol"]
    networks.reconcile(now=now)
    assert engine.aliases_on("opsbook-net-erin") == MEMBERS
    assert engine.aliases_on("opsbook-net-frank") == MEMBERS
    assert carol not in engine.networks_
    assert {dana, erin, frank} <= set(engine.networks_)


def test_leftovers_spare_young_networks_and_engineers_present():
    now = nets.docker_time("2026-11-29T12:00:00Z")
    made = {
        "old-gone": ("2026-11-29T11:00:00.5Z", "a"),
        "young-gone": ("2026-11-29T11:59:30.123456789Z", "b"),
        "old-running": ("2026-11-29T11:00:00+00:00", "c"),
    }
    found = [
        {"Name": name, "Created": created, "Labels": {nets.ENGINEER_LABEL: who}}
        for name, (created, who) in made.items()
    ]
    assert [n["Name"] for n in nets.leftovers(found, {"c"}, now, grace=120)] == ["old-gone"]


def test_docker_time_reads_nanoseconds_and_offsets():
    assert nets.docker_time("2026-11-29T13:00:00.999999999+01:00") == nets.docker_time(
        "2026-11-29T12:00:00Z"
    )
    with pytest.raises(ValueError, match="not a Docker timestamp"):
        nets.docker_time("yesterday")


def test_the_keeper_connects_a_member_that_starts_to_every_network(engine, monkeypatch):
    networks = EngineerNetworks(engine, PREFIX)
    for user in ("erin", "bob"):
        engine.run(f"opsbook-{user}")
        prepare(networks, f"opsbook-net-{user}", user)
    recreated = engine.member("runs")
    started = {
        "id": recreated,
        "Actor": {"Attributes": {nets.SERVICE_LABEL: "runs", nets.MEMBER_LABEL: PREFIX}},
    }
    # One stream with the start in it, then the engine goes away: the keeper reconciles again.
    engine.event_batches = [[started]]
    sleeps = []

    def sleep(seconds):
        if seconds != 0.01:  # the fake engine's own pauses
            return
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(nets.time, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        networks.keep(retry_seconds=0.01)
    for user in ("erin", "bob"):
        assert recreated in engine.by_name(f"opsbook-net-{user}")["Containers"]
        assert engine.by_name(f"opsbook-net-{user}")["Aliases"][recreated] == ["runs"]


def test_a_member_is_named_by_its_service_else_its_container():
    runs = {"Id": "1", "Names": ["/x_runs_1"], "Labels": {nets.SERVICE_LABEL: "runs"}}
    assert nets.member_of(runs) == Member("1", "runs")
    other = {"Id": "2", "Names": ["/gateway"], "Labels": {}}
    assert nets.member_of(other) == Member("2", "gateway")


# --- the spawner: the network while the server starts, kept between servers ---


def spawner(engine, monkeypatch) -> OpsbookDockerSpawner:
    monkeypatch.setattr(OpsbookDockerSpawner, "_client", engine)
    config = Config()
    config.DockerSpawner.prefix = PREFIX
    made = OpsbookDockerSpawner(
        config=config, user=SimpleNamespace(name="erin", url="/user/erin/"), _mock=True
    )
    made.engineer_networks = lambda: EngineerNetworks(engine, PREFIX, pool=POOL)
    return made


def test_the_spawner_runs_each_server_on_its_own_network(engine, monkeypatch):
    order = []

    async def started(self):
        members = engine.by_name(self.network_name)["Containers"]
        order.append(("server started", len(members)))
        return "10.0.0.2", 8888

    async def stopped(self, now=False):
        order.append(("server stopped", None))

    async def listening(*args) -> bool:
        members = engine.by_name("opsbook-net-erin")["Containers"]
        order.append(("checked", len(members)))
        return True

    monkeypatch.setattr(DockerSpawner, "start", started)
    monkeypatch.setattr(DockerSpawner, "stop", stopped)
    monkeypatch.setattr("opsbook_hub.spawner.wait_listening", listening)
    erin = spawner(engine, monkeypatch)
    assert erin.network_name == "opsbook-net-erin"

    async def start_stop_start_delete() -> None:
        assert await erin.start() == ("10.0.0.2", 8888)
        # Her home volume, then every member on her network, before the container starts.
        assert engine.volumes_ == ["opsbook-home-erin"]
        assert order[:2] == [("server started", len(MEMBERS)), ("checked", len(MEMBERS))]
        await erin.stop()
        assert engine.by_name("opsbook-net-erin")  # kept for her next start
        assert await erin.start() == ("10.0.0.2", 8888)
        assert len(engine.networks_) == 1 and order[-1] == ("checked", len(MEMBERS))
        await erin.stop()
        await erin.delete_forever()
        assert engine.networks_ == {}

    asyncio.run(start_stop_start_delete())


def test_a_member_that_cannot_be_connected_fails_the_start(engine, monkeypatch):
    async def started(self):
        return "10.0.0.2", 8888

    def refuse(*args, **kwargs):
        raise APIError("could not attach to network: no space left")

    monkeypatch.setattr(DockerSpawner, "start", started)
    engine.connect_container_to_network = refuse
    with pytest.raises(APIError, match="no space left"):
        asyncio.run(spawner(engine, monkeypatch).start())
