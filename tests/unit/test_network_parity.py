"""Compose and the chart agree on who reaches what, offline.

Compose: an engineer's container is alone on a network of its own (opsbook_hub.networks) with the
services docker-compose.yml labels org.opsbook.engineer-networks; it reaches each of their ports
(the images' EXPOSE) but those that listen on another network's name only (checked below against
the image and compose). Kubernetes: the chart's NetworkPolicy of engineers' pods from our values
(helm_support's model, as test_helm_network). Every destination is named once with where it is in
each deployment; the two verdicts must match, or the difference is listed with its reason. A port
compose would open to engineers that the table does not name fails too: add it, decided.

Needs ../shared/z2jh (the chart's defaults); skips with the reason where it is absent.
"""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from opsbook_hub import networks

from .helm_support import (
    MANIFESTS,
    NAMESPACE,
    ROOT,
    Destination,
    egress_allows,
    load_all_yaml,
    merged_values,
    singleuser_network_policy,
)

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def chart_pod(component: str) -> dict:
    return {"component": component, "app": "jupyterhub", "release": "opsbook"}


def runs_pod_labels() -> dict:
    deployment = next(
        d for d in load_all_yaml(MANIFESTS / "runs.yaml") if d["kind"] == "Deployment"
    )
    return deployment["spec"]["template"]["metadata"]["labels"]


MONITORING = "monitoring"
# name: (compose services (a pattern) and port, the same on Kubernetes, as test_helm_network has it)
DESTINATIONS = {
    "the hub's API": (("hub", 8081), Destination(8081, None, NAMESPACE, chart_pod("hub"))),
    "the proxy's public port": (
        ("proxy", 8000),
        Destination(8000, None, NAMESPACE, chart_pod("proxy")),
    ),
    "the proxy's API": (("proxy", 8001), Destination(8001, None, NAMESPACE, chart_pod("proxy"))),
    "the runs service": (("runs", 8000), Destination(8000, None, NAMESPACE, runs_pod_labels())),
    "Prometheus's query API": (
        ("prometheus", 9090),
        Destination(9090, None, MONITORING, {"app.kubernetes.io/name": "prometheus"}),
    ),
    "Alertmanager": (
        ("alertmanager", 9093),
        Destination(9093, None, MONITORING, {"app.kubernetes.io/name": "alertmanager"}),
    ),
    "the identity provider": (("idp", 9000), Destination(443, "198.51.100.20")),
    "a webhook receiver": (("recorder", 8080), Destination(443, "198.51.100.30")),
    "the package repository's indexes": (("pkgrepo", 80), Destination(80, "192.0.2.200")),
    "the package repository's sshd": (("pkgrepo", 22), Destination(22, "192.0.2.200")),
    "a staging host's sshd": (("web-*", 22), Destination(22, "192.0.2.10")),
    "a production host's sshd": (("db-*", 22), Destination(22, "192.0.2.20")),
    "a staging host's node exporter": (("web-*", 9100), Destination(9100, "192.0.2.10")),
    "a production host's node exporter": (("db-*", 9100), Destination(9100, "192.0.2.20")),
    "PostgreSQL": (("postgres", 5432), Destination(5432, "10.20.30.40")),
    "another engineer's server": (
        ("another engineer", 8888),
        Destination(8888, None, NAMESPACE, chart_pod("singleuser-server")),
    ),
}
# Where the two deployments differ, and why that is acceptable.
EXPORTERS = (
    "the demo fleet's exporters listen on every address of theirs "
    "(Prometheus scrapes them by name, which Docker may resolve on any shared network); read-only "
    "metrics Prometheus gives engineers anyway. Real hosts are reached through routing, and the "
    "team's firewall allows SSH only (README, Networks)."
)
KNOWN_DIFFERENCES = {
    "a staging host's node exporter": EXPORTERS,
    "a production host's node exporter": EXPORTERS,
}

# Ports a member serves on another network's name only: (service, port) -> (the name, the file
# and the text that binds it there).
BOUND_ELSEWHERE = {
    ("proxy", 8001): ("proxy-api", ROOT / "images/proxy/Dockerfile", '"--api-ip=proxy-api"'),
    ("pkgrepo", 22): (
        "pkgrepo-admin",
        ROOT / "images/fleet/repo/opsbook-repo-start",
        '"ListenAddress=$address"',
    ),
}


def members() -> set[str]:
    return {
        name
        for name, service in SERVICES.items()
        if (service.get("labels") or {}).get(networks.MEMBER_LABEL)
        == "${COMPOSE_PROJECT_NAME:-opsbook}"
    }


def dockerfile(service: str) -> Path:
    image = SERVICES[service]["image"].split(":")[0].removeprefix("opsbook/")
    fleet = {"fleet-web": "fleet/host.Dockerfile", "fleet-db": "fleet/host.Dockerfile"}
    fleet["pkgrepo"] = "fleet/repo.Dockerfile"
    if image == "hub":
        return ROOT / "hub" / "Dockerfile"
    return ROOT / "images" / fleet.get(image, f"{image}/Dockerfile")


