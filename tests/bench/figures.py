"""The figures, each measured against the running bench stack (see __main__ for the order).

Every figure returns a `Figure`: rows of samples with the target each is held to. Comparisons
(spawn against the floor, the runbook against plain ansible-playbook) are taken in pairs, one
soon after the other, alternating which goes first, and reported as the ratio of each pair.
"""

from __future__ import annotations

import inspect
import json
import random
import re
import secrets
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from dockerspawner import DockerSpawner
from opsbook_hub.configure import (
    ENGINEER_CPU_SHARES,
    RUNTIME_DIR,
    RUNTIME_TMPFS,
    TMP_DIR,
    TMP_TMPFS,
)

from opsbook import runs as runs_module
from opsbook.contract import wire
from opsbook.runsclient import RunsClient
from tests.e2e import drills, storm
from tests.e2e.hubclient import HubUser
from tests.e2e.stack import ROOT, Stack, docker, reset_fleet, wait_for

from .common import (
    BENCH,
    BENCH_ENGINEERS,
    Figure,
    Quiet,
    Row,
    container_ip,
    container_name,
    docker_time,
    log,
    median,
    memory_samples,
    p95,
    service_container,
    verdict,
    wait_until_quiet,
)

SPAWN_METRIC = "jupyterhub_server_spawn_duration_seconds"
PROXY_METRIC = "jupyterhub_proxy_add_duration_seconds"
POLL = 0.05  # seconds between polls of a starting server, the same for the hub and the floor
# Each start of the single-spawn figure waits a random 0 to SPREAD s first. The stack's periodic
# work (health checks every 5 or 10 s, Prometheus's scrapes every 5 s) costs CPU in bursts, and
# pairs one right after the other (about 2.5 s each) put the same leg at the same point of that
# cycle: in one run every hub-first pair was 1.22-1.36 x and every floor-first pair 0.95-1.11 x.
SPREAD = 5.0
# Issue 14's targets: one spawn at most 1.15 x the floor, ten at once at most 1.10 x ten
# `docker run` of the same image (medians of the ratios of samples taken side by side).
SPAWN_TARGET = 1.15
TEN_TARGET = 1.10
HOME = "/home/jovyan"
# The demo's hosts are containers: their load is the whole machine's (see tests/e2e).
MACHINE_LOAD_BAR = 50.0
WEB = ("web-1", "web-2", "web-3")


# --- helpers --------------------------------------------------------------------------------------


def signed_in(stack: Stack, username: str) -> HubUser:
    user = HubUser(stack.hub_url, username)
    answer = user.sign_in(stack.demo_password)
    if not answer.is_redirect or user.whoami().status_code != 200:
        raise RuntimeError(f"{username} could not sign in: {answer.status_code} {answer.url}")
    return user


def xsrf(user: HubUser) -> dict[str, str]:
    return {"X-XSRFToken": user.session.cookies.get("_xsrf", path="/hub/") or ""}


