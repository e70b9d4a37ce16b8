"""What the helm/ tests share: our values, the chart's defaults and schema, Helm's merge, a model
of the chart's hub configuration, the engineers' pods KubeSpawner would create, and the chart's
singleuser NetworkPolicy with a small evaluator of its egress rules.

The chart's own files (values.yaml, values.schema.yaml) are read from ../shared/z2jh beside the
project, never copied into it: that folder is steering data, present where the project is
developed and in CI, absent from a user's checkout. Tests that need it skip with the reason
where it is absent (in CI too: the folder, not CI, decides; a user's CI has no ../shared).

The chart's hub configuration (its files/hub/jupyterhub_config.py) and its NetworkPolicy templates
are not in ../shared/z2jh: the functions below *model* them, as of chart 4.4.0, for the values
this deployment uses (and fail on values they do not model). They are what this machine can
check without helm; `helm template` (helm/README.md) renders the real thing.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import os
import re
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import yaml
from traitlets.config import Config, Configurable
from traitlets.utils.importstring import import_item

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "helm"
VALUES_FILE = HELM / "values.yaml"
MANIFESTS = HELM / "manifests"
Z2JH = ROOT.parent / "shared" / "z2jh"

# The chart release this deployment is written for: `helm upgrade --version`, the hub image's FROM.
CHART_VERSION = "4.4.0"
RELEASE = "opsbook"
NAMESPACE = "opsbook"
# Kubernetes versions our manifests and pods are validated against (kubernetes-validate's
# bundled schemas): the chart 4.4.0's oldest supported minor we test, and a current one.
KUBERNETES_VERSIONS = ("1.30", "1.35")


# --- files -------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def our_values() -> dict:
    return load_yaml(VALUES_FILE)


def z2jh_file(name: str) -> Path:
    """A file of ../shared/z2jh, or a skip saying why it is absent."""
    path = Z2JH / name
    if not path.is_file():
        pytest.skip(
            f"{path} is absent: the Zero to JupyterHub chart's values and schema are steering "
            "data beside the project (../shared/z2jh), not part of it; a user's checkout has "
            "none. `helm lint`/`helm template` with the chart check the same (helm/README.md)."
        )
    return path


def chart_defaults() -> dict:
    return load_yaml(z2jh_file("values.yaml"))


def chart_schema() -> dict:
    return load_yaml(z2jh_file("values.schema.yaml"))


# --- Helm's merge of a values file over the chart's defaults ------------------------------------


def helm_merge(defaults: Any, overrides: Any) -> Any:
    """What `helm install --values` makes of the chart's defaults and our file (Helm's
    chartutil.CoalesceTables): mappings merge key by key, lists and scalars replace, a null in
    our file deletes the chart's key. Neither argument is changed."""
    if not isinstance(overrides, dict) or not isinstance(defaults, dict):
        return copy.deepcopy(overrides)
    merged = copy.deepcopy(overrides)
    for key, default in defaults.items():
        if key not in overrides:
            merged[key] = copy.deepcopy(default)
        elif overrides[key] is None:
            del merged[key]
        elif isinstance(overrides[key], dict) and isinstance(default, dict):
            merged[key] = helm_merge(default, overrides[key])
    return merged


def merged_values(values: dict | None = None) -> dict:
    return helm_merge(chart_defaults(), our_values() if values is None else values)


# --- the hub's environment, from hub.extraEnv and a Secret -------------------------------------


def resolve_env(extra_env: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]]) -> dict:
    """The environment Kubernetes gives the hub container from hub.extraEnv (the chart's map
    form) and the given Secrets' data. A required key missing is an error, as for the kubelet
    (CreateContainerConfigError); a missing optional key leaves the variable out."""
    environ = {}
    for name, spec in extra_env.items():
        if isinstance(spec, str):
            environ[name] = spec
            continue
        ref = spec["valueFrom"]["secretKeyRef"]
        data = secrets.get(ref["name"], {})
        if ref["key"] in data:
            environ[name] = data[ref["key"]]
        elif not ref.get("optional", False):
            raise KeyError(f"{name}: key {ref['key']} missing from Secret {ref['name']}")
    return environ


# --- a model of the chart's hub configuration ---------------------------------------------------


