"""The single-machine deployment and the Kubernetes one agree, feature for feature.

Both hubs are built here from the same settings: compose's by hub/jupyterhub_config.py's
configure.apply, Kubernetes' by the chart's configuration (modelled, chart 4.4.0) with our values
and hub.extraConfig, which applies the same functions. Where the two come from one description
(sign-in, groups, roles, scopes, services, what a server gets) this proves the chart keeps it;
where they cannot (limits, culling, images, the library, privileges: chart values vs Docker
settings) it compares them. Needs ../shared/z2jh; skips with the reason where it is absent.
"""

import re
from types import SimpleNamespace

import pytest
import yaml
from jupyterhub.traitlets import ByteSpecification
from jupyterhub_idle_culler import IdleCuller
from opsbook_hub import configure, settings
from tornado import web
from traitlets import HasTraits

from opsbook.service import settings as runs_settings

from .helm_support import (
    CHART_VERSION,
    HELM,
    MANIFESTS,
    ROOT,
    ChartValues,
    chart_cull_command,
    compose_hub,
    k8s_hub,
    load_all_yaml,
    merged_values,
    user_named,
    user_pod,
)
from .hub.valid_env import HOST_CA, VALID_ENV

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DEFAULTS = {s.name: s.default for s in settings.SETTINGS}
# The settings both hubs get (the Secret opsbook-hub on Kubernetes, .env for compose).
ENV = {**VALID_ENV, "SSH_HOST_CA_PUBLIC_KEY": f"{HOST_CA} opsbook-host-ca"}


def compose_default(text: str) -> str:
    """A docker-compose.yml value with its ${NAME:-default} references at their defaults."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


@pytest.fixture(scope="module")
def compose():
    return compose_hub(ENV)


@pytest.fixture(scope="module")
def k8s():
    return k8s_hub(environ=ENV)


@pytest.fixture(scope="module")
def pods(k8s):
    """Engineers' pods: alice (admin, ops, on-call), bob (on-call), erin (ops)."""
    return {
        name: user_pod(k8s.config, user_named(name, *groups))
        for name, groups in {
            "alice": ("admins", "ops", "oncall"),
            "bob": ("oncall",),
            "erin": ("ops",),
        }.items()
    }


def notebook(pod: dict) -> dict:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")


def test_the_same_authenticator_groups_and_revocation(compose, k8s):
    assert k8s.config.JupyterHub.authenticator_class == compose.JupyterHub.authenticator_class
    assert dict(k8s.config.OpsbookAuthenticator) == dict(compose.OpsbookAuthenticator)
    auth = k8s.config.OpsbookAuthenticator
    assert auth.allowed_groups == {"admins", "ops", "oncall", "viewers"}
    assert not auth.get("admin_groups")  # admins: the opsbook-admin role, never the admin flag
    # Revocation at refresh needs the provider's tokens, kept encrypted: the chart's key here.
    assert auth.enable_auth_state is True and auth.refresh_pre_spawn is True
    assert k8s.config.CryptKeeper.keys and compose.CryptKeeper.keys
    assert k8s.config.JupyterHub.admin_access is False
    assert compose.JupyterHub.admin_access is False


def test_the_same_roles_scopes_and_services(compose, k8s):
    # The culler is the chart's on Kubernetes; the network keeper is Docker's alone (network
    # policies do its work there: test_network_parity).
    def ours(items, key):
        return [i for i in items if "idle-culler" not in i[key] and i[key] != "network-keeper"]

    assert k8s.config.JupyterHub.custom_scopes == compose.JupyterHub.custom_scopes
    compose_roles = [r for r in compose.JupyterHub.load_roles if r["name"] != "idle-culler"]
    k8s_roles = [r for r in k8s.config.JupyterHub.load_roles if "idle-culler" not in r["name"]]
    assert k8s_roles == compose_roles
    assert {r["name"] for r in k8s_roles} >= {"user", "engineer", "oncall", "runs-service"}
    assert ours(k8s.config.JupyterHub.services, "name") == ours(compose.JupyterHub.services, "name")
    assert k8s.config.JupyterHub.authenticate_prometheus is True
    assert compose.JupyterHub.authenticate_prometheus is True