def wait_status_200(session: requests.Session, url: str, token: str, timeout: float = 180) -> None:
    """Poll a Jupyter server's /api/status every POLL s until it answers 200."""
    headers = {"Authorization": f"token {token}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = session.get(url, headers=headers, timeout=5, allow_redirects=False)
            if answer.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(POLL)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")


def hub_metrics(stack: Stack) -> dict[str, float]:
    """The hub's own spawn and proxy-route histograms (sum and count of successes)."""
    text = requests.get(
        f"{stack.hub_url}/hub/metrics",
        headers={"Authorization": f"token {stack.env['HUB_METRICS_TOKEN']}"},
        timeout=10,
    ).text
    wanted = {}
    for name in (SPAWN_METRIC, PROXY_METRIC):
        for part in ("sum", "count"):
            match = re.search(rf'^{name}_{part}\{{status="success"\}} ([\d.e+-]+)$', text, re.M)
            wanted[f"{name}_{part}"] = float(match.group(1)) if match else 0.0
    return wanted


def metric_mean(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    count = after[f"{name}_count"] - before[f"{name}_count"]
    if count <= 0:
        return None
    return (after[f"{name}_sum"] - before[f"{name}_sum"]) / count


def phases(container: str, t0_wall: float, t_end_wall: float) -> dict[str, float]:
    """Where a start went: asked -> container created -> started -> Jupyter listening -> answered.

    From the engine's own timestamps and the server's log line 'Jupyter Server ... is running at'
    (docker logs -t: when the engine got the line).
    """
    created, started = docker(
        "inspect", "--format", "{{.Created}} {{.State.StartedAt}}", container
    ).stdout.split()
    logs = docker("logs", "-t", container, check=False)
    running = None
    for line in (logs.stdout + logs.stderr).splitlines():
        if "is running at" in line:
            running = docker_time(line.split(" ", 1)[0])
            break
    created_at, started_at = docker_time(created), docker_time(started)
    result = {
        "asked_to_created": created_at - t0_wall,
        "created_to_started": started_at - created_at,
    }
    if running is not None:
        result["started_to_listening"] = running - started_at
        result["listening_to_answered"] = t_end_wall - running
    return result


def wait_gone(container: str, timeout: float = 120) -> None:
    wait_for(
        lambda: not docker("ps", "-aq", "--filter", f"name=^{container}$").stdout.strip(),
        timeout,
        f"{container} removed",
    )


def exec_in(container: str, *args: str, timeout: float = 1800, workdir: str = HOME):
    return subprocess.run(
        ["docker", "exec", "-u", "1000", "-w", workdir, container, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def python_in(container: str, script: str, timeout: float = 600) -> dict[str, Any]:
    """Run a Python script in an engineer's container, as the engineer; its last line is JSON."""
    done = exec_in(container, "python", "-c", script, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"script failed in {container}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- spawn, one engineer --------------------------------------------------------------------------


class Floor:
    """The same image started with `docker run` on the same network, with the same limits and
    mounts as the hub gives an engineer, running the same Jupyter server; polled directly."""

    def __init__(self, stack: Stack, suffix: str = "") -> None:
        self.name = f"{BENCH.project}-floor{suffix}"
        self.volume = f"{BENCH.project}-floor-home{suffix}"
        self.image = f"opsbook/singleuser:{stack.env.get('OPSBOOK_VERSION') or '0.1.0'}"
        self.token = secrets.token_hex(16)
        self.session = requests.Session()

    def command(self) -> list[str]:
        return [
            "docker",
            "run",
            "-d",
            "--name",
            self.name,
            "--network",
            BENCH.project,
            "--cpus",
            "1.0",
            "--cpu-shares",
            str(ENGINEER_CPU_SHARES),
            "--memory",
            "2g",
            "--pids-limit",
            "512",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--tmpfs",
            f"{RUNTIME_DIR}:{RUNTIME_TMPFS}",
            "--tmpfs",
            f"{TMP_DIR}:{TMP_TMPFS}",
            "-v",
            f"{self.volume}:{HOME}",
            "-v",
            f"{ROOT / 'shared-notebooks'}:{HOME}/runbooks:ro",
            "-v",
            f"{ROOT / 'ansible'}:{HOME}/ansible:ro",
            self.image,
            "jupyter",
            "server",
            "--ServerApp.ip=0.0.0.0",
            "--ServerApp.port=8888",
            "--ServerApp.open_browser=False",
            f"--IdentityProvider.token={self.token}",
        ]

    def start(self) -> tuple[float, dict[str, float]]:
        """Start it and wait until it answers (it keeps running: see remove)."""
        t0_wall, t0 = time.time(), time.perf_counter()
        subprocess.run(self.command(), check=True, capture_output=True)
        ip = container_ip(self.name)
        wait_status_200(self.session, f"http://{ip}:8888/api/status", self.token)
        elapsed = time.perf_counter() - t0
        return elapsed, phases(self.name, t0_wall, t0_wall + elapsed)

    def remove(self) -> None:
        docker("rm", "-f", self.name)


class HubSpawn:
    """POST /hub/api/users/<name>/server, then /user/<name>/api/status through the proxy."""

    def __init__(self, stack: Stack, user: HubUser, token: str) -> None:
        self.stack = stack
        self.user = user
        self.token = token
        # DockerSpawner's own escaping of the name: bench-01 -> opsbook-bench-bench-2d01.
        self.container = stack.container_of(DockerSpawner._escape(user.name))
        self.session = requests.Session()

    def start(self) -> tuple[float, float]:
        """(seconds until the server answered, the POST's own seconds)."""
        t0 = time.perf_counter()
        answer = self.user.session.post(
            f"{self.stack.hub_url}/hub/api/users/{self.user.name}/server",
            headers=xsrf(self.user),
            timeout=300,
        )
        posted = time.perf_counter() - t0
        if answer.status_code not in (201, 202):
            raise RuntimeError(f"spawn of {self.user.name}: {answer.status_code} {answer.text}")
        checked = time.monotonic()
        while True:
            if self.answers():
                return time.perf_counter() - t0, posted
            if time.monotonic() - checked > 2:  # a spawn that failed is not waited for
                checked = time.monotonic()
                if not self.server():
                    raise RuntimeError(f"{self.user.name}'s spawn failed (see the hub's log)")
            if time.perf_counter() - t0 > 300:
                raise TimeoutError(f"{self.user.name}'s server did not answer in 300 s")
            time.sleep(POLL)

    def answers(self, timeout: float = 5) -> bool:
        """Whether the server answers 200 at /user/<name>/api/status through the proxy."""
        try:
            reply = self.session.get(
                f"{self.stack.hub_url}/user/{self.user.name}/api/status",
                headers={"Authorization": f"token {self.token}"},
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.RequestException:
            return False
        return reply.status_code == 200

    def server(self) -> dict[str, Any]:
        """The hub's model of the user's default server ({} when there is none)."""
        model = self.user.session.get(
            f"{self.stack.hub_url}/hub/api/users/{self.user.name}",
            headers=xsrf(self.user),
            timeout=60,
        ).json()
        return model["servers"].get("", {})

    def stop(self) -> None:
        """Stop the server; wait until the hub has none and its container is removed."""
        answer = self.user.session.delete(
            f"{self.stack.hub_url}/hub/api/users/{self.user.name}/server",
            headers=xsrf(self.user),
            timeout=300,
        )
        if answer.status_code not in (202, 204):
            raise RuntimeError(f"stop of {self.user.name}: {answer.status_code} {answer.text}")
        wait_for(lambda: not self.server(), 300, f"{self.user.name}'s server stopped")
        wait_gone(self.container, 300)


def spawn_one(stack: Stack, samples: int) -> Figure:
    figure = Figure(
        "spawn",
        "Spawn, one engineer",
        "erin (group ops) asks the hub for her server (`POST /hub/api/users/erin/server`, her "
        "browser session) and polls `GET /user/erin/api/status` through the proxy with her token "
        f"every {POLL * 1000:.0f} ms until it answers 200; then the server is stopped and "
        "removed. The floor: the same image started with `docker run` on the same network, with "
        "the same CPU limit and weight, memory and process limits, dropped capabilities and "
        "mounts (a home volume, the runbooks and playbooks read-only, a read-only root with the "
        "same tmpfs on /tmp and /run/opsbook, where the image's start script makes the SSH key "
        "pair), running `jupyter server` with the image's config "
        "(the same server extensions), polled directly on its container address at the same "
        "interval, from before `docker run` to the first 200 (the `docker` CLI and a `docker "
        "inspect` for the address are in it, as DockerSpawner's API calls are in the hub's). "
        "Hub and floor alternate (floor first in odd pairs); each start waits a random 0 to "
        f"{SPREAD:g} s first, so that the stack's periodic work (health checks, Prometheus's "
        "scrapes, every 5 or 10 s) falls on both alike; "
        "the ratio is taken per pair. One warm-up each first (a new home volume): shown, not "
        "counted.",
    )
    figure.context["before"] = Quiet.now().__dict__
    erin = signed_in(stack, "erin")
    hub = HubSpawn(stack, erin, erin.new_token("bench: spawn"))
    floor = Floor(stack)

    log("spawn: warm-up (new home volumes)")
    first_hub, _ = hub.start()
    hub.stop()
    first_floor, _ = floor.start()
    floor.remove()

    hub_times, floor_times, ratios, posts = [], [], [], []
    hub_profiles, floor_profiles = [], []
    before = hub_metrics(stack)
    for pair in range(samples):
        order = ("floor", "hub") if pair % 2 == 0 else ("hub", "floor")
        for which in order:
            time.sleep(random.uniform(0, SPREAD))
            if which == "floor":
                elapsed, profile = floor.start()
                floor.remove()
                floor_times.append(elapsed)
                floor_profiles.append(profile)
            else:
                t0_wall = time.time()
                elapsed, posted = hub.start()
                hub_profiles.append(phases(hub.container, t0_wall, t0_wall + elapsed))
                posts.append(posted)
                hub_times.append(elapsed)
                hub.stop()
        ratios.append(hub_times[-1] / floor_times[-1])
        log(f"spawn pair {pair + 1}: hub {hub_times[-1]:.2f} s, floor {floor_times[-1]:.2f} s")
    after = hub_metrics(stack)

    figure.rows = [
        Row("spawn through the hub, until the server answers via the proxy", hub_times, "s"),
        Row("floor: `docker run` of the same image, until it answers", floor_times, "s"),
        Row(
            "spawn / floor (per pair)",
            ratios,
            "x",
            f"≤ {SPAWN_TARGET:g} x",
            verdict(median(ratios) <= SPAWN_TARGET),
        ),
        Row("first spawn of erin (new home volume), not counted", [first_hub], "s"),
        Row("first floor (new volume), not counted", [first_floor], "s"),
    ]
    spawn_mean = metric_mean(before, after, SPAWN_METRIC)
    proxy_mean = metric_mean(before, after, PROXY_METRIC)
    figure.context["hub_metrics"] = {
        "server_spawn_duration_mean_s": spawn_mean,
        "proxy_add_duration_mean_s": proxy_mean,
        "post_seconds": posts,
    }
    figure.context["ratios"] = ratios
    figure.context["hub_phases"] = hub_profiles
    figure.context["floor_phases"] = floor_profiles
    figure.context["after"] = Quiet.now().__dict__
    return figure


# --- spawn, ten at once ---------------------------------------------------------------------------


def together(actions: list[Callable[[], Any]]) -> list[float]:
    """Run the actions in threads released at the same instant; each one's seconds until done."""
    release = threading.Barrier(len(actions) + 1)
    done: list[float] = [0.0] * len(actions)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        release.wait()
        try:
            actions[index]()
            done[index] = time.perf_counter()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    release.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [moment - t0 for moment in done]


def spawn_ten(stack: Stack, rounds: int, with_memory: bool = True) -> tuple[Figure, dict[str, Any]]:
    """Ten engineers' servers asked for at the same instant, beside ten `docker run` of the same
    image at the same instant (the machine's floor); also (`with_memory`) the memory with ten
    running."""
    figure = Figure(
        "spawn10",
        "Spawn, ten at once",
        "bench-01 … bench-10 (group ops) are signed in first; then ten threads, released "
        "together, each POST their own server and poll their own `/user/<name>/api/status` "
        f"through the proxy every {POLL * 1000:.0f} ms; a round's time is from the release until "
        "the last server answers. The floor: ten `docker run` of the same image as in the "
        "one-engineer figure, released together, each polled directly. Hub and floor rounds "
        "alternate (floor first in odd rounds); all ten are stopped and removed after each "
        "round. One warm-up round of each first (new home volumes): shown, not counted.",
    )
    figure.context["before"] = Quiet.now().__dict__
    engineers = [signed_in(stack, name) for name in BENCH_ENGINEERS[:10]]
    spawns = [HubSpawn(stack, user, user.new_token("bench: ten")) for user in engineers]
    floors = [Floor(stack, f"-{n:02d}") for n in range(1, len(spawns) + 1)]
    memory: dict[str, Any] = {}

    def hub_round(keep_running: bool = False) -> list[float]:
        each = together([spawn.start for spawn in spawns])
        if keep_running:
            memory.update(measure_memory_with_ten(stack, spawns))
        stop_all(spawns)
        return each

    def floor_round() -> list[float]:
        each = together([floor.start for floor in floors])
        for floor in floors:
            floor.remove()
        return each

    log("ten at once: warm-up rounds (new home volumes)")
    first, first_floor = max(hub_round()), max(floor_round())
    totals, per_engineer, floor_totals, ratios = [], [], [], []
    before = hub_metrics(stack)
    for number in range(rounds):
        order = ("floor", "hub") if number % 2 == 0 else ("hub", "floor")
        for which in order:
            if which == "floor":
                floor_totals.append(max(floor_round()))
            else:
                each = hub_round(keep_running=with_memory and number == rounds - 1)
                totals.append(max(each))
                per_engineer += each
        ratios.append(totals[-1] / floor_totals[-1])
        log(
            f"ten at once, round {number + 1}: last answered after {totals[-1]:.2f} s "
            f"(floor {floor_totals[-1]:.2f} s)"
        )
    after = hub_metrics(stack)
    figure.rows = [
        Row("ten servers, until the last answers", totals, "s"),
        Row("each engineer's own wait (all rounds)", per_engineer, "s"),
        Row("floor: ten `docker run` of the same image, until the last answers", floor_totals, "s"),
        Row(
            "ten through the hub / ten by `docker run` (per round)",
            ratios,
            "x",
            f"≤ {TEN_TARGET:g} x",
            verdict(median(ratios) <= TEN_TARGET),
        ),
        Row("warm-up round (ten new home volumes), not counted", [first], "s"),
        Row("warm-up floor round (ten new volumes), not counted", [first_floor], "s"),
    ]
    figure.context["hub_metrics"] = {
        "server_spawn_duration_mean_s": metric_mean(before, after, SPAWN_METRIC),
        "proxy_add_duration_mean_s": metric_mean(before, after, PROXY_METRIC),
    }
    figure.context["ratios"] = ratios
    figure.context["after"] = Quiet.now().__dict__
    return figure, memory


def spawn_runs(
    stack: Stack, first: tuple[Figure, Figure], runs: int, samples: int, rounds: int
) -> Figure:
    """Issue 14: both spawn ratios stable across three runs. The first run is the one measured at
    the start of the bench; the others are measured again at its end, the same way."""
    figure = Figure(
        "spawn-runs",
        "Spawn, run again",
        f"The two spawn figures above, measured {runs} times in this bench: first at its start "
        "(the sections above), then again after the login storm, the logins and the approvals, "
        "on the same stack, each after waiting for a quiet machine, with the same pairs and "
        "rounds. Each row is one run's ratios; the target holds when every run meets it.",
    )
    measured = [first]
    for run in range(2, runs + 1):
        wait_until_quiet(180)
        log(f"spawn figures, run {run} of {runs}")
        one = spawn_one(stack, samples)
        ten, _ = spawn_ten(stack, rounds, with_memory=False)
        measured.append((one, ten))
    for what, target, index in (
        ("one spawn / floor", SPAWN_TARGET, 0),
        ("ten at once / ten `docker run`", TEN_TARGET, 1),
    ):
        for run, pair in enumerate(measured, 1):
            ratios = pair[index].context["ratios"]
            figure.rows.append(
                Row(
                    f"{what}, run {run}",
                    ratios,
                    "x",
                    f"≤ {target:g} x",
                    verdict(median(ratios) <= target),
                )
            )
    figure.context["runs"] = [
        {"spawn": one.context, "spawn10": ten.context} for one, ten in measured[1:]
    ]
    return figure


def stop_all(spawns: list[HubSpawn]) -> None:
    errors: list[BaseException] = []

    def stop(spawn: HubSpawn) -> None:
        try:
            spawn.stop()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=stop, args=(spawn,)) for spawn in spawns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def measure_memory_with_ten(stack: Stack, spawns: list[HubSpawn]) -> dict[str, Any]:
    """With the ten servers running and idle for 30 s: three `docker stats` 5 s apart."""
    time.sleep(30)
    services = {name: container_name(service_container(name)) for name in ("hub", "proxy", "runs")}
    engineers = [spawn.container for spawn in spawns]
    samples = memory_samples(engineers + list(services.values()))
    return {
        "idle_engineers_with_ten": [median(samples[name]) for name in engineers],
        "hub_with_ten": samples[services["hub"]],
        "proxy_with_ten": samples[services["proxy"]],
    }


# --- login storm ----------------------------------------------------------------------------------


def login_storm(stack: Stack, count: int) -> Figure:
    """Thirty engineers sign in and start their servers at the same instant (tests/e2e/storm.py):
    first thirty who never started a server (their networks are made then), then the same again."""
    names = list(
        BENCH_ENGINEERS[10 : 10 + count]
    )  # never started: the ten-at-once figure's are 1-10
    figure = Figure(
        "storm",
        "Login storm",
        f"{names[0]} … {names[-1]} (group ops), none signed in before, each in a thread with a "
        "browser session of their own, released at the same instant: the provider's login and "
        "consent forms, the hub's callback, a token, `POST /hub/api/users/<name>/server`, then "
        f"`GET /user/<name>/api/status` through the proxy every {storm.POLL * 1000:.0f} ms until "
        "200. Each engineer's wait is from the release to that 200. Every answer of every "
        "session (redirects and the provider's pages too) is checked: a 5xx is an error. "
        "Afterwards every server is stopped and removed. Twice: first as none of them ever "
        "started a server (each start makes the engineer's network), then again, the same "
        "thirty with new sessions (their networks are there: an incident's usual team).",
    )
    figure.context["before"] = Quiet.now().__dict__
    for which in ("first start", "again"):
        result = storm.login_storm(stack.hub_url, names, stack.demo_password, timeout=300)
        figure.context[f"after {which}"] = Quiet.now().__dict__
        storm.stop_servers(result, timeout=300)
        waits, errors = result.waits, result.errors
        within = len(waits) == count and max(waits) < 60
        figure.rows += [
            Row(
                f"{which}: each engineer's wait to a working server ({len(waits)} of {count} "
                "got one)",
                waits or [float("nan")],
                "s",
                "all < 60 s",
                verdict(within and not errors),
            ),
            Row(f"{which}: slowest wait", [max(waits) if waits else float("nan")], "s"),
            Row(
                f"{which}: engineers who saw an error (5xx or no server)",
                [float(len(errors))],
                "count",
                "0",
                verdict(not errors),
            ),
        ]
        figure.notes += [
            f"{which}, {name}: {'; '.join(found[:3])}" for name, found in sorted(errors.items())
        ]
    figure.context["after"] = Quiet.now().__dict__
    return figure


# --- login ----------------------------------------------------------------------------------------


def login(stack: Stack, samples: int) -> Figure:
    figure = Figure(
        "login",
        "Login",
        "A new browser session each time (no cookies): `GET /hub/login`, the redirects to the "
        "provider, its login form (username, password), its consent form, the callback (the hub "
        "exchanges the code, reads userinfo, stores the encrypted auth state, sets its cookie) "
        "and the hub's redirect past its login pages; as erin (group ops), redirects followed by "
        "hand as in the e2e tests (tests/e2e/hubclient.py). Each login is then checked with "
        "`GET /hub/api/user` (not timed). One warm-up login first, not counted.",
    )
    figure.context["before"] = Quiet.now().__dict__
    times = []
    for number in range(samples + 1):
        user = HubUser(stack.hub_url, "erin")
        t0 = time.perf_counter()
        answer = user.sign_in(stack.demo_password)
        elapsed = time.perf_counter() - t0
        if not answer.is_redirect or user.whoami().status_code != 200:
            raise RuntimeError(f"login {number} failed: {answer.status_code} {answer.url}")
        if number:
            times.append(elapsed * 1000)
    figure.rows = [
        Row("full OIDC login", times, "ms", "median < 150 ms", verdict(median(times) < 150)),
    ]
    figure.context["after"] = Quiet.now().__dict__
    return figure


# --- SSH certificates -----------------------------------------------------------------------------

CERT_SCRIPT = """
import json, time
from opsbook import sshcert
from opsbook.runsclient import RunsClient
client = RunsClient.from_env()
key = sshcert.ensure_key(sshcert.ssh_dir())
issue, kept = [], []
for _ in range({samples} + 1):
    t = time.perf_counter()
    client.certificate(key, None)
    issue.append(time.perf_counter() - t)
sshcert.ensure_certificate(client, force=True)
for _ in range({samples}):
    t = time.perf_counter()
    sshcert.ensure_certificate(client)
    kept.append(time.perf_counter() - t)
print(json.dumps({{"issue": issue, "kept": kept}}))
"""


def certificates(container: str, samples: int) -> Figure:
    """Issue 11's benchmark: what the per-engineer certificates cost a run."""
    figure = Figure(
        "certs",
        "SSH certificates",
        "In erin's container, one Python process: the runs service signs her container's public "
        "key (`POST api/ssh/certificate` through the proxy, as `opsbook-cert` and the runbook "
        "do; the first call of the process is not counted), and the step each play of a run "
        "takes first (`opsbook.sshcert.ensure_certificate`) when the certificate in memory is "
        "still good, which is what almost every batch pays (it renews a few minutes before "
        "the end of the validity, in the lease's background thread).",
    )
    figure.context["before"] = Quiet.now().__dict__
    out = python_in(container, CERT_SCRIPT.format(samples=samples))
    issue = [t * 1000 for t in out["issue"]]
    kept = [t * 1000 for t in out["kept"]]
    figure.rows = [
        Row(
            "certificate issued", issue[1:], "ms", "median < 50 ms", verdict(median(issue[1:]) < 50)
        ),
        Row("first certificate of the process, not counted", issue[:1], "ms"),
        Row("the step before a play, certificate still valid", kept, "ms"),
    ]
    figure.context["after"] = Quiet.now().__dict__
    return figure


# --- approvals ------------------------------------------------------------------------------------


def _wait_then_set(session: runs_module.RunSession, done: threading.Event) -> None:
    session.wait_for_approval(60)
    done.set()


def approval_round_trip(stack: Stack, samples: int) -> Figure:
    """Issue 12's benchmark: a production run requested, approved through the API, and the
    waiting runbook on its way."""
    figure = Figure(
        "approval",
        "Approval round trip",
        "alice (on call) starts a run on the production stack db, which waits for approval "
        "(`RunSession.start`, then `wait_for_approval` as patching.ipynb calls it, polling every "
        "0.5 s, in a thread of this process); bob approves it through the API, with his own token "
        "and a reason. Timed: from bob's approve call to the moment alice's wait returns with the "
        "run running and its lease taken up. Each run is then aborted (nothing is patched).",
    )
    figure.context["before"] = Quiet.now().__dict__
    url = f"{stack.hub_url}/services/runs"
    alice = RunsClient(url, signed_in(stack, "alice").new_token("bench: approvals"))
    bob = RunsClient(url, signed_in(stack, "bob").new_token("bench: approvals"))
    trips, waits = [], []
    for _ in range(samples):
        session = runs_module.RunSession.start(alice, runbook="bench-approval", stack="db")
        done = threading.Event()
        thread = threading.Thread(target=_wait_then_set, args=(session, done))
        thread.start()
        time.sleep(0.3)  # alice's runbook is waiting before bob answers, as in real life
        started = time.perf_counter()
        bob.approve(session.run.id, "bench: approved")
        answered = time.perf_counter()
        done.wait(30)
        finished = time.perf_counter()
        thread.join(5)
        alice.abort(session.run.id, "bench: nothing to patch")
        trips.append((finished - started) * 1000)
        waits.append((answered - started) * 1000)
    figure.rows = [
        Row(
            "approved -> the waiting runbook goes on",
            trips,
            "ms",
            "median < 1 s",
            verdict(median(trips) < 1000),
        ),
        Row("the approve call alone (bob's answer)", waits, "ms"),
    ]
    figure.context["after"] = Quiet.now().__dict__
    return figure


# --- the health gate ------------------------------------------------------------------------------

GATE_SCRIPT = """
import json, time
t = time.perf_counter()
from opsbook import health
from opsbook.config import Settings
from opsbook.inventory import Inventory
imported = time.perf_counter() - t
settings = Settings.from_env()
inventory = Inventory.load(settings.inventory)
checks = health.gate_checks(max_load_per_cpu={load})
out = {{"import_s": imported}}
for label, hosts in (("stack", inventory.hosts("web")), ("one", inventory.hosts("web")[:1])):
    instances = inventory.exporter_instances(hosts)
    times, passed = [], []
    for _ in range({samples} + 1):
        t = time.perf_counter()
        result = health.gate(settings.prometheus_url, instances, checks)
        times.append(time.perf_counter() - t)
        passed.append(result.passed)
    out[label] = {{"hosts": hosts, "times": times, "passed": passed, "summary": result.summary()}}
print(json.dumps(out))
"""


def health_gate(stack: Stack, container: str, samples: int) -> Figure:
    figure = Figure(
        "gate",
        "Health gate",
        "`opsbook.health.gate` as the runbook calls it (the checks up, load, free disk; each "
        "gate a new Prometheus client), in erin's container against the stack's Prometheus, in "
        "one Python process: for the web stack's three hosts at once, and for one host (a batch "
        "of the runbook's batch_size 1). The first gate of each (a cold start) is shown "
        "separately; the import of the opsbook modules is not in any gate's time.",
    )
    figure.context["before"] = Quiet.now().__dict__
    out = python_in(container, GATE_SCRIPT.format(samples=samples, load=MACHINE_LOAD_BAR))
    rows = []
    for label, title in (("stack", "three hosts"), ("one", "one host")):
        data = out[label]
        times = [t * 1000 for t in data["times"]]
        ok = all(data["passed"])
        rows.append(
            Row(
                f"one gate, {title} ({', '.join(data['hosts'])})",
                times[1:],
                "ms",
                "< 1 s",
                verdict(median(times[1:]) < 1000 and ok),
                "" if ok else f"gate did not pass: {data['summary']}",
            )
        )
        rows.append(Row(f"first gate, {title}, not counted", times[:1], "ms"))
    imported = [out["import_s"] * 1000]
    rows.append(Row("import of opsbook.health, config, inventory (once)", imported, "ms"))
    figure.rows = rows
    figure.context["after"] = Quiet.now().__dict__
    return figure


# --- the runs service -----------------------------------------------------------------------------

EVENTS_SCRIPT = """
import json, time, uuid
from datetime import datetime, timezone
from opsbook import runs
from opsbook.contract import wire
from opsbook.runsclient import RunsClient
client = RunsClient.from_env()
run = client.create(wire.CreateRun(runbook="bench-events", stack="web",
                                   options=wire.RunOptions(batch_size=3),
                                   parameters={{"bench": True}}))
hosts = run.batches[0].hosts
client.start_batch(run.id, 1, hosts)
kinds = ["playbook_on_task_start", "runner_on_start", "runner_on_ok"]
events = []
for i in range({count}):
    raw = {{"event": kinds[i % 3], "uuid": str(uuid.uuid4()),
           "created": datetime.now(timezone.utc).isoformat(),
           "event_data": {{"host": hosts[i % 3], "task": f"Task number {{i // 3}}",
                          "res": {{"changed": i % 2 == 0, "rc": 0}}}}}}
    events.append(runs.event_in(raw, 1))
calls, stored = [], 0
renewed = time.monotonic()
t0 = time.perf_counter()
for i in range(0, len(events), {every}):
    t = time.perf_counter()
    stored += client.append(run.id, events[i:i + {every}]).stored
    calls.append(time.perf_counter() - t)
    if time.monotonic() - renewed > 10:
        client.lease(run.id)
        renewed = time.monotonic()
total = time.perf_counter() - t0
print(json.dumps({{"run": run.id, "total_s": total, "calls": calls, "stored": stored}}))
"""


def runs_service(stack: Stack, container: str, token: str, count: int, samples: int) -> Figure:
    every = inspect.signature(runs_module.Ledger.__init__).parameters["send_every"].default
    figure = Figure(
        "runs",
        "Runs service",
        f"{count:,} synthetic ansible-runner events (task start, runner start, ok, over three "
        "hosts, each with a uuid, a task and a result summary), turned into ledger events by "
        f"`opsbook.runs.event_in` and sent by `RunsClient.append` in batches of {every} (the "
        "Ledger's `send_every`), one after the other, from erin's container to the runs "
        "service (`OPSBOOK_RUNS_URL`, as runbooks reach it; SQLite on its volume). Then the "
        "status pages with that run active and its events in the ledger, fetched through the "
        f"proxy with erin's token from this machine: {samples} times each after one warm-up.",
    )
    figure.context["before"] = Quiet.now().__dict__
    out = python_in(container, EVENTS_SCRIPT.format(count=count, every=every))
    rate = count / out["total_s"]
    base = f"{stack.hub_url}/services/runs"
    session = requests.Session()
    headers = {"Authorization": f"token {token}"}
    pages = {}
    for label, path in (("index", "/"), ("run", f"/runs/{out['run']}")):
        times = []
        for number in range(samples + 1):
            t0 = time.perf_counter()
            answer = session.get(base + path, headers=headers, timeout=30)
            elapsed = time.perf_counter() - t0
            if answer.status_code != 200 or "bench" not in answer.text:
                raise RuntimeError(f"status page {path}: {answer.status_code} {answer.text[:300]}")
            if number:
                times.append(elapsed * 1000)
        pages[label] = (times, len(answer.content))
    RunsClient(base, token).abort(out["run"], "benchmark done")
    index_times, index_size = pages["index"]
    run_times, run_size = pages["run"]
    figure.rows = [
        Row(
            f"events recorded per second ({count:,} events)",
            [rate],
            "events/s",
            "≥ 2,000 events/s",
            verdict(rate >= 2000),
            f"{out['stored']:,} stored",
        ),
        Row(f"one append of {every} events", [c * 1000 for c in out["calls"]], "ms"),
        Row(
            f"status page `/services/runs/` ({index_size / 1024:.0f} KiB)",
            index_times,
            "ms",
            "< 200 ms",
            verdict(median(index_times) < 200),
        ),
        Row(
            f"run page `/services/runs/runs/<id>` ({run_size / 1024:.0f} KiB)",
            run_times,
            "ms",
            "< 200 ms",
            verdict(median(run_times) < 200),
        ),
    ]
    figure.context["after"] = Quiet.now().__dict__
    return figure


# --- patch overhead -------------------------------------------------------------------------------


def installed_and_booted(host: str) -> tuple[dict[str, str], str]:
    container = service_container(host)
    listing = docker(
        "exec", container, "dpkg-query", "-W", "-f", "${Package}=${Version}\\n", "opsbook-demo-*"
    ).stdout
    versions = dict(line.split("=", 1) for line in listing.split() if "=" in line)
    boot = docker("exec", container, "awk", "{print $22}", "/proc/1/stat").stdout.strip()
    return versions, boot


def output_notebook(container: str, path: str) -> dict[str, Any]:
    return json.loads(docker("exec", container, "cat", f"{HOME}/{path}").stdout)


def cell_durations(notebook: dict[str, Any]) -> list[tuple[str, float]]:
    """Each code cell's first line and papermill's duration of it."""
    cells = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]).strip().splitlines()
        duration = (cell.get("metadata", {}).get("papermill", {}) or {}).get("duration") or 0.0
        cells.append((source[0] if source else "", float(duration)))
    return cells


def notebook_text(notebook: dict[str, Any]) -> str:
    texts = []
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
    return "\n".join(texts)


def run_runbook(container: str, output: str) -> tuple[float, dict[str, Any]]:
    parameters = {
        "stack": "web",
        "batch_size": 1,
        "approve": "all",
        "max_load_per_cpu": MACHINE_LOAD_BAR,
    }
    args = ["papermill", "runbooks/patching.ipynb", output, "--kernel", "python3"]
    for name, value in parameters.items():
        args += ["-y", json.dumps({name: value})]
    t0 = time.perf_counter()
    done = exec_in(container, *args)
    elapsed = time.perf_counter() - t0
    notebook = output_notebook(container, output)
    if done.returncode:
        raise RuntimeError(f"the runbook failed:\n{notebook_text(notebook)[-3000:]}")
    return elapsed, notebook


# Both by-hand baselines start the same way: the same errata promoted (into staging, through the
# runs service: no engineer's container promotes on the repository host), each step time-stamped.
PROMOTE_BY_HAND = """
set -euo pipefail
cd ~/ansible
log=~/{log}
: >"$log"
stamp() {{ echo "$1 $(date +%s.%N)"; }}
stamp start
python3 -c 'import json, sys
from opsbook.runsclient import RunsClient
pairs = [(e["package"], e["version"]) for e in json.loads(sys.argv[1])["errata"]]
print(RunsClient.from_env().promote_errata("staging", pairs).to_dict())' {errata} >>"$log" 2>&1
stamp promote
"""

PLAIN_SCRIPT = (
    PROMOTE_BY_HAND
    + """for host in {hosts}; do
  ansible-playbook playbooks/patch.yml --limit "$host" >>"$log" 2>&1
  stamp "$host"
done
"""
)

# The baseline a team would write without Opsbook: one playbook, serial 1, the same silences, the
# same patch tasks and the same Prometheus gate (see its header). The bench copies it into the
# bench stack's own ansible/ (mounted read-only in engineers' containers at ~/ansible), beside
# patch.yml, whose tasks it imports.
HANDWRITTEN = Path(__file__).with_name("handwritten-patch.yml")
HANDWRITTEN_PLAY = "playbooks/handwritten-patch.yml"

HANDWRITTEN_SCRIPT = (
    PROMOTE_BY_HAND
    + """ANSIBLE_LOG_PATH=~/{timed_log} ansible-playbook {play} -e bench_max_load_per_cpu={load} \\
  >>"$log" 2>&1
stamp patch
"""
)


def run_stamped(container: str, script: str, log_name: str, what: str):
    """Run a baseline's script; its time, and each step's (between the script's stamps)."""
    t0 = time.perf_counter()
    done = exec_in(container, "bash", "-c", script)
    elapsed = time.perf_counter() - t0
    if done.returncode:
        tail = docker("exec", container, "tail", "-n", "40", f"{HOME}/{log_name}").stdout
        raise RuntimeError(f"{what} failed:\n{done.stderr}\n{tail}")
    stamps = [line.split() for line in done.stdout.splitlines() if line.strip()]
    steps, previous = {}, float(stamps[0][1])
    for name, value in stamps[1:]:
        steps[name] = float(value) - previous
        previous = float(value)
    return elapsed, steps


def run_plain(container: str, errata: list[dict[str, str]], log_name: str):
    script = PLAIN_SCRIPT.format(
        log=log_name,
        errata=shlex.quote(json.dumps({"errata": errata})),
        hosts=" ".join(WEB),
    )
    return run_stamped(container, script, log_name, "plain ansible-playbook")


def fresh_certificate(container: str) -> None:
    """What an engineer running plays by hand has: a valid SSH certificate. They last minutes
    (RUNS_SSH_CERT_MINUTES); the runbook renews its own before each play when it nears its end.
    Renewed with opsbook-cert before each baseline, outside its time (an image without
    opsbook-cert has no certificates to renew)."""
    done = exec_in(
        container, "bash", "-c", "command -v opsbook-cert >/dev/null || exit 0; opsbook-cert"
    )
    if done.returncode:
        raise RuntimeError(f"opsbook-cert failed before a baseline:\n{done.stderr[-2000:]}")


def install_handwritten(stack: Stack) -> None:
    shutil.copyfile(HANDWRITTEN, stack.config.ansible_dir / HANDWRITTEN_PLAY)


def run_handwritten(container: str, errata: list[dict[str, str]], log_name: str):
    """The hand-written playbook after the errata's promotion; its time, its steps, and per batch
    the phases read from Ansible's log (ANSIBLE_LOG_PATH stamps every line it shows)."""
    timed_log = log_name.removesuffix(".log") + "-ansible.log"
    script = HANDWRITTEN_SCRIPT.format(
        log=log_name,
        timed_log=timed_log,
        errata=shlex.quote(json.dumps({"errata": errata})),
        play=HANDWRITTEN_PLAY,
        load=f"{MACHINE_LOAD_BAR:g}",
    )
    exec_in(container, "rm", "-f", f"{HOME}/{timed_log}")
    with reaching_alertmanager(container):
        elapsed, steps = run_stamped(container, script, log_name, "the hand-written playbook")
    text = docker("exec", container, "cat", f"{HOME}/{timed_log}").stdout
    return elapsed, steps, handwritten_phases(text)


@contextmanager
def reaching_alertmanager(container: str) -> Iterator[None]:
    """A team without Opsbook silences from where it patches: for the baseline only, the
    engineer's container joins the stack's backend network (Alertmanager's), and leaves it after.
    Opsbook's engineers never reach Alertmanager (the runs service silences)."""
    network = BENCH.project
    docker("network", "connect", network, container)
    try:
        yield
    finally:
        docker("network", "disconnect", network, container, check=False)


ANSIBLE_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?\| (PLAY|TASK) (.*)$")


def handwritten_phases(text: str) -> list[dict[str, float]]:
    """Per batch of the hand-written playbook, from its Ansible log: before the patch (the
    silence), the patch's tasks, and after them (the gate, the silence expired), each from one
    task's start to the next's; a batch ends where the next play header (or the recap) starts."""
    marks = []
    for line in text.splitlines():
        found = ANSIBLE_LOG_LINE.match(line)
        if found:
            moment = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            marks.append((moment, f"{found.group(2)} {found.group(3)}"))
    phases, batch = [], None
    for moment, what in marks:
        if what.startswith("TASK [Silence the batch's alerts]"):
            batch = {"silence": moment}
        elif batch is None:
            continue
        elif what.startswith("TASK [Gather the operating system facts]"):
            batch.setdefault("patch", moment)
        elif what.startswith("TASK [Note when the patch ended]"):
            batch.setdefault("gate", moment)
        elif what.startswith("PLAY"):
            if {"patch", "gate"} <= batch.keys():
                phases.append(
                    {
                        "before_play": batch["patch"] - batch["silence"],
                        "play": batch["gate"] - batch["patch"],
                        "gate_wait": moment - batch["gate"],
                    }
                )
            batch = None
    if len(phases) != len(WEB):
        found = f"{len(phases)} batches in the hand-written playbook's log, not {len(WEB)}"
        log(f"patch: {found}")
    return phases


def approved_errata(notebook: dict[str, Any]) -> list[dict[str, str]]:
    # The runbook's line: "approved for web (staging): pkg=1.1, ..." (or "... : nothing").
    match = re.search(r"^approved for web(?: \([^)]*\))?: (.+)$", notebook_text(notebook), re.M)
    if not match or match.group(1).strip() == "nothing":
        raise RuntimeError("the runbook approved no errata: nothing to compare")
    specs = [spec.strip() for spec in match.group(1).split(",")]
    return [dict(zip(("package", "version"), spec.split("="), strict=True)) for spec in specs]


ROLLING_CELL = "result = session.wait()"  # the runbook's cell that runs the batches


def ledger_marks(stack: Stack, token: str) -> dict[int, dict[str, float]]:
    """Per batch of the newest patching run of the web stack, the moments of its ledger's
    batch_started, playbook_on_start, playbook_on_stats and batch_finished (the runner's own
    event times)."""
    client = RunsClient(f"{stack.hub_url}/services/runs", token)
    newest = "runs?runbook=patching&stack=web&active=0&finished=1"
    run_id = client.call("GET", newest, None, wire.RunList).runs[0].id
    marks: dict[int, dict[str, float]] = {}
    for event in client.events(run_id):
        moment = docker_time(event.client_at or event.at)
        if event.batch is not None and event.type in (
            "batch_started",
            "playbook_on_start",
            "playbook_on_stats",
            "batch_finished",
        ):
            marks.setdefault(event.batch, {})[event.type] = moment
    return marks


def batch_phases(marks: dict[int, dict[str, float]]) -> list[dict[str, float]]:
    """Per batch: bookkeeping before the play (silence, run record, runner start), the play, and
    the wait for the health gate after it (a scrape newer than the play's end)."""
    return [
        {
            "before_play": m["playbook_on_start"] - m["batch_started"],
            "play": m["playbook_on_stats"] - m["playbook_on_start"],
            "gate_wait": m["batch_finished"] - m["playbook_on_stats"],
        }
        for _, m in sorted(marks.items())
    ]


def notebook_time(text: str) -> float:
    """papermill's ISO time (UTC; older papermill writes it without a zone) -> epoch seconds."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def fixed_costs(notebook: dict[str, Any], marks: dict[int, dict[str, float]]) -> dict[str, float]:
    """The runbook's time outside its batches: from papermill's start of the notebook (stamped
    just before it launches the kernel) to the ledger's start of batch 1, and from the ledger's
    end of the last batch to the end of the last code cell (the summary)."""
    started = notebook_time(notebook["metadata"]["papermill"]["start_time"])
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    summary_end = notebook_time(code[-1]["metadata"]["papermill"]["end_time"])
    first, last = marks[min(marks)], marks[max(marks)]
    return {
        "to_first_batch": first["batch_started"] - started,
        "after_last_batch": summary_end - last["batch_finished"],
    }


KINDS = ("runbook", "handwritten", "plain")


def patch_overhead(stack: Stack, container: str, token: str, rounds: int) -> Figure:
    figure = Figure(
        "patch",
        "Patch overhead",
        "The web stack (three hosts) patched from scratch three times per round, the fleet "
        "reset before each (the hosts and the package repository recreated with fresh "
        "volumes, as the e2e tests do: every host at version 1, nothing approved): (a) the "
        "runbook `runbooks/patching.ipynb` by "
        "papermill in erin's container (`stack=web, batch_size=1, approve=all`, the gate's "
        f"load bar at {MACHINE_LOAD_BAR:g} as in the e2e tests: the fleet's load is the machine's) "
        "— kernel start, pre-checks (check.yml and a gate), the errata listed and promoted "
        "(by the runs service), a run in the ledger with every event recorded, and per batch: "
        "silence, patch.yml, reboot, health gate; then post-checks; (b) the hand-written "
        "equivalent, in the same container: the same errata promoted through the runs API, "
        "then `tests/bench/handwritten-patch.yml`, the baseline a team would write "
        "without Opsbook: one playbook, `serial: 1`, `max_fail_percentage: 0`, per batch the "
        "same Alertmanager silence (`uri`, expired at the batch's end), patch.yml's own tasks, "
        "and the same Prometheus gate through `uri` (a scrape newer than the patch, then up, "
        "load per CPU, free disk; asked every 0.5 s until it passes); (c) the bare plays by "
        "hand: the errata promoted through the runs API, then `ansible-playbook patch.yml "
        "--limit web-N` for web-1, web-2, web-3 one after the other (the same batches; no "
        "silence, no gate). Before (b) "
        "and (c), untimed, `opsbook-cert` renews the container's SSH certificate, as an engineer "
        "would before plays by hand (the runbook renews its own before each play). Each round "
        "rotates which goes first; all three must end with the same versions installed and "
        "every host rebooted.",
    )
    figure.context["before"] = Quiet.now().__dict__
    install_handwritten(stack)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    ratios, bare_ratios, rolling_ratios, rolling_bare_ratios = [], [], [], []
    breakdowns, plain_steps, handwritten_steps = [], [], []
    batches, handwritten_batches, fixed = [], [], []
    errata: list[dict[str, str]] | None = None
    for turn in range(rounds):
        order = KINDS[turn % 3 :] + KINDS[: turn % 3]
        if errata is None:
            order = KINDS
        ends = {}
        for which in order:
            log(f"patch round {turn + 1}: resetting the fleet")
            reset_fleet(BENCH)
            boots = {host: installed_and_booted(host)[1] for host in WEB}
            log(f"patch round {turn + 1}: {which}")
            if which == "runbook":
                elapsed, notebook = run_runbook(container, f"bench-patch-{turn + 1}.ipynb")
                errata = errata or approved_errata(notebook)
                breakdowns.append(cell_durations(notebook))
                marks = ledger_marks(stack, token)
                batches += batch_phases(marks)
                fixed.append(fixed_costs(notebook, marks))
            elif which == "handwritten":
                fresh_certificate(container)
                elapsed, steps, phases = run_handwritten(
                    container, errata, f"bench-handwritten-{turn + 1}.log"
                )
                handwritten_steps.append(steps)
                handwritten_batches += phases
            else:
                fresh_certificate(container)
                elapsed, steps = run_plain(container, errata, f"bench-plain-{turn + 1}.log")
                plain_steps.append(steps)
            times[which].append(elapsed)
            state = {host: installed_and_booted(host) for host in WEB}
            not_rebooted = [host for host in WEB if state[host][1] == boots[host]]
            if not_rebooted:
                raise RuntimeError(f"{which}: {not_rebooted} not rebooted")
            ends[which] = {host: state[host][0] for host in WEB}
            log(f"patch round {turn + 1}: {which} took {elapsed:.1f} s")
        if any(ends[kind] != ends["runbook"] for kind in KINDS):
            raise RuntimeError(f"the runbook and its baselines ended differently: {ends}")
        ratios.append(times["runbook"][-1] / times["handwritten"][-1])
        bare_ratios.append(times["runbook"][-1] / times["plain"][-1])
        rolling = next(t for line, t in breakdowns[-1] if line.startswith(ROLLING_CELL))
        rolling_ratios.append(rolling / handwritten_steps[-1]["patch"])
        rolling_bare_ratios.append(rolling / sum(plain_steps[-1][host] for host in WEB))
    figure.rows = [
        Row("the runbook (papermill), whole", times["runbook"], "s"),
        Row(
            "the hand-written equivalent: promotion (runs API), then handwritten-patch.yml",
            times["handwritten"],
            "s",
        ),
        Row(
            "the bare plays by hand: promotion (runs API), then patch.yml per batch",
            times["plain"],
            "s",
            note="no silence, no gate: a floor, not what a team would run",
        ),
        Row(
            "runbook / the hand-written equivalent (per round)",
            ratios,
            "x",
            "≤ 1.10 x",
            verdict(median(ratios) <= 1.10),
        ),
        Row("runbook / the bare plays (per round)", bare_ratios, "x"),
        Row(
            "like for like: the rolling patch cell / handwritten-patch.yml (per round)",
            rolling_ratios,
            "x",
            note="the batches alone: no pre- or post-checks, no errata review on either side",
        ),
        Row(
            "like for like: the rolling patch cell / the three `patch.yml` (per round)",
            rolling_bare_ratios,
            "x",
        ),
        Row(
            "the runbook's fixed cost: kernel start → batch 1 starts",
            [cost["to_first_batch"] for cost in fixed],
            "s",
            note="papermill's start of the notebook (just before the kernel launches) to the "
            "ledger's batch_started: setup, pre-checks, errata, the run registered",
        ),
        Row(
            "the runbook's fixed cost: last batch finished → summary printed",
            [cost["after_last_batch"] for cost in fixed],
            "s",
            note="the ledger's batch_finished to the end of the summary cell: post-checks, summary",
        ),
    ]
    figure.context["batches"] = batches
    figure.context["handwritten_batches"] = handwritten_batches
    figure.context["errata"] = errata
    figure.context["end_state"] = ends["runbook"]
    figure.context["runbook_cells"] = breakdowns
    figure.context["plain_steps"] = plain_steps
    figure.context["handwritten_steps"] = handwritten_steps
    figure.context["fixed_costs"] = fixed
    figure.context["after"] = Quiet.now().__dict__
    return figure


# --- noisy neighbours -----------------------------------------------------------------------------

TIMES_IDLE = 3.0  # the target: a probe's p95 during a drill at most this many times its idle p95


def asks(count: int) -> str:
    return f"{count} ask" if count == 1 else f"{count} asks"


def noisy_neighbours(
    stack: Stack, erin: HubSpawn, idle_rounds: int, answers: int, hogs: int
) -> Figure:
    """Issue 14's benchmark: what the others see while one engineer's processes run away (the
    drills of tests/e2e/test_noisy_neighbours.py, from tests/e2e/drills.py). erin's server must
    be running (`erin`); it is running and answering again afterwards."""
    figure = Figure(
        "noisy",
        "Noisy neighbours",
        "erin (group ops) runs a fork bomb, then a memory hog, in her own container (`docker "
        "exec` as her uid: her cgroup and limits, as from her terminal; tests/e2e/drills.py, "
        "the e2e tests' drills). Meanwhile three probes with bob's token, from this machine "
        "through the proxy, each request on a new connection, are asked in rounds (each once, "
        f"then a {drills.PAUSE * 1000:.0f} ms pause): the hub's API (`GET /hub/api/users/bob`), "
        "the runs service (`GET /services/runs/api/runs`) and bob's own server (`GET "
        f"/user/bob/api/contents`). Right before each drill, {idle_rounds} rounds with nothing "
        "running are its idle baseline. The fork bomb is measured from its start until it "
        f"holds erin's container at its process limit ({drills.PIDS_LIMIT}) and each probe has "
        f"answered {answers} more times; a bomb never ends by itself, so her server is then "
        "stopped and started again through the hub. The memory hog (32 MiB at a time, every "
        f"page touched) runs {hogs} times one after the other, each until the kernel kills it "
        f"at her limit ({drills.MEM_LIMIT_MIB} MiB, no swap); her server must answer "
        "afterwards (if not, it is restarted through the hub, and said so). The target compares "
        "p95s: a probe's p95 during the drill against its own idle p95 just before. A failed "
        "ask (an error, no answer within 10 s, or an answer other than 200) is no latency: it "
        "is counted in a note below, and a probe that failed during a drill misses its target.",
    )
    figure.context["before"] = Quiet.now().__dict__
    bob_user = signed_in(stack, "bob")
    bob = HubSpawn(stack, bob_user, bob_user.new_token("bench: bob"))
    log("noisy neighbours: bob's server")
    bob.start()
    neighbours = drills.neighbour_probes(
        stack.hub_url, bob_user.new_token("bench: noisy neighbours")
    )
    measured: dict[str, tuple[list[drills.Probe], list[drills.Probe]]] = {}
    try:
        log(f"noisy neighbours: {idle_rounds} idle rounds, then erin's fork bomb")
        idle = drills.idle_samples(neighbours(), idle_rounds)
        started = time.perf_counter()
        try:
            with drills.Watch(neighbours()) as watch:
                seen = drills.fork_bomb(erin.container, watch, answers)
        finally:
            bombed = time.perf_counter() - started
            log("noisy neighbours: erin's server stopped and started again through the hub")
            erin.stop()
            restart = erin.start()[0]
        measured["fork bomb"] = (idle, watch.probes)
        figure.context["fork_bomb"] = {
            "seconds": bombed,
            "pids_max": max(seen),
            "pids_limit": drills.PIDS_LIMIT,
            "restart_s": restart,
        }
        figure.notes.append(
            f"The fork bomb ran {bombed:.0f} s and held erin's container at up to {max(seen)} "
            f"processes of its {drills.PIDS_LIMIT}; her server was then stopped and started "
            f"again through the hub, answering {restart:.1f} s after it was asked for."
        )

        log(f"noisy neighbours: {idle_rounds} idle rounds, then erin's memory hog x {hogs}")
        idle = drills.idle_samples(neighbours(), idle_rounds)
        started = time.perf_counter()
        with drills.Watch(neighbours()) as watch:
            ended = [drills.memory_hog(erin.container) for _ in range(hogs)]
        hogged = time.perf_counter() - started
        measured["memory hog"] = (idle, watch.probes)
        restarted = not erin.answers(timeout=10)
        if restarted:
            log("noisy neighbours: erin's server did not answer after the hog; restarting it")
            if erin.server():
                erin.stop()
            erin.start()
        figure.context["memory_hog"] = {
            "seconds": hogged,
            "returncodes": [hog.returncode for hog in ended],
            "reached_mib": [hog.most for hog in ended],
            "mem_limit_mib": drills.MEM_LIMIT_MIB,
            "restarted": restarted,
        }
        codes = ", ".join(str(hog.returncode) for hog in ended)
        reached = ", ".join(str(hog.most) for hog in ended)
        figure.notes.append(
            f"The memory hogs ran {hogged:.0f} s in all; they ended with exit status {codes} "
            "(137: killed by the kernel's OOM killer) after reaching "
            f"{reached} MiB of erin's {drills.MEM_LIMIT_MIB} MiB. Her server "
            + (
                "did not answer afterwards and was restarted through the hub."
                if restarted
                else "answered afterwards without a restart."
            )
        )
    finally:
        bob.stop()

    failed = []
    for drill, (idle, during) in measured.items():
        for before, now in zip(idle, during, strict=True):
            idle_ms = [1000 * s for s in before.latencies] or [float("nan")]
            during_ms = [1000 * s for s in now.latencies] or [float("nan")]
            ratio = p95(during_ms) / p95(idle_ms)
            figure.rows += [
                Row(f"{now.name}, idle before the {drill}", idle_ms, "ms"),
                Row(f"{now.name}, during the {drill}", during_ms, "ms"),
                Row(
                    f"{now.name}: p95 during / p95 idle, {drill}",
                    [ratio],
                    "x",
                    f"≤ {TIMES_IDLE:g} x",
                    verdict(ratio <= TIMES_IDLE and not now.failures),
                    f"{asks(len(now.failures))} failed" if now.failures else "",
                ),
            ]
            for when, probe in ((f"idle before the {drill}", before), (f"during the {drill}", now)):
                if probe.failures:
                    asked = len(probe.latencies) + sum(
                        not failure.startswith("HTTP") for failure in probe.failures
                    )
                    shown = "; ".join(list(dict.fromkeys(probe.failures))[:3])
                    failed.append(
                        f"- **{probe.name}, {when}: {len(probe.failures)} of {asks(asked)} "
                        f"failed**: {shown}"
                    )
    if failed:
        # The empty note ends the list: what the page says next is not part of its last item.
        figure.notes += ["Failed asks (the first three distinct errors of each):", *failed, ""]
    else:
        figure.notes.append("No probe failed, idle or during either drill.")
    figure.context["after"] = Quiet.now().__dict__
    return figure


# --- memory ---------------------------------------------------------------------------------------


def idle_memory(container: str) -> list[float]:
    """One engineer's server alone, idle 30 s after it answered: three samples 5 s apart."""
    time.sleep(30)
    name = container_name(container)
    return memory_samples([name])[name]


def services_memory() -> dict[str, list[float]]:
    names = {service: container_name(service_container(service)) for service in ("hub", "runs")}
    samples = memory_samples(list(names.values()), every=3.0)
    return {service: samples[name] for service, name in names.items()}


def memory_figure(
    alone: list[float],
    ten: dict[str, Any],
    hub_idle: list[float],
    after_events: dict[str, list[float]],
) -> Figure:
    figure = Figure(
        "memory",
        "Memory",
        "`docker stats` memory in use (the engine's figure: usage without the page cache), in "
        "MiB. An idle engineer's server: started through the hub, nothing opened, 30 s after it "
        "answered. With ten: the ten bench engineers' servers of the last ten-at-once round, "
        "idle 30 s, each engineer's median of three samples 5 s apart; the hub and the proxy at "
        "the same moments. The runs service after it recorded the 10,000 events.",
    )
    idle = ten["idle_engineers_with_ten"]
    figure.rows = [
        Row(
            "idle engineer's server, alone (erin)",
            alone,
            "MiB",
            "< 120 MiB",
            verdict(median(alone) < 120),
        ),
        Row(
            "idle engineers' servers, ten running",
            idle,
            "MiB",
            "< 120 MiB",
            verdict(median(idle) < 120),
        ),
        Row("hub, no server running", hub_idle, "MiB"),
        Row("hub, ten servers running", ten["hub_with_ten"], "MiB"),
        Row("proxy, ten servers running", ten["proxy_with_ten"], "MiB"),
        Row("runs service, after 10,000 events", after_events["runs"], "MiB"),
    ]
    return figure