class ChartValues:
    """z2jh.get_config over the values the chart writes into its hub Secret."""

    def __init__(self, values: dict):
        self.values = copy.deepcopy(values)
        self.values["Chart"] = {"Name": "jupyterhub", "Version": CHART_VERSION}
        self.values["Release"] = {"Name": RELEASE, "Namespace": NAMESPACE}

    def get(self, key: str, default: Any = None) -> Any:
        value: Any = self.values
        for level in key.split("."):
            if not isinstance(value, dict) or level not in value:
                return default
            value = value[level]
        return copy.deepcopy(value)


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


# Secrets the chart generates and keeps (its hub Secret); any valid value will do here.
CHART_SECRET = {
    "hub.config.JupyterHub.cookie_secret": "0f" * 32,
    "hub.config.CryptKeeper.keys": "1e" * 32,
    "hub.config.ConfigurableHTTPProxy.auth_token": "2d" * 32,
}

_HUB_TRAITS = (
    "concurrent_spawn_limit",
    "active_server_limit",
    "base_url",
    "allow_named_servers",
    "named_server_limit_per_user",
    "authenticate_prometheus",
    "redirect_to_server",
    "shutdown_on_logout",
    "template_paths",
    "template_vars",
)
_SPAWNER_TRAITS = {
    "pod_name_template": None,
    "start_timeout": None,
    "image_pull_policy": "image.pullPolicy",
    "events_enabled": "events",
    "extra_labels": None,
    "extra_annotations": None,
    "uid": None,
    "fs_gid": None,
    "service_account": "serviceAccountName",
    "storage_extra_labels": "storage.extraLabels",
    "node_selector": None,
    "node_affinity_required": "extraNodeAffinity.required",
    "node_affinity_preferred": "extraNodeAffinity.preferred",
    "pod_affinity_required": "extraPodAffinity.required",
    "pod_affinity_preferred": "extraPodAffinity.preferred",
    "pod_anti_affinity_required": "extraPodAntiAffinity.required",
    "pod_anti_affinity_preferred": "extraPodAntiAffinity.preferred",
    "lifecycle_hooks": None,
    "init_containers": None,
    "extra_containers": None,
    "mem_limit": "memory.limit",
    "mem_guarantee": "memory.guarantee",
    "cpu_limit": "cpu.limit",
    "cpu_guarantee": "cpu.guarantee",
    "extra_resource_limits": "extraResource.limits",
    "extra_resource_guarantees": "extraResource.guarantees",
    "environment": "extraEnv",
    "profile_list": None,
    "extra_pod_config": None,
}


def chart_cull_command(get) -> tuple[list[str], list[str]]:
    """The chart's idle culler: its command line and its role's scopes."""
    scopes = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
    command = ["python3", "-m", "jupyterhub_idle_culler", "--url=http://localhost:8081/hub/api"]
    for flag, key in (("timeout", "cull.timeout"), ("cull-every", "cull.every")):
        if get(key):
            command.append(f"--{flag}={get(key)}")
    if get("cull.concurrency"):
        command.append(f"--concurrency={get('cull.concurrency')}")
    if get("cull.users"):
        command.append("--cull-users")
        scopes.append("admin:users")
    if not get("cull.adminUsers"):
        command.append("--cull-admin-users=false")
    if get("cull.removeNamedServers"):
        command.append("--remove-named-servers")
    if get("cull.maxAge"):
        command.append(f"--max-age={get('cull.maxAge')}")
    return command, scopes