def exposed(service: str) -> set[int]:
    text = dockerfile(service).read_text()
    return {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}


def compose_reach() -> set[tuple[str, int]]:
    """(service, port) an engineer's container reaches under docker-compose.yml."""
    return {
        (service, port)
        for service in members()
        for port in exposed(service)
        if (service, port) not in BOUND_ELSEWHERE
    }


@pytest.fixture(scope="module")
def policy():
    return singleuser_network_policy(merged_values())


def test_the_ports_bound_elsewhere_are_bound_on_names_engineers_never_see():
    for (service, _), (name, path, binding) in BOUND_ELSEWHERE.items():
        assert binding in path.read_text(), (service, path)
        networks_of = SERVICES[service]["networks"]
        aliases = {n: (cfg or {}).get("aliases", []) for n, cfg in networks_of.items()}
        holders = [n for n, a in aliases.items() if name in a]
        assert len(holders) == 1, (service, aliases)
        # Engineers' networks give a member its service's name only (networks.member_of).
        assert name != service
    assert SERVICES["pkgrepo"]["environment"]["OPSBOOK_SSH_LISTEN"] == "pkgrepo-admin"
    hub_env = SERVICES["hub"]["environment"]
    assert hub_env["PROXY_API_URL"] == "http://proxy-api:8001"
    assert "pkgrepo-admin" in SERVICES["pkgrepo"]["networks"]["repo-admin"]["aliases"]


def compose_reaches(where: tuple[str, int]) -> bool:
    pattern, port = where
    return any(fnmatch(service, pattern) and p == port for service, p in compose_reach())


def test_every_port_compose_opens_to_engineers_is_decided():
    named = [where for where, _ in DESTINATIONS.values()]
    undecided = {
        (service, port)
        for service, port in compose_reach()
        if not any(fnmatch(service, pattern) and port == p for pattern, p in named)
    }
    assert undecided == set(), f"add to DESTINATIONS: {sorted(undecided)}"


@pytest.mark.parametrize("name", DESTINATIONS)
def test_compose_and_the_chart_agree(policy, name):
    where, destination = DESTINATIONS[name]
    compose_says = compose_reaches(where)
    helm_says = egress_allows(policy, destination)
    if name in KNOWN_DIFFERENCES:
        assert compose_says and not helm_says, KNOWN_DIFFERENCES[name]
        return
    assert compose_says == helm_says, (
        f"{name}: compose {'reaches' if compose_says else 'does not reach'} {where}, "
        f"the chart {'allows' if helm_says else 'does not allow'} {destination}"
    )


def test_what_runbooks_need_is_reached_and_what_they_must_not_is_not(policy):
    reached = {name for name, (where, _) in DESTINATIONS.items() if compose_reaches(where)}
    assert reached >= {
        "the hub's API",
        "the runs service",
        "Prometheus's query API",
        "the package repository's indexes",
        "a staging host's sshd",
        "a production host's sshd",
    }
    assert not reached & {
        "Alertmanager",
        "the proxy's API",
        "the identity provider",
        "the package repository's sshd",
        "PostgreSQL",
        "another engineer's server",
    }


# Who reaches an engineer's server: compose, whoever shares its network; Kubernetes, pods the
# chart labels hub.jupyter.org/network-access-singleuser (its proxy and hub; chart 4.4.0).
SINGLEUSER_ACCESS = {"hub.jupyter.org/network-access-singleuser": "true"}
INGRESS = {
    "the proxy": ("proxy", {**chart_pod("proxy"), **SINGLEUSER_ACCESS}),
    "the hub": ("hub", {**chart_pod("hub"), **SINGLEUSER_ACCESS}),
    "the runs service": ("runs", runs_pod_labels()),
    "Prometheus": ("prometheus", {"app.kubernetes.io/name": "prometheus"}),
    "another engineer": ("another engineer", chart_pod("singleuser-server")),
}
INGRESS_DIFFERENCES = {
    "the runs service": "it shares engineers' networks, for them to reach it; a Docker bridge "
    "cannot make that one-way. The server still asks for a token.",
    "Prometheus": "as the runs service.",
}


def ingress_admits(policy: dict, labels: dict) -> bool:
    for rule in policy["spec"]["ingress"]:
        for peer in rule.get("from", []):
            selector = peer.get("podSelector", {}).get("matchLabels", {})
            if "namespaceSelector" not in peer and selector.items() <= labels.items():
                return True
    return False


@pytest.mark.parametrize("name", INGRESS)
def test_who_reaches_an_engineers_server(policy, name):
    service, labels = INGRESS[name]
    compose_says = service in members()
    helm_says = ingress_admits(policy, labels)
    if name in INGRESS_DIFFERENCES:
        assert compose_says and not helm_says, INGRESS_DIFFERENCES[name]
        return
    assert compose_says == helm_says, name
