"""Every option the Kubernetes hub is given exists on the real classes it runs, with a value of the
type they take: hub.config (pass-through), and what hub.extraConfig sets, executed as the chart
executes it against the chart's config (modelled in helm_support: chart 4.4.0's
jupyterhub_config.py). The classes are the real ones: JupyterHub 5.5.4, KubeSpawner 7.0.0 (the
chart's), OpsbookAuthenticator (GenericOAuthenticator 17.4.0), ConfigurableHTTPProxy,
CryptKeeper. A typo fails here instead of being a warning in the hub's log.

Needs ../shared/z2jh (the chart's defaults); skips with the reason where it is absent.
"""

import copy
import os
import re
from pathlib import Path
from unittest import mock

import pytest
from jupyterhub.app import JupyterHub
from jupyterhub.proxy import ConfigurableHTTPProxy
from oauthenticator.generic import GenericOAuthenticator
from opsbook_hub import settings
from opsbook_hub.authenticator import OpsbookAuthenticator

from .helm_support import (
    HELM,
    chart_hub_config,
    hub_secret,
    k8s_hub,
    merged_values,
    resolve_env,
    secret_refs,
    unknown_options,
)
from .hub.valid_env import VALID_ENV


@pytest.fixture(scope="module")
def hub():
    return k8s_hub()


def test_every_option_set_exists_on_the_classes_in_use(hub):
    assert unknown_options(hub.config) == []
    # What extraConfig set is in there, not only the chart's own options.
    assert hub.config.OpsbookAuthenticator.client_id == VALID_ENV["OAUTH_CLIENT_ID"]
    assert hub.config.KubeSpawner.server_token_scopes
    auth = hub.config.JupyterHub.authenticator_class
    assert auth == "opsbook_hub.authenticator.OpsbookAuthenticator"
    assert issubclass(OpsbookAuthenticator, GenericOAuthenticator)


def with_extra_config(values: dict, edit) -> dict:
    values = copy.deepcopy(values)
    values["hub"]["extraConfig"]["opsbook"] = edit(values["hub"]["extraConfig"]["opsbook"])
    return values


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        (("config", "KubeSpawner", "mem_limt"), "KubeSpawner.mem_limt: no such option"),
        (("config", "DockerSpawner", "image"), "DockerSpawner: not a class this hub uses"),
        (("config", "JupyterHub", "admin_acess"), "JupyterHub.admin_acess: no such option"),
        (("extraConfig", "c.JupyterHub.template_paths", "c.JupyterHub.template_path"), None),
        (("extraConfig", "c.JupyterHub.custom_scopes", "c.JupyterHub.custom_scope"), None),
        (("extraConfig", "c.KubeSpawner.environment", "c.DockerSpawner.environment"), None),
    ],
)
def test_a_misspelled_or_misplaced_option_is_caught(hub, change, reported):
    values = copy.deepcopy(hub.values)
    if change[0] == "config":
        values["hub"]["config"].setdefault(change[1], {})[change[2]] = "x"
    else:
        assert change[1] in values["hub"]["extraConfig"]["opsbook"]
        values = with_extra_config(values, lambda code: code.replace(change[1], change[2]))
    config, _ = chart_hub_config(values, hub.environ)
    problems = unknown_options(config)
    assert problems, change
    if reported:
        assert any(problem.startswith(reported) for problem in problems), problems


def test_option_values_have_the_types_the_classes_take(hub):
    """traitlets checks each configured value when a class is made with the config."""
    JupyterHub(config=hub.config)
    OpsbookAuthenticator(config=hub.config)
    # The chart gives the proxy's token through this variable, from its own Secret.
    with mock.patch.dict(os.environ, {"CONFIGPROXY_AUTH_TOKEN": "2d" * 32}):
        ConfigurableHTTPProxy(config=hub.config)
    broken = copy.deepcopy(hub.values)
    broken["hub"]["config"]["KubeSpawner"]["delete_pvc"] = "no"
    config, _ = chart_hub_config(broken, hub.environ)
    from traitlets import TraitError

    from .helm_support import user_named, user_pod

    with pytest.raises(TraitError, match="delete_pvc"):
        user_pod(config, user_named("alice", "ops"))