def culler(command: list[str]) -> dict:
    app = IdleCuller()
    app.parse_command_line(command[command.index("jupyterhub_idle_culler") + 1 :])
    traits = app.traits(config=True)
    return {name: getattr(app, name) for name in traits if name not in ("url", "config_file")}


def test_the_same_idle_culling(compose, k8s):
    """Parsed by the culler we ship in both hub images (2.0.0): same timeout, interval and
    choices (servers stopped, users kept, admins' servers culled too)."""
    compose_culler = next(s for s in compose.JupyterHub.services if s["name"] == "idle-culler")
    k8s_culler = next(
        s for s in k8s.config.JupyterHub.services if s["name"] == "jupyterhub-idle-culler"
    )
    assert culler(k8s_culler["command"]) == culler(compose_culler["command"])
    assert culler(k8s_culler["command"])["timeout"] == int(DEFAULTS["CULL_IDLE_TIMEOUT"])
    assert culler(k8s_culler["command"])["cull_every"] == int(DEFAULTS["CULL_EVERY"])
    assert culler(k8s_culler["command"])["cull_users"] is False
    compose_role = next(r for r in compose.JupyterHub.load_roles if r["name"] == "idle-culler")
    k8s_role = next(
        r for r in k8s.config.JupyterHub.load_roles if r["name"] == "jupyterhub-idle-culler"
    )
    assert sorted(k8s_role["scopes"]) == sorted(compose_role["scopes"])
    assert sorted(compose_role["scopes"]) == sorted(configure.IDLE_CULLER_SCOPES)


def test_a_culling_difference_would_show(k8s):
    values = merged_values()
    values["cull"]["adminUsers"] = False
    command, _ = chart_cull_command(ChartValues(values).get)
    assert culler(command)["cull_admin_users"] is False


def test_the_same_server_settings(compose, k8s, pods):
    for name in ("notebook_dir", "default_url", "server_token_scopes"):
        assert k8s.config.KubeSpawner[name] == compose.DockerSpawner[name], name
    env = {e["name"]: e.get("value") for e in notebook(pods["erin"])["env"]}
    for name, value in compose.DockerSpawner.environment.items():
        assert env[name] == value, name
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/lab"


def test_the_same_server_command(compose, pods):
    """compose's DockerSpawner runs the image's CMD (opsbook-singleuser); the chart's default
    (jupyterhub-singleuser) would start the same server with the hub's ORM in it."""
    dockerfile = (ROOT / "images" / "singleuser" / "Dockerfile").read_text()
    image_cmd = yaml.safe_load(re.search(r"^CMD (.+)$", dockerfile, re.M).group(1))
    assert image_cmd == ["opsbook-singleuser"]
    assert not compose.DockerSpawner.get("cmd")
    assert notebook(pods["erin"])["args"][: len(image_cmd)] == image_cmd


def test_the_same_landing_pages(compose, k8s):
    hub = SimpleNamespace(base_url="/hub/")

    def handler(*groups):
        return SimpleNamespace(current_user=user_named("x", *groups), hub=hub)

    for groups in (("viewers",), ("ops",), ("admins",), ("oncall", "viewers")):
        assert k8s.config.JupyterHub.default_url(handler(*groups)) == (
            compose.JupyterHub.default_url(handler(*groups))
        )
        k8s_vars = k8s.config.JupyterHub.template_vars["opsbook_has_server"]
        compose_vars = compose.JupyterHub.template_vars["opsbook_has_server"]
        assert k8s_vars(user_named("x", *groups)) == compose_vars(user_named("x", *groups))
    assert k8s.config.JupyterHub.template_paths == compose.JupyterHub.template_paths


class _Size(HasTraits):
    size = ByteSpecification()


def in_bytes(size) -> int:
    return _Size(size=size).size


def test_the_same_limits_and_guarantees_equal_to_them(compose, pods):
    resources = notebook(pods["erin"])["resources"]
    assert resources["limits"]["memory"] == in_bytes(compose.DockerSpawner.mem_limit)
    assert resources["limits"]["memory"] == in_bytes(DEFAULTS["MEM_LIMIT"])
    assert float(resources["limits"]["cpu"]) == compose.DockerSpawner.cpu_limit
    assert float(resources["limits"]["cpu"]) == float(DEFAULTS["CPU_LIMIT"])
    assert resources["requests"] == resources["limits"]
    # PIDS_LIMIT: KubeSpawner has no per-pod setting (the kubelet's podPidsLimit is per node).


