"""Kubernetes objects of ours validate against the Kubernetes API's schemas (kubernetes-validate,
strict: an unknown field is an error), for Kubernetes 1.30 and 1.35: the manifests of
helm/manifests/, the engineers' pods as KubeSpawner 7.0.0 builds them from our values, and the
NetworkPolicy the chart renders from our network settings (the last two through helm_support's
models of the chart; they need ../shared/z2jh and skip, saying why, where it is absent).

Also: the runs service's manifests fit the hub's side (name, port, token, labels).
"""

import copy

import kubernetes_validate
import pytest
import yaml

from opsbook.contract.stacks import NONPRODUCTION_SETTING
from opsbook.service import settings as runs_settings

from .helm_support import (
    HELM,
    KUBERNETES_VERSIONS,
    MANIFESTS,
    NAMESPACE,
    ROOT,
    k8s_hub,
    load_all_yaml,
    our_values,
    secret_refs,
    singleuser_network_policy,
    user_named,
    user_pod,
)

MANIFEST_DOCS = [
    pytest.param(path, index, doc, id=f"{path.name}:{doc['kind']}/{doc['metadata']['name']}")
    for path in sorted(MANIFESTS.glob("*.yaml"))
    for index, doc in enumerate(load_all_yaml(path))
]


def validate(doc: dict, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="module")
def hub():
    return k8s_hub()


def test_there_are_manifests():
    kinds = {
        (doc["kind"], doc["metadata"]["name"]) for _, _, doc in (p.values for p in MANIFEST_DOCS)
    }
    assert kinds == {("Deployment", "runs"), ("Service", "runs"), ("NetworkPolicy", "runs")}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("path", "index", "doc"), MANIFEST_DOCS)
def test_our_manifests_validate(path, index, doc, version):
    validate(doc, version)
    assert "namespace" not in doc["metadata"], "applied with -n into the release's namespace"


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePulPolicy="Always"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(
            containerPort="eight thousand"
        ),
        lambda d: d["spec"]["template"]["spec"].update(containerz=[]),
        lambda d: d["spec"].update(replicas="one"),
    ],
)
def test_the_validation_catches_a_broken_manifest(spoil):
    deployment = copy.deepcopy(next(d for _, _, d in (p.values for p in MANIFEST_DOCS)))
    assert deployment["kind"] == "Deployment"
    spoil(deployment)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBERNETES_VERSIONS[0])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("groups", [("ops",), ("oncall", "admins")])
def test_engineers_pods_validate(hub, groups, version):
    validate(user_pod(hub.config, user_named("erin", *groups)), version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_network_policies_of_our_values_validate(hub, version):
    validate(singleuser_network_policy(hub.values), version)
    hub_ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "hub-ingress-of-our-values", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": hub.values["hub"]["networkPolicy"]["ingress"],
        },
    }
    validate(hub_ingress, version)


def manifest(kind: str) -> dict:
    return next(d for _, _, d in (p.values for p in MANIFEST_DOCS) if d["kind"] == kind)


def test_the_runs_service_is_where_the_hub_registers_it():
    values = our_values()
    service = manifest("Service")
    port = service["spec"]["ports"][0]["port"]
    url = values["hub"]["extraEnv"]["RUNS_SERVICE_URL"]
    assert url == f"http://{service['metadata']['name']}:{port}"
    pod = manifest("Deployment")["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container_ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert (
        container_ports[service["spec"]["ports"][0]["targetPort"]]
        == runs_settings.load({"JUPYTERHUB_API_TOKEN": "x" * 16})["RUNS_PORT"]
    )