def chart_hub_config(
    values: dict, environ: Mapping[str, str], *, extra_config: bool = True
) -> tuple[Config, dict]:
    """The hub's traitlets config as the chart's jupyterhub_config.py builds it from merged
    values (chart 4.4.0), then hub.extraConfig executed as the chart does, with `environ` as the
    hub container's environment. Returns the config and extraConfig's namespace."""
    chart = ChartValues(values)
    get = chart.get
    c = Config()
    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    c.ConfigurableHTTPProxy.api_url = "http://proxy-api:8001"
    c.ConfigurableHTTPProxy.should_start = False
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.last_activity_interval = 60
    c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
    db_type = get("hub.db.type")
    if db_type != "sqlite-pvc":
        raise NotImplementedError(f"the model knows hub.db.type sqlite-pvc, not {db_type}")
    c.JupyterHub.db_url = "sqlite:///jupyterhub.sqlite"
    for trait in _HUB_TRAITS:
        if get(f"hub.{_camel(trait)}") is not None:
            setattr(c.JupyterHub, trait, get(f"hub.{_camel(trait)}"))
    c.JupyterHub.hub_bind_url = "http://:8081"
    c.JupyterHub.hub_connect_url = "http://hub:8081"
    labels = {"app.kubernetes.io/name": "jupyterhub", "app": "jupyterhub"}
    labels.update({"app.kubernetes.io/instance": RELEASE, "release": RELEASE})
    labels["helm.sh/chart"] = labels["chart"] = f"jupyterhub-{CHART_VERSION}"
    labels["app.kubernetes.io/managed-by"] = "kubespawner"
    c.KubeSpawner.common_labels = labels
    c.KubeSpawner.namespace = NAMESPACE
    if get("hub.consecutiveFailureLimit") is not None:
        c.Spawner.consecutive_failure_limit = get("hub.consecutiveFailureLimit")
    for trait, key in _SPAWNER_TRAITS.items():
        value = get(f"singleuser.{key or _camel(trait)}")
        if value is not None:
            setattr(c.KubeSpawner, trait, value)
    if get("singleuser.image.name"):
        tag = get("singleuser.image.tag")
        c.KubeSpawner.image = get("singleuser.image.name") + (f":{tag}" if tag else "")
    c.KubeSpawner.allow_privilege_escalation = get("singleuser.allowPrivilegeEscalation")
    pull_secrets = [*(get("imagePullSecrets") or []), *(get("singleuser.image.pullSecrets") or [])]
    if get("imagePullSecret.create"):
        raise NotImplementedError("the model does not know imagePullSecret.create")
    if pull_secrets:
        c.KubeSpawner.image_pull_secrets = pull_secrets
    if get("scheduling.userScheduler.enabled"):
        c.KubeSpawner.scheduler_name = "user-scheduler"
    if get("scheduling.podPriority.enabled"):
        c.KubeSpawner.priority_class_name = "priority"
    purpose = get("scheduling.userPods.nodeAffinity.matchNodePurpose")
    selector = {
        "matchExpressions": [
            {"key": "hub.jupyter.org/node-purpose", "operator": "In", "values": ["user"]}
        ]
    }
    if purpose == "prefer":
        c.KubeSpawner.node_affinity_preferred.append({"weight": 100, "preference": selector})
    elif purpose == "require":
        c.KubeSpawner.node_affinity_required.append(selector)
    tolerations = [
        *(get("scheduling.userPods.tolerations") or []),
        *(get("singleuser.extraTolerations") or []),
    ]
    if tolerations:
        c.KubeSpawner.tolerations = tolerations
    if get("singleuser.storage.type") != "dynamic":
        raise NotImplementedError("the model knows singleuser.storage.type dynamic only")
    if get("singleuser.storage.dynamic.pvcNameTemplate"):
        c.KubeSpawner.pvc_name_template = get("singleuser.storage.dynamic.pvcNameTemplate")
    name = get("singleuser.storage.dynamic.volumeNameTemplate")
    c.KubeSpawner.storage_pvc_ensure = True
    for trait, key in (
        ("storage_class", "dynamic.storageClass"),
        ("storage_access_modes", "dynamic.storageAccessModes"),
        ("storage_capacity", "capacity"),
    ):
        if get(f"singleuser.storage.{key}") is not None:
            setattr(c.KubeSpawner, trait, get(f"singleuser.storage.{key}"))
    volumes = {name: {"name": name, "persistentVolumeClaim": {"claimName": "{pvc_name}"}}}
    mounts = {
        name: {
            "mountPath": get("singleuser.storage.homeMountPath"),
            "name": name,
            "subPath": get("singleuser.storage.dynamic.subPath"),
        }
    }
    if get("singleuser.extraFiles"):
        raise NotImplementedError("the model does not know singleuser.extraFiles")
    extra_volumes = get("singleuser.storage.extraVolumes") or {}
    extra_mounts = get("singleuser.storage.extraVolumeMounts") or {}
    if isinstance(extra_volumes, dict):
        volumes.update(extra_volumes)
    else:
        volumes.update({volume["name"]: volume for volume in extra_volumes})
    if isinstance(extra_mounts, dict):
        mounts.update(extra_mounts)
    else:
        mounts.update({f"{i}-{m['name']}": m for i, m in enumerate(extra_mounts)})
    c.KubeSpawner.volumes = volumes
    c.KubeSpawner.volume_mounts = mounts
    c.JupyterHub.services = []
    c.JupyterHub.load_roles = []
    if get("cull.enabled", False):
        command, scopes = chart_cull_command(get)
        c.JupyterHub.services.append({"name": "jupyterhub-idle-culler", "command": command})
        c.JupyterHub.load_roles.append(
            {
                "name": "jupyterhub-idle-culler",
                "scopes": scopes,
                "services": ["jupyterhub-idle-culler"],
            }
        )
    if get("hub.services") or get("hub.loadRoles"):
        raise NotImplementedError("the model does not know hub.services or hub.loadRoles")
    cmd = get("singleuser.cmd", "unspecified")
    if cmd != "unspecified":
        c.Spawner.cmd = cmd
    if get("singleuser.defaultUrl") is not None:
        c.Spawner.default_url = get("singleuser.defaultUrl")
    if get("singleuser.cloudMetadata.blockWithIptables"):
        c.KubeSpawner.init_containers.append(
            {
                "name": "block-cloud-metadata",
                "image": "quay.io/jupyterhub/k8s-network-tools:" + CHART_VERSION,
                "command": ["iptables", "--append", "OUTPUT", "--protocol", "tcp"],
                "securityContext": {
                    "privileged": True,
                    "runAsUser": 0,
                    "capabilities": {"add": ["NET_ADMIN"]},
                },
            }
        )
    if get("debug.enabled", False):
        c.JupyterHub.log_level = "DEBUG"
        c.Spawner.debug = True
    c.JupyterHub.cookie_secret = CHART_SECRET["hub.config.JupyterHub.cookie_secret"]
    c.CryptKeeper.keys = CHART_SECRET["hub.config.CryptKeeper.keys"].split(";")
    for section, cfg in (get("hub.config") or {}).items():
        if section == "JupyterHub":
            for secret in ("proxy_auth_token", "cookie_secret", "services"):
                cfg.pop(secret, None)
        elif section == "ConfigurableHTTPProxy":
            cfg.pop("auth_token", None)
        elif section == "CryptKeeper":
            cfg.pop("keys", None)
        if not section[:1].isupper():
            raise ValueError(f"hub.config.{section}: not a Configurable class name")
        c[section].update(cfg)
    namespace: dict = {}
    if extra_config:
        for key, code in sorted((get("hub.extraConfig") or {}).items()):
            namespace.update(run_extra_config(c, code, chart, environ, f"hub.extraConfig.{key}"))
    return c, namespace


