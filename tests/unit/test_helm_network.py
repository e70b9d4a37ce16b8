"""What engineers' pods may reach under the chart's NetworkPolicy rendered from our values (the
chart's rules modelled in helm_support, chart 4.4.0): the fleet over SSH, the package repository,
Prometheus, the runs service, the hub and DNS; not Alertmanager (the runs service silences
batches there), not the Kubernetes API, wherever its
endpoint is (a private or a public address, 443 or 6443), not the cloud metadata server, not the
internet. And the other policies admit what must come in: the hub lets in the runs service and
Prometheus; the runs service lets in the proxy, the hub and engineers' pods.

That the cluster's network plugin enforces NetworkPolicy at all only a cluster shows (README).
Needs ../shared/z2jh (the chart's defaults); skips with the reason where it is absent.
"""

import copy
import ipaddress

import pytest

from .helm_support import (
    API_SERVER_ENDPOINTS,
    MANIFESTS,
    NAMESPACE,
    Destination,
    egress_allows,
    ip_blocks,
    k8s_hub,
    load_all_yaml,
    merged_values,
    singleuser_network_policy,
    user_named,
    user_pod,
)


@pytest.fixture(scope="module")
def values():
    return merged_values()


@pytest.fixture(scope="module")
def policy(values):
    return singleuser_network_policy(values)


def runs_pod_labels() -> dict:
    deployment = next(
        d for d in load_all_yaml(MANIFESTS / "runs.yaml") if d["kind"] == "Deployment"
    )
    return deployment["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("endpoint", API_SERVER_ENDPOINTS, ids=str)
def test_engineers_pods_cannot_reach_the_kubernetes_api(policy, endpoint):
    assert not egress_allows(policy, endpoint)


def test_with_the_charts_default_egress_rules_they_could(values):
    """Why nonPrivateIPs is off: the chart's default allows every non-private address, and so a
    managed cluster's public API endpoint."""
    defaults = copy.deepcopy(values)
    defaults["singleuser"]["networkPolicy"]["egressAllowRules"]["nonPrivateIPs"] = True
    reached = [
        e for e in API_SERVER_ENDPOINTS if egress_allows(singleuser_network_policy(defaults), e)
    ]
    assert {e.ip for e in reached} >= {"34.118.224.1", "203.0.113.7"}


def test_no_egress_rule_of_ours_is_open_ended(values):
    for rule in values["singleuser"]["networkPolicy"]["egress"]:
        assert rule.get("to") and rule.get("ports"), rule
        for port in rule["ports"]:
            assert port["port"] not in (443, 6443), "the API server's ports"
    for cidr in ip_blocks(values["singleuser"]["networkPolicy"]["egress"]):
        assert ipaddress.ip_network(cidr).prefixlen >= 8, cidr


@pytest.mark.parametrize(
    "destination",
    [
        Destination(port=8000, namespace=NAMESPACE, labels=runs_pod_labels()),
        Destination(
            port=9090, namespace="monitoring", labels={"app.kubernetes.io/name": "prometheus"}
        ),
        Destination(port=22, ip="192.0.2.10"),  # a fleet host
        Destination(port=80, ip="192.0.2.200"),  # the package repository
        Destination(
            port=8081,
            namespace=NAMESPACE,
            labels={"component": "hub", "app": "jupyterhub", "release": "opsbook"},
        ),
        Destination(
            port=53, protocol="UDP", namespace="kube-system", labels={"k8s-app": "kube-dns"}
        ),
    ],
    ids=["runs", "prometheus", "fleet-ssh", "pkgrepo", "hub", "dns"],
)
def test_engineers_pods_reach_what_runbooks_need(policy, destination):
    assert egress_allows(policy, destination)


@pytest.mark.parametrize(
    "destination",
    [
        Destination(port=443, ip="192.0.2.10"),  # a fleet host, not over SSH
        Destination(port=443, ip="151.101.0.223"),  # the internet (a package index)
        Destination(port=80, ip="169.254.169.254"),  # the cloud metadata server
        Destination(port=5432, ip="10.20.30.40"),  # a database in the private network
        Destination(port=8000, namespace="other", labels=runs_pod_labels()),
        Destination(
            port=9090, namespace="monitoring", labels={"app.kubernetes.io/name": "grafana"}
        ),
        Destination(port=8888, namespace=NAMESPACE, labels={"component": "singleuser-server"}),
        Destination(
            port=9093, namespace="monitoring", labels={"app.kubernetes.io/name": "alertmanager"}
        ),
        Destination(port=22, ip="192.0.2.200"),  # the package repository's sshd
    ],
    ids=[
        "fleet-https",
        "internet",
        "metadata",
        "private",
        "other-ns",
        "grafana",
        "other-engineer",
        "alertmanager",
        "pkgrepo-ssh",
    ],
)
def test_and_nothing_else(policy, destination):
    assert not egress_allows(policy, destination)


def test_the_chart_blocks_the_metadata_server_without_a_privileged_container(values):
    assert values["singleuser"]["cloudMetadata"]["blockWithIptables"] is False
    assert values["singleuser"]["networkPolicy"]["egressAllowRules"]["cloudMetadataServer"] is False


def ingress_admits(policy: dict, namespace: str, labels: dict, port) -> bool:
    """Whether a NetworkPolicy's ingress rules admit a pod (its namespace, labels) to a port."""
    for rule in policy["spec"]["ingress"]:
        if rule.get("ports") and port not in [p["port"] for p in rule["ports"]]:
            continue
        for peer in rule.get("from", []):
            in_namespace = (
                peer["namespaceSelector"]["matchLabels"].items()
                <= {"kubernetes.io/metadata.name": namespace}.items()
                if "namespaceSelector" in peer
                else namespace == NAMESPACE
            )
            pod_matches = (
                peer.get("podSelector", {}).get("matchLabels", {}).items() <= labels.items()
            )
            if in_namespace and pod_matches:
                return True
    return False


def test_the_runs_service_admits_the_proxy_the_hub_and_engineers_pods():
    runs_policy = next(
        d for d in load_all_yaml(MANIFESTS / "runs.yaml") if d["kind"] == "NetworkPolicy"
    )
    hub = k8s_hub()
    engineer = user_pod(hub.config, user_named("bob", "ops"))["metadata"]["labels"]
    chart_pod = {"app": "jupyterhub", "release": "opsbook"}
    for labels in (
        engineer,
        {**chart_pod, "component": "proxy"},
        {**chart_pod, "component": "hub"},
    ):
        assert ingress_admits(runs_policy, NAMESPACE, labels, "http"), labels
    assert not ingress_admits(runs_policy, "other", engineer, "http")
    assert not ingress_admits(runs_policy, NAMESPACE, {"app": "something-else"}, "http")


def test_the_hub_admits_engineers_pods_the_runs_service_and_prometheus(values):
    hub = k8s_hub()
    engineer = user_pod(hub.config, user_named("bob", "ops"))["metadata"]["labels"]
    # The chart's own ingress rule of the hub: pods carrying this label, in its namespace.
    assert engineer["hub.jupyter.org/network-access-hub"] == "true"
    assert runs_pod_labels()["hub.jupyter.org/network-access-hub"] == "true"
    ours = {"spec": {"ingress": values["hub"]["networkPolicy"]["ingress"]}}
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    assert ingress_admits(ours, "monitoring", prometheus, "http")
    assert not ingress_admits(ours, "default", prometheus, "http")