def test_the_same_images():
    values = merged_values()
    hub_env = COMPOSE["services"]["hub"]["environment"]
    image = f"{values['singleuser']['image']['name']}:{values['singleuser']['image']['tag']}"
    assert image == compose_default(hub_env["SINGLEUSER_IMAGE"])
    runs = next(d for d in load_all_yaml(MANIFESTS / "runs.yaml") if d["kind"] == "Deployment")
    runs_image = runs["spec"]["template"]["spec"]["containers"][0]["image"]
    assert runs_image == compose_default(COMPOSE["services"]["runs"]["image"])
    version = compose_default("${OPSBOOK_VERSION:-0.1.0}")
    hub_image = values["hub"]["image"]
    assert (hub_image["name"], hub_image["tag"]) == ("opsbook/hub-k8s", version)
    library = values["singleuser"]["initContainers"][0]["image"]
    assert library == f"opsbook/library:{version}"


def test_the_same_read_only_library(compose, pods):
    """compose bind-mounts shared-notebooks/ and ansible/ read-only; Kubernetes copies the same
    folders, from the library image, into volumes mounted read-only at the same places."""
    library = {
        bind["bind"]: host.rsplit("/", 1)[1]
        for host, bind in compose.DockerSpawner.volumes.items()
        if isinstance(bind, dict) and bind.get("mode") == "ro"
    }
    assert library == {
        "/home/jovyan/runbooks": "shared-notebooks",
        "/home/jovyan/ansible": "ansible",
    }
    hub_env = COMPOSE["services"]["hub"]["environment"]
    assert hub_env["RUNBOOKS_HOST_PATH"].endswith("/shared-notebooks")
    # ansible/ of the repository, or the team's folder given as ANSIBLE_DIR (scripts/compose.sh).
    assert re.match(
        r"^\$\{(OPSBOOK_ROOT\}/ansible|OPSBOOK_ANSIBLE_DIR\b)", hub_env["ANSIBLE_HOST_PATH"]
    )
    pod = pods["erin"]
    mounts = {m["mountPath"]: m for m in notebook(pod)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    init = next(c for c in pod["spec"]["initContainers"] if c["name"] == "opsbook-library")
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    copied = dict(
        re.findall(r"cp -R /opt/opsbook-library/(\w+)/\. (/mnt/\w+)/", init["command"][-1])
    )
    dockerfile = (HELM / "library" / "Dockerfile").read_text()
    in_image = dict(re.findall(r"^COPY (\S+) /opt/opsbook-library/(\w+)$", dockerfile, re.M))
    for path, folder in library.items():
        mount = mounts[path]
        assert mount["readOnly"] is True
        assert "emptyDir" in volumes[mount["name"]]
        source = next(src for src, dst in copied.items() if dst == init_mounts[mount["name"]])
        assert in_image[folder] == source, (path, folder)
    # Everything else read-only but the home, the memory folder of the pod's own SSH key and
    # /tmp (in memory too).
    writable = {"/home/jovyan", configure.RUNTIME_DIR, configure.TMP_DIR}
    assert notebook(pod)["volumeMounts"] and all(
        m.get("readOnly") for m in notebook(pod)["volumeMounts"] if m["mountPath"] not in writable
    )


def test_the_runs_service_reads_the_same_inventory_read_only():
    """compose bind-mounts ansible/ read-only into the runs container; on Kubernetes the runs
    pod copies the same folder from the same library image engineers' pods copy it from, into a
    volume mounted read-only at the same place, where RUNS_INVENTORY's default points."""
    where = "/etc/opsbook/ansible"
    engineers = re.sub(
        r":\?[^}]*\}", "}", COMPOSE["services"]["hub"]["environment"]["ANSIBLE_HOST_PATH"]
    )
    assert f"{engineers}:{where}:ro" in COMPOSE["services"]["runs"]["volumes"]
    runs = next(d for d in load_all_yaml(MANIFESTS / "runs.yaml") if d["kind"] == "Deployment")
    spec = runs["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["image"] == merged_values()["singleuser"]["initContainers"][0]["image"]
    copied = dict(
        re.findall(r"cp -R /opt/opsbook-library/(\w+)/\. (/mnt/\w+)/", init["command"][-1])
    )
    dockerfile = (HELM / "library" / "Dockerfile").read_text()
    in_image = dict(re.findall(r"^COPY (\S+) /opt/opsbook-library/(\w+)$", dockerfile, re.M))
    assert in_image["ansible"] == "ansible" and set(copied) == {"ansible"}
    (volume,) = [m["name"] for m in init["volumeMounts"] if m["mountPath"] == copied["ansible"]]
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == volume)
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts[where]["name"] == volume and mounts[where]["readOnly"] is True
    default = next(s.default for s in runs_settings.SETTINGS if s.name == "RUNS_INVENTORY")
    assert default.startswith(where + "/")


def test_the_same_user_and_no_privileges(compose, pods):
    """uid 1000, gid 100 (the image's USER), no capabilities, no privilege escalation, in every
    container of the pod: the Kubernetes 'restricted' Pod Security Standard, which compose's
    cap_drop ALL and no-new-privileges mirror."""
    dockerfile = (ROOT / "images" / "singleuser" / "Dockerfile").read_text()
    assert "USER 1000:100" in dockerfile
    assert compose.DockerSpawner.extra_host_config["cap_drop"] == ["ALL"]
    assert "no-new-privileges" in compose.DockerSpawner.extra_host_config["security_opt"]
    for pod in pods.values():
        spec = pod["spec"]
        assert spec["securityContext"]["fsGroup"] == 100
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            context = {**spec["securityContext"], **container["securityContext"]}
            assert context.get("runAsUser", 1000) == 1000, container["name"]
            assert context["runAsNonRoot"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "add" not in context["capabilities"]
            assert not context.get("privileged")
            assert context["seccompProfile"]["type"] == "RuntimeDefault"
        assert notebook(pod)["securityContext"]["runAsGroup"] == 100
        kinds = {key for v in spec["volumes"] for key in v if key != "name"}
        assert kinds <= {"emptyDir", "secret", "persistentVolumeClaim"}


def test_the_same_read_only_root_and_tmp_in_memory(compose, pods):
    """Nothing an engineer writes outside the home volume outlives the container or fills a
    disk: the root is read-only, /tmp a bounded tmpfs (emptyDir in memory) of the same size."""
    host_config = compose.DockerSpawner.extra_host_config
    assert host_config["read_only"] is True
    size = re.search(r"size=(\d+)m", host_config["tmpfs"]["/tmp"]).group(1)
    for pod in pods.values():
        assert notebook(pod)["securityContext"]["readOnlyRootFilesystem"] is True
        [tmp] = [m for m in notebook(pod)["volumeMounts"] if m["mountPath"] == "/tmp"]
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == tmp["name"])
        assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{size}Mi"}


GROUPS = {
    "alice": ("admins", "ops", "oncall"),
    "bob": ("oncall",),
    "erin": ("ops",),
    "carol": ("viewers",),
    "dana": ("admins",),
    "mallory": (),
}


@pytest.mark.parametrize("name", GROUPS)
def test_the_same_ssh_policy_no_key_the_host_ca_and_a_memory_folder(compose, k8s, name):
    """No fleet key anywhere: a server (server groups only, the same check on both) gets the
    host CA to trust and a folder in memory at the same place for the key it makes itself;
    the others get no server at all."""
    user = user_named(name, *GROUPS[name])
    docker_spawner = SimpleNamespace(user=user, volumes={})
    try:
        compose.DockerSpawner.pre_spawn_hook(docker_spawner)
        served = True
    except web.HTTPError as refused:
        assert refused.status_code == 403
        served = False
    assert docker_spawner.volumes == {}  # nothing is mounted by the hook any more
    try:
        pod = user_pod(k8s.config, user)
    except web.HTTPError as refused:
        assert refused.status_code == 403
        assert not served, name
        return
    assert served, name
    env = {e["name"]: e.get("value") for e in notebook(pod)["env"]}
    assert env["OPSBOOK_SSH_HOST_CA"] == HOST_CA
    assert env["OPSBOOK_SSH_HOST_CA"] == compose.DockerSpawner.environment["OPSBOOK_SSH_HOST_CA"]
    assert not [v for v in pod["spec"]["volumes"] if "secret" in v]
    [runtime] = [m for m in notebook(pod)["volumeMounts"] if m["name"] == "opsbook-runtime"]
    assert runtime["mountPath"] == configure.RUNTIME_DIR
    assert configure.RUNTIME_DIR in compose.DockerSpawner.extra_host_config["tmpfs"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "opsbook-runtime")
    assert volume["emptyDir"]["medium"] == "Memory"  # as compose's tmpfs, never on a disk


def test_without_a_host_ca_no_host_is_trusted_on_both():
    pod = user_pod(k8s_hub().config, user_named("erin", "ops"))
    env = {e["name"]: e.get("value") for e in notebook(pod)["env"]}
    assert env["OPSBOOK_SSH_HOST_CA"] == ""
    assert compose_hub().DockerSpawner.environment["OPSBOOK_SSH_HOST_CA"] == ""


def pins(path) -> dict[str, str]:
    return dict(re.findall(r"^([\w.-]+)==(\S+)", path.read_text(), re.M))


def test_the_hub_images_agree():
    """One JupyterHub version everywhere: the Kubernetes hub image pins what compose's hub image
    has, on the chart's hub image of the chart version the README installs."""
    dockerfile = (ROOT / "images" / "hub-k8s" / "hub.Dockerfile").read_text()
    assert re.search(
        rf"^FROM quay\.io/jupyterhub/k8s-hub:{re.escape(CHART_VERSION)}$", dockerfile, re.M
    )
    compose_pins = pins(ROOT / "hub" / "requirements.txt")
    k8s_pins = pins_in(dockerfile)
    assert k8s_pins == {
        name: compose_pins[name]
        for name in ("jupyterhub", "oauthenticator", "jupyterhub-idle-culler")
    }
    assert k8s_pins["jupyterhub"] == "5.5.4"
    assert re.search(r"^COPY hub/opsbook_hub /\S+/opsbook_hub$", dockerfile, re.M)
    assert re.search(r"^COPY opsbook/contract /\S+/opsbook/contract$", dockerfile, re.M)
    tests_pins = pins(ROOT / "tests" / "requirements.txt")
    assert tests_pins["jupyterhub-idle-culler"] == compose_pins["jupyterhub-idle-culler"]
    readme = (HELM / "README.md").read_text()
    assert f"--version {CHART_VERSION}" in readme


def pins_in(dockerfile: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+([\w.-]+)==(\S+)", dockerfile, re.M))


def test_the_same_token_lifetimes(compose, k8s):
    week = int(DEFAULTS["API_TOKEN_MAX_SECONDS"])
    for hub in (compose, k8s.config):
        assert hub.JupyterHub.token_expires_in_max_seconds == week
        assert hub.JupyterHub.oauth_token_expires_in == week


def test_the_same_secure_cookies_and_hsts_behind_https():
    https = {
        **ENV,
        "OAUTH_CALLBACK_URL": "https://opsbook.example.com/hub/oauth_callback",
        "OAUTH_AUTHORIZE_URL": "https://sso.example.com/auth",
        "OAUTH_TOKEN_URL": "https://sso.example.com/token",
        "OAUTH_USERDATA_URL": "https://sso.example.com/me",
        "OAUTH_LOGOUT_REDIRECT_URL": "",
    }
    compose_https, k8s_https = compose_hub(https), k8s_hub(environ=https).config
    assert compose_https.JupyterHub.tornado_settings["cookie_options"] == {"secure": True}
    for key in ("cookie_options", "headers"):
        assert (
            k8s_https.JupyterHub.tornado_settings[key]
            == compose_https.JupyterHub.tornado_settings[key]
        )
    assert k8s_https.KubeSpawner.args == compose_https.DockerSpawner.args != []