def run_extra_config(
    c: Config, code: str, chart: ChartValues, environ: Mapping[str, str], filename: str
) -> dict:
    """Execute one hub.extraConfig entry as the chart does (exec in its jupyterhub_config.py,
    where `c` is the config and z2jh is importable), with `environ` as the only environment."""
    z2jh = types.ModuleType("z2jh")
    z2jh.get_config = chart.get
    namespace = {"c": c, "__name__": "jupyterhub_config"}
    with (
        mock.patch.dict(sys.modules, {"z2jh": z2jh}),
        mock.patch.dict(os.environ, dict(environ), clear=True),
    ):
        exec(compile(code, filename, "exec"), namespace)
    return namespace


# --- every option name must exist on the classes this hub uses ---------------------------------


def classes_in_use(c: Config) -> dict[str, type]:
    """The Configurable classes whose config sections take effect: the application, the
    spawner, authenticator and proxy classes it is configured with (and their bases), and
    CryptKeeper."""
    from jupyterhub.app import JupyterHub
    from jupyterhub.crypto import CryptKeeper

    roots: list[type] = [JupyterHub, CryptKeeper]
    for trait in ("spawner_class", "authenticator_class", "proxy_class"):
        configured = c.JupyterHub.get(trait)
        if isinstance(configured, str):
            roots.append(import_item(configured))
        elif isinstance(configured, type):
            roots.append(configured)
    if "proxy_class" not in c.JupyterHub:
        from jupyterhub.proxy import ConfigurableHTTPProxy

        roots.append(ConfigurableHTTPProxy)
    classes: dict[str, type] = {}
    for root in roots:
        for cls in root.mro():
            if isinstance(cls, type) and issubclass(cls, Configurable):
                classes.setdefault(cls.__name__, cls)
    return classes


def unknown_options(c: Config) -> list[str]:
    """Each section that names no class in use, each option that is no configurable trait of
    its class: a typo, or an option of another spawner or authenticator."""
    classes = classes_in_use(c)
    problems = []
    for section, options in c.items():
        if not options:
            continue
        cls = classes.get(section)
        if cls is None:
            problems.append(f"{section}: not a class this hub uses ({', '.join(sorted(classes))})")
            continue
        traits = cls.class_traits(config=True)
        problems += [f"{section}.{name}: no such option" for name in options if name not in traits]
    return problems


