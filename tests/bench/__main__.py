"""`make bench`: wait for a quiet machine, bring up the bench stack, measure every figure back to
back, remove everything the bench made, time the image builds, write docs/benchmarks.md.

    python -m tests.bench [--skip-builds] [--report-only] [--only spawn,login,...]

--only measures some figures (spawn spawn10 spawn-runs storm login gate certs approval runs patch
noisy images) into build/bench-stack/partial.json, for working on the harness; docs/benchmarks.md
is only written from a whole run. OPSBOOK_KEEP_STACK=1 keeps the bench stack up afterwards.

The bench stack is the compose project opsbook-bench, on host ports 28000 (hub), 29000 (provider)
and 29090 (Prometheus). OPSBOOK_BENCH_PROJECT names another project, with OPSBOOK_BENCH_HUB_PORT,
OPSBOOK_BENCH_IDP_PORT and OPSBOOK_BENCH_PROMETHEUS_PORT for other ports, so that a second checkout
or engineer measures on a stack of its own without touching this one: its containers, volumes and
networks are named after it, and its results go to build/<project>-stack/ instead.

Settings (environment): BENCH_QUIET_TIMEOUT (s to wait for a quiet machine, 2700), BENCH_BUSY_OK=1
(measure even if it never got quiet, saying so), BENCH_SPAWNS (5), BENCH_TEN_ROUNDS (3),
BENCH_STORM (30), BENCH_LOGINS (20), BENCH_GATES (20), BENCH_EVENTS (10000), BENCH_PAGES (20),
BENCH_PATCH_PAIRS (3), BENCH_NOISY_IDLE (40 idle rounds of the probes before each drill),
BENCH_NOISY_ANSWERS (40 answers of each probe at the fork bomb's limit), BENCH_NOISY_HOGS (3),
BENCH_SPAWN_RUNS (3: how many times the two spawn figures are measured in one bench).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.e2e import stack as stacks
from tests.e2e.stack import ROOT, docker

from . import builds, figures, report
from .common import BENCH, RESULTS_FILE, Figure, log, wait_until_quiet

DOC = ROOT / "docs" / "benchmarks.md"
# One line per whole run (its summary), so that the page shows whether figures hold across reruns.
HISTORY = ROOT / "docs" / "bench-history.jsonl"


def setting(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    meminfo = Path("/proc/meminfo").read_text().split()
    memory_kib = int(meminfo[meminfo.index("MemTotal:") + 1])
    compose = (
        "docker-compose "
        + subprocess.run(
            ["docker-compose", "version", "--short"], capture_output=True, text=True
        ).stdout.strip()
        if shutil.which("docker-compose")
        else "docker compose v2"
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory_kib / 2**20,
        "docker": docker("version", "--format", "{{.Server.Version}}").stdout.strip(),
        "compose": compose,
        "kernel": f"Linux {platform.release()}",
        "commit": commit + (" with uncommitted changes" if dirty else ""),
    }


def stack_images() -> dict[str, str]:
    """The images the bench runs, as `make up` (or `make build`) built them: never rebuilt here
    (a build would retag what `make up` and `make test` run, and load the machine)."""
    found = {}
    for name in ("proxy", "hub", "singleuser", "runs", *stacks.IMAGES):
        tag = f"opsbook/{name}:0.1.0"
        inspected = docker("image", "inspect", "--format", "{{.Id}} {{.Created}}", tag, check=False)
        if inspected.returncode:
            raise SystemExit(f"bench: image {tag} is not built; run `make up` (or `make build`)")
        image_id, created = inspected.stdout.split()
        found[name] = f"{image_id[7:19]}, built {created[:16].replace('T', ' ')} UTC"
    return found


def timed(measure: Callable[[], Any]) -> Any:
    t0 = time.monotonic()
    result = measure()
    figure = result[0] if isinstance(result, tuple) else result
    figure.seconds = time.monotonic() - t0
    return result


def measure_stack(results: dict[str, Any], only: set[str] | None) -> list[Figure]:
    """Every figure that needs the stack, back to back; the stack is removed afterwards. A figure
    that fails is said in the page's "Not measured" (with its error) and the others go on."""

    def wanted(key: str) -> bool:
        return only is None or key in only

    def measure(key: str, how: Callable[[], Any]) -> Any:
        """`how`'s result, timed, its figure kept; None if it failed."""
        try:
            result = timed(how)
        except Exception as error:
            log(f"{key}: failed ({error!r}); going on with the other figures")
            results["not_measured"].append(f"{key}: the measurement failed ({error})")
            return None
        done.append(result[0] if isinstance(result, tuple) else result)
        return result

    log(f"bringing up the bench stack (compose project {BENCH.project})")
    stack = stacks.up(BENCH)
    done: list[Figure] = []
    try:
        results["settled_after_up"] = wait_until_quiet(180)
        spawns, rounds = setting("BENCH_SPAWNS", 5), setting("BENCH_TEN_ROUNDS", 3)
        one = ten = ten_memory = None
        if wanted("spawn") or wanted("spawn-runs"):
            one = measure("spawn", lambda: figures.spawn_one(stack, spawns))
        hub_idle = figures.services_memory()["hub"]
        if wanted("spawn10") or wanted("memory") or wanted("spawn-runs"):
            ten, ten_memory = measure("spawn10", lambda: figures.spawn_ten(stack, rounds)) or (
                None,
                None,
            )
        if wanted("storm"):
            measure("storm", lambda: figures.login_storm(stack, setting("BENCH_STORM", 30)))
        if wanted("login"):
            measure("login", lambda: figures.login(stack, setting("BENCH_LOGINS", 20)))
        if wanted("approval"):
            measure(
                "approval",
                lambda: figures.approval_round_trip(stack, setting("BENCH_APPROVALS", 10)),
            )
        if wanted("spawn-runs") and one is not None and ten is not None:
            measure(
                "spawn-runs",
                lambda: figures.spawn_runs(
                    stack, (one, ten), setting("BENCH_SPAWN_RUNS", 3), spawns, rounds
                ),
            )
        if not any(wanted(key) for key in ("memory", "gate", "runs", "patch", "certs", "noisy")):
            return done

        log("erin's server for the gate, the runs service, the patch and the noisy neighbours")
        erin = figures.signed_in(stack, "erin")
        token = erin.new_token("bench: runs pages")
        spawn = figures.HubSpawn(stack, erin, erin.new_token("bench: erin"))
        spawn.start()
        alone = figures.idle_memory(spawn.container) if wanted("memory") else None
        if wanted("gate"):
            measure(
                "gate",
                lambda: figures.health_gate(stack, spawn.container, setting("BENCH_GATES", 20)),
            )
        if wanted("certs"):
            measure(
                "certs",
                lambda: figures.certificates(spawn.container, setting("BENCH_CERTS", 50)),
            )
        if wanted("runs") or wanted("memory"):
            ran = measure(
                "runs",
                lambda: figures.runs_service(
                    stack,
                    spawn.container,
                    token,
                    setting("BENCH_EVENTS", 10000),
                    setting("BENCH_PAGES", 20),
                ),
            )
            if ran is not None and ten_memory is not None and alone is not None:
                after_events = figures.services_memory()
                done.append(figures.memory_figure(alone, ten_memory, hub_idle, after_events))
        if wanted("patch"):
            measure(
                "patch",
                lambda: figures.patch_overhead(
                    stack, spawn.container, token, setting("BENCH_PATCH_PAIRS", 3)
                ),
            )
        if wanted("noisy"):
            # Last: the drills load the machine (the load average stays up for minutes after
            # them), and restart erin's server (it answers again afterwards).
            measure(
                "noisy",
                lambda: figures.noisy_neighbours(
                    stack,
                    spawn,
                    setting("BENCH_NOISY_IDLE", 40),
                    setting("BENCH_NOISY_ANSWERS", 40),
                    setting("BENCH_NOISY_HOGS", 3),
                ),
            )
    finally:
        if os.environ.get("OPSBOOK_KEEP_STACK") != "1":
            log("removing the bench stack, its servers and volumes")
            stacks.down(BENCH)
    return done