def test_extra_config_reads_exactly_the_settings_hub_extra_env_gives_it(hub):
    read = set(hub.namespace["OPSBOOK_SETTINGS"])
    assert read == set(hub.values["hub"]["extraEnv"])
    refs = secret_refs(hub.values["hub"]["extraEnv"])
    declared = {s.name: s for s in settings.SETTINGS}
    for name, ref in refs.items():
        assert ref["key"] == name, "the Secret's keys are the settings' names, as in .env"
        assert ref["name"] == "opsbook-hub"
        # Optional in the Secret exactly when the setting has a default.
        assert ref.get("optional", False) is (declared[name].default is not None), name


# The hub settings not read on Kubernetes, and who has them there instead.
NOT_READ_ON_KUBERNETES = {
    "HUB_COOKIE_SECRET": "the chart (generated, kept in its Secret)",
    "JUPYTERHUB_CRYPT_KEY": "the chart (hub.config.CryptKeeper.keys, generated)",
    "CONFIGPROXY_AUTH_TOKEN": "the chart (proxy.secretToken, generated)",
    "PROXY_API_URL": "the chart (its Service proxy-api)",
    "HUB_CONNECT_URL": "the chart (its Service hub)",
    "SINGLEUSER_IMAGE": "singleuser.image",
    "MEM_LIMIT": "singleuser.memory",
    "CPU_LIMIT": "singleuser.cpu",
    "PIDS_LIMIT": "no KubeSpawner setting: the kubelet's podPidsLimit",
    "CULL_IDLE_TIMEOUT": "cull.timeout",
    "CULL_EVERY": "cull.every",
    "ENGINEER_NETWORK_EGRESS": "Docker only (singleuser.networkPolicy on Kubernetes)",
    "ENGINEER_NETWORK_POOL": "Docker only (pods take the cluster's pod network)",
    "CONTAINER_PREFIX": "Docker only",
    "RUNBOOKS_HOST_PATH": "singleuser.initContainers (the library image)",
    "ANSIBLE_HOST_PATH": "singleuser.initContainers (the library image)",
}


def test_every_hub_setting_is_read_from_the_secret_or_has_a_place_in_the_chart(hub):
    """A new setting in hub/opsbook_hub/settings.py fails here until it has a place on
    Kubernetes too."""
    read = set(hub.namespace["OPSBOOK_SETTINGS"])
    assert read | set(NOT_READ_ON_KUBERNETES) == {s.name for s in settings.SETTINGS}
    assert read & set(NOT_READ_ON_KUBERNETES) == set()


def test_a_required_key_missing_from_the_secret_keeps_the_hub_from_starting(hub):
    secret = hub_secret(hub.values, VALID_ENV)
    del secret["OAUTH_CLIENT_SECRET"]
    with pytest.raises(KeyError, match="OAUTH_CLIENT_SECRET"):
        resolve_env(hub.values["hub"]["extraEnv"], {"opsbook-hub": secret})


def test_a_wrong_setting_stops_the_hub_with_a_line_naming_it(hub, capsys):
    values = merged_values()
    env = {**hub.environ, "OAUTH_TOKEN_URL": "idp/token", "GROUPS_ADMIN": " "}
    with pytest.raises(SystemExit):
        chart_hub_config(values, env)
    err = capsys.readouterr().err
    assert "opsbook hub: OAUTH_TOKEN_URL: expected an http(s) URL" in err
    assert "opsbook hub: GROUPS_ADMIN:" in err


def test_optional_settings_left_out_of_the_secret_take_their_defaults(hub):
    assert "OAUTH_SCOPES" not in hub.environ
    assert hub.config.OpsbookAuthenticator.scope == ["openid", "profile", "email", "groups"]
    assert hub.config.OpsbookAuthenticator.auth_refresh_age == 300


def env_file_keys(path: Path) -> list[str]:
    return [
        line.split("=", 1)[0]
        for line in path.read_text().splitlines()
        if re.match(r"^[A-Z_]+=", line)
    ]


def test_the_secrets_example_files_list_exactly_the_keys_read(hub):
    hub_keys = env_file_keys(HELM / "opsbook-hub.env.example")
    refs = secret_refs(hub.values["hub"]["extraEnv"])
    assert sorted(hub_keys) == sorted(ref["key"] for ref in refs.values())
    import yaml

    manifests = list(yaml.safe_load_all((HELM / "manifests" / "runs.yaml").read_text()))
    deployment = next(doc for doc in manifests if doc["kind"] == "Deployment")
    runs_env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    runs_keys = [
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in runs_env
        if "valueFrom" in e and e["valueFrom"]["secretKeyRef"]["name"] == "opsbook-runs"
    ]
    assert sorted(env_file_keys(HELM / "opsbook-runs.env.example")) == sorted(runs_keys)