# --- the engineers' pods, as KubeSpawner builds them --------------------------------------------


def user_named(name: str, *groups: str) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        id=abs(hash(name)) % 1000,
        url=f"/user/{name}/",
        groups=[SimpleNamespace(name=g) for g in groups],
    )


async def _pod(c: Config, user: SimpleNamespace) -> dict:
    import kubespawner.spawner
    from kubernetes_asyncio.client import ApiClient

    # No cluster: KubeSpawner's API client is never made, nor used to build a manifest.
    with (
        mock.patch.object(kubespawner.spawner, "load_config", lambda **kwargs: None),
        mock.patch.object(kubespawner.spawner, "shared_client", lambda name: None),
    ):
        spawner = kubespawner.spawner.KubeSpawner(_mock=True, config=c, user=user)
    spawner.api_token = "token-of-" + user.name
    hook = spawner.pre_spawn_hook
    if hook is not None:
        hook(spawner)
    pod = await spawner.get_pod_manifest()
    async with ApiClient() as api:
        return api.sanitize_for_serialization(pod)


def user_pod(c: Config, user: SimpleNamespace) -> dict:
    """The Pod KubeSpawner would create for `user` (after the pre-spawn hook), as JSON data."""
    return asyncio.run(_pod(c, user))


# --- the chart's NetworkPolicy of engineers' pods, and what its egress rules allow -------------

PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def _chart_labels(component: str) -> dict:
    return {"component": component, "app": "jupyterhub", "release": RELEASE}


def singleuser_network_policy(values: dict) -> dict:
    """The NetworkPolicy the chart renders for engineers' pods (templates/singleuser/netpol.yaml
    and the egress rules of _helpers-netpol.tpl, chart 4.4.0), from merged values."""
    netpol = values["singleuser"]["networkPolicy"]
    allow = netpol["egressAllowRules"]
    metadata_ip = values["singleuser"]["cloudMetadata"]["ip"] + "/32"
    if netpol.get("interNamespaceAccessLabels") != "ignore":
        raise NotImplementedError("the model knows interNamespaceAccessLabels: ignore only")
    ingress = []
    if netpol.get("allowedIngressPorts"):
        ingress.append({"ports": [{"port": p} for p in netpol["allowedIngressPorts"]]})
    ingress.append(
        {
            "ports": [{"port": "notebook-port"}],
            "from": [
                {
                    "podSelector": {
                        "matchLabels": {"hub.jupyter.org/network-access-singleuser": "true"}
                    }
                }
            ],
        }
    )
    ingress += netpol.get("ingress") or []
    egress = [
        {"to": [{"podSelector": {"matchLabels": _chart_labels("hub")}}], "ports": [{"port": 8081}]},
        {
            "to": [{"podSelector": {"matchLabels": _chart_labels("proxy")}}],
            "ports": [{"port": 8000}],
        },
        {
            "to": [{"podSelector": {"matchLabels": _chart_labels("autohttps")}}],
            "ports": [{"port": 8080}, {"port": 8443}],
        },
    ]
    dns_to = []
    if allow["dnsPortsCloudMetadataServer"]:
        dns_to.append({"ipBlock": {"cidr": metadata_ip}})
    if allow["dnsPortsKubeSystemNamespace"]:
        dns_to.append(
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
        )
    if allow["dnsPortsPrivateIPs"]:
        dns_to += [{"ipBlock": {"cidr": cidr}} for cidr in PRIVATE]
    if dns_to:
        dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        egress.append({"ports": dns_ports, "to": dns_to})
    if allow["nonPrivateIPs"]:
        except_ = [*PRIVATE, metadata_ip]
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": except_}}]})
    if allow["privateIPs"]:
        egress.append({"to": [{"ipBlock": {"cidr": cidr}} for cidr in PRIVATE]})
    if allow["cloudMetadataServer"]:
        egress.append({"to": [{"ipBlock": {"cidr": metadata_ip}}]})
    egress += netpol.get("egress") or []
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "singleuser", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": _chart_labels("singleuser-server")},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