def order(figs: list[Figure]) -> list[Figure]:
    wanted = [
        "spawn",
        "spawn10",
        "spawn-runs",
        "storm",
        "login",
        "patch",
        "certs",
        "approval",
        "gate",
        "runs",
        "memory",
        "noisy",
        "images",
    ]
    return sorted(figs, key=lambda f: wanted.index(f.key) if f.key in wanted else 99)


def history() -> list[dict[str, Any]]:
    if not HISTORY.exists():
        return []
    return [json.loads(line) for line in HISTORY.read_text().splitlines() if line.strip()]


def write(results: dict[str, Any], partial: bool = False, measured: bool = False) -> None:
    """The results, and from a whole run the page; a run `measured` just now joins the history
    (rendering an earlier run again does not)."""
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    if partial:
        path = RESULTS_FILE.with_name("partial.json")
        path.write_text(json.dumps(results, indent=1))
        log(f"wrote {path.relative_to(ROOT)}; preview: python -m tests.bench --report-only {path}")
        return
    RESULTS_FILE.write_text(json.dumps(results, indent=1))
    if measured:
        with HISTORY.open("a") as lines:
            lines.write(json.dumps(report.history_entry(results), ensure_ascii=False) + "\n")
    DOC.write_text(report.render(results, history()))
    log(f"wrote {DOC.relative_to(ROOT)} (raw results: {RESULTS_FILE.relative_to(ROOT)})")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    parser.add_argument("--skip-builds", action="store_true", help="no image build timings")
    parser.add_argument(
        "--report-only",
        nargs="?",
        const=str(RESULTS_FILE),
        metavar="RESULTS",
        help="render results (the last whole run's by default) to stdout, measuring nothing",
    )
    parser.add_argument("--only", help="comma-separated figures, for working on the harness")
    arguments = parser.parse_args()
    if arguments.report_only:
        results = json.loads(Path(arguments.report_only).read_text())
        if Path(arguments.report_only) == RESULTS_FILE:
            write(results)
        else:
            print(report.render(results, history()))
        return 0
    only = set(arguments.only.split(",")) if arguments.only else None

    started = time.monotonic()
    quiet = wait_until_quiet(setting("BENCH_QUIET_TIMEOUT", 2700))
    if not quiet["quiet"] and os.environ.get("BENCH_BUSY_OK") != "1":
        log(
            f"the machine did not get quiet in {quiet['waited_s']} s (CPUs "
            f"{quiet['busy']:.0%} busy, load {quiet['load1']}, "
            f"{quiet.get('test_containers', 0)} opsbook-test containers): nothing measured. "
            "BENCH_BUSY_OK=1 measures anyway (and says so in the page)."
        )
        return 2
    images = stack_images()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "quiet": quiet,
        "not_measured": [],
        "images": images,
    }
    figs = []
    if only is None or only - {"images"}:
        figs = measure_stack(results, only)
    if arguments.skip_builds or (only is not None and "images" not in only):
        results["not_measured"].append("image build times (run without --skip-builds)")
        figs.append(builds.sizes_figure())
    else:
        try:
            figs.append(timed(builds.images_figure))
        except (RuntimeError, subprocess.CalledProcessError) as error:
            # The figures measured so far are kept; the page says why the builds are missing.
            log(f"image builds failed: {error}")
            results["not_measured"].append(f"image build times: the build failed ({error})")
            figs.append(builds.sizes_figure())
    results["figures"] = [f.to_dict() for f in order(figs)]
    results["seconds"] = time.monotonic() - started
    write(results, partial=only is not None, measured=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