def test_the_runs_service_uses_the_token_the_hub_registers_and_postgresql_from_a_secret():
    values = our_values()
    env = {
        e["name"]: e
        for e in manifest("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    hub_ref = secret_refs(values["hub"]["extraEnv"])["RUNS_SERVICE_TOKEN"]
    runs_ref = env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert (runs_ref["name"], runs_ref["key"]) == (hub_ref["name"], hub_ref["key"])
    database = env["RUNS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert database["name"] == "opsbook-runs" and not database.get("optional", False)
    # Every variable is one the service reads, from a Secret; none is written here but the path
    # of the CA key, which is this manifest's own mount (as compose fixes it for its mount).
    declared = {s.name for s in runs_settings.SETTINGS}
    assert set(env) <= declared
    assert all("valueFrom" in e for name, e in env.items() if name != "RUNS_SSH_CA_KEY")
    assert env["RUNS_SSH_CA_KEY"] == {"name": "RUNS_SSH_CA_KEY", "value": USER_CA_PATH}


def test_the_runs_pod_gets_compose_s_settings_optional_where_they_have_a_default():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in manifest("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
        if "valueFrom" in e
    }
    fixed = {"RUNS_SSH_CA_KEY"}  # both fix it to their own mount of the CA key
    # compose's CA store with the demo authority (secrets/tls/trust/); Kubernetes runs no demo
    # provider, and the image's store is the pod's.
    fixed |= {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}
    assert set(env) | fixed == set(compose["services"]["runs"]["environment"])
    assert compose["services"]["runs"]["environment"]["RUNS_SSH_CA_KEY"] == USER_CA_PATH
    assert {"RUNS_INVENTORY", NONPRODUCTION_SETTING} <= set(env)
    defaults = {s.name: s.default for s in runs_settings.SETTINGS}
    # RUNS_DATABASE_URL: required here (its default, SQLite on the pod's disk, would not last).
    required_on_kubernetes = {"RUNS_DATABASE_URL"}
    for name, ref in env.items():
        optional = defaults[name] is not None and name not in required_on_kubernetes
        assert ref.get("optional", False) is optional, name


def test_the_runs_service_reaches_the_hub_at_its_default_url():
    """Its JUPYTERHUB_API_URL is left at the default, http://hub:8081/hub/api: the chart's hub
    Service is `hub` as long as fullnameOverride stays "" (the chart's default, kept)."""
    assert "fullnameOverride" not in our_values()
    default = next(s for s in runs_settings.SETTINGS if s.name == "JUPYTERHUB_API_URL").default
    assert default == "http://hub:8081/hub/api"
    labels = manifest("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["hub.jupyter.org/network-access-hub"] == "true"


def test_the_runs_pod_is_not_root_and_has_no_privileges_or_api_token():
    spec = manifest("Deployment")["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["initContainers"], "the library copy runs as the pod's user too"
    for container in [*spec["initContainers"], *spec["containers"]]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["readOnlyRootFilesystem"] is True


def test_manifests_are_plain_yaml_without_templating():
    for path in MANIFESTS.glob("*"):
        assert path.suffix == ".yaml", path
        assert "{{" not in path.read_text(), path
        yaml.safe_load_all(path.read_text())


USER_CA_PATH = "/run/secrets/opsbook-user-ca"
USER_CA_SECRET = "opsbook-ssh-user-ca"


def secret_volumes(pod_spec: dict) -> dict[str, str]:
    """Volume name -> Secret name, of the pod's Secret volumes."""
    return {
        v["name"]: v["secret"]["secretName"] for v in pod_spec.get("volumes", []) if "secret" in v
    }


def test_the_user_ca_key_is_mounted_into_the_runs_pod_only_readable_by_its_user():
    spec = manifest("Deployment")["spec"]["template"]["spec"]
    volumes = secret_volumes(spec)
    [name] = [n for n, secret in volumes.items() if secret == USER_CA_SECRET]
    volume = next(v for v in spec["volumes"] if v["name"] == name)
    assert volume["secret"]["items"] == [{"key": "user_ca", "path": "opsbook-user-ca"}]
    # Kubernetes makes Secret files root-owned with the pod's fsGroup: 0440 and fsGroup = the
    # service's group lets it (and no other user) read the key.
    assert volume["secret"]["defaultMode"] == 0o440
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"] == 990
    [runs] = spec["containers"]
    mounts = [m for m in runs["volumeMounts"] if m["name"] == name]
    assert mounts == [
        {"name": name, "mountPath": USER_CA_PATH, "subPath": "opsbook-user-ca", "readOnly": True}
    ]
    assert not [m for c in spec["initContainers"] for m in c["volumeMounts"] if m["name"] == name]
    default = next(s.default for s in runs_settings.SETTINGS if s.name == "RUNS_SSH_CA_KEY")
    assert default == USER_CA_PATH


@pytest.mark.parametrize("groups", [("ops",), ("oncall",), ("admins", "ops", "oncall")])
def test_no_engineers_pod_mounts_an_ssh_key_and_the_chart_s_values_name_no_ssh_secret(hub, groups):
    """The CA Secret is the runs pod's alone: no engineer's pod has a Secret volume at all (their
    key is made in memory, /run/opsbook), and our chart values name no SSH Secret."""
    pod = user_pod(hub.config, user_named("someone", *groups))
    assert secret_volumes(pod["spec"]) == {}
    text = (HELM / "values.yaml").read_text()
    assert USER_CA_SECRET not in text.replace(f"`{USER_CA_SECRET}`", "")
    assert "opsbook-fleet-ssh" not in text
    runtime = next(v for v in pod["spec"]["volumes"] if v["name"] == "opsbook-runtime")
    assert runtime["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