@dataclass(frozen=True)
class Destination:
    """Where a connection goes: an address outside any pod network policy selects (a node, the
    API server's endpoint, a host outside the cluster) or a pod (namespace and labels)."""

    port: int
    ip: str | None = None
    namespace: str | None = None  # a pod's namespace; None: not a pod
    labels: Mapping[str, str] = field(default_factory=dict)
    protocol: str = "TCP"
    port_name: str | None = None


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if set(selector) - {"matchLabels"}:
        raise NotImplementedError(f"the evaluator knows matchLabels only: {selector}")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_allows(peer: Mapping[str, Any], dest: Destination) -> bool:
    if "ipBlock" in peer:
        if dest.ip is None:
            return False
        address = ipaddress.ip_address(dest.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if dest.namespace is None:
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": dest.namespace}
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif dest.namespace != NAMESPACE:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], dest.labels)


def _port_allows(port: Mapping[str, Any], dest: Destination) -> bool:
    if port.get("protocol", "TCP") != dest.protocol:
        return False
    if "port" not in port:
        return True
    if isinstance(port["port"], str):
        return port["port"] == dest.port_name
    return port["port"] <= dest.port <= port.get("endPort", port["port"])


def egress_allows(policy: dict, dest: Destination) -> bool:
    """Whether the policy's egress rules let its pods connect to `dest` (NetworkPolicy's
    semantics: any rule whose ports and peers both match; no `ports` or no `to` means all)."""
    for rule in policy["spec"].get("egress") or []:
        ports = rule.get("ports")
        peers = rule.get("to")
        if ports and not any(_port_allows(p, dest) for p in ports):
            continue
        if peers and not any(_peer_allows(p, dest) for p in peers):
            continue
        return True
    return False


# Where the Kubernetes API may answer, as far as a pod sees it: the `kubernetes` Service's
# endpoints are the control plane's addresses, private (kubeadm, private clusters) or public
# (many managed clusters), on 443 or 6443; kubeadm also runs it as a host-network pod.
_API_ADDRESSES = (
    "10.0.0.1",
    "10.96.0.1",
    "172.16.0.2",
    "172.20.0.10",
    "192.168.1.10",
    "100.64.0.1",
    "34.118.224.1",
    "20.62.0.5",
    "52.94.0.9",
    "203.0.113.7",
)
API_SERVER_ENDPOINTS: tuple[Destination, ...] = (
    *(Destination(port=port, ip=ip) for ip in _API_ADDRESSES for port in (443, 6443)),
    Destination(
        port=6443,
        namespace="kube-system",
        labels={"component": "kube-apiserver", "tier": "control-plane"},
    ),
)


def ip_blocks(rules: Iterable[Mapping[str, Any]]) -> list[str]:
    return [
        peer["ipBlock"]["cidr"]
        for rule in rules
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]


# --- the two hubs, from the same settings -------------------------------------------------------


def secret_refs(extra_env: Mapping[str, Any]) -> dict[str, dict]:
    """hub.extraEnv's secretKeyRefs, by variable name."""
    return {
        name: spec["valueFrom"]["secretKeyRef"]
        for name, spec in extra_env.items()
        if isinstance(spec, dict)
    }


def hub_secret(values: dict, environ: Mapping[str, str]) -> dict[str, str]:
    """The Secret opsbook-hub holding `environ`'s values for the keys hub.extraEnv reads."""
    keys = {ref["key"] for ref in secret_refs(values["hub"]["extraEnv"]).values()}
    return {key: value for key, value in environ.items() if key in keys}


def k8s_hub(values: dict | None = None, environ: Mapping[str, str] | None = None):
    """The Kubernetes hub's config from merged values, its Secret holding `environ`'s settings
    (by default the hub tests' valid settings, as compose's hub gets them)."""
    from .hub.valid_env import VALID_ENV

    values = merged_values() if values is None else values
    secret = hub_secret(values, VALID_ENV if environ is None else environ)
    env = resolve_env(values["hub"]["extraEnv"], {"opsbook-hub": secret})
    config, namespace = chart_hub_config(values, env)
    return SimpleNamespace(values=values, environ=env, config=config, namespace=namespace)


def compose_hub(environ: Mapping[str, str] | None = None) -> Config:
    """compose's hub config (hub/jupyterhub_config.py) from the same settings."""
    from opsbook_hub import configure, settings

    from .hub.valid_env import VALID_ENV

    c = Config()
    configure.apply(c, settings.load(VALID_ENV if environ is None else environ))
    return c
