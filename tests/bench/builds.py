"""Image sizes and build times: from nothing (a Debian root by debootstrap, every layer rebuilt)
and with the cache (the same builds again).

Built under tags of their own (opsbook-bench/<name>:nocache), each Dockerfile's `FROM
opsbook/base:bookworm` pointed at the bench's own base, so nothing `make up` or `make test` uses
is retagged or rebuilt; the tags are removed at the end. The same commands as
scripts/build-images.sh otherwise (plain `docker build`, no BuildKit).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.stack import ROOT, docker

from .common import Figure, Quiet, Row, log

PREFIX = "opsbook-bench"
TAG = "nocache"
ROOT_TAG = f"{PREFIX}/debian:bookworm"
BASE_TAG = f"{PREFIX}/base:bookworm"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")

# name, context, Dockerfile, extra build options: as scripts/build-images.sh builds them.
IMAGES = (
    ("proxy", "images/proxy", "images/proxy/Dockerfile", ()),
    ("hub", ".", "hub/Dockerfile", ()),
    ("singleuser", ".", "images/singleuser/Dockerfile", ()),
    ("runs", ".", "images/runs/Dockerfile", ()),
    ("idp", "images/idp", "images/idp/Dockerfile", ()),
    ("pkgrepo", "images/fleet", "images/fleet/repo.Dockerfile", ()),
    ("fleet-web", "images/fleet", "images/fleet/host.Dockerfile", ("--build-arg", "STACK=web")),
    ("fleet-db", "images/fleet", "images/fleet/host.Dockerfile", ("--build-arg", "STACK=db")),
    ("prometheus", "images/prometheus", "images/prometheus/Dockerfile", ()),
    ("alertmanager", "images/alertmanager", "images/alertmanager/Dockerfile", ()),
    ("recorder", "images/recorder", "images/recorder/Dockerfile", ()),
    ("postgres", "images/postgres", "images/postgres/Dockerfile", ()),
)


def extra_ca_certs() -> str:
    """EXTRA_CA_CERTS as scripts/build-images.sh finds it: the environment, else .env."""
    if os.environ.get("EXTRA_CA_CERTS"):
        return os.environ["EXTRA_CA_CERTS"]
    env = ROOT / ".env"
    if env.exists():
        for line in env.read_text().splitlines():
            if line.startswith("EXTRA_CA_CERTS="):
                return line.split("=", 1)[1].strip()
    return ""


def tag_of(name: str) -> str:
    return f"{PREFIX}/{name}:{TAG}"


def size_mb(tag: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()) / 1e6


def timed(args: list[str], what: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        args, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DOCKER_BUILDKIT": "0"}
    )
    if done.returncode:
        raise RuntimeError(f"{what} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - t0


def debian_root() -> float:
    """debootstrap --variant=minbase bookworm, then `docker import`: what images/base/build.sh
    does where no registry answers (this machine's case)."""
    workdir = Path(tempfile.mkdtemp(prefix="opsbook-bench-rootfs."))
    try:
        t0 = time.perf_counter()
        timed(
            ["debootstrap", "--variant=minbase", "bookworm", str(workdir / "root"), MIRROR],
            "debootstrap",
        )
        # The same trimming as build.sh, so the root is the same size as the project's.
        trim = (
            "eval \"$(sed -n '/^slim_like_official()/,/^}/p' images/base/build.sh)\"; "
            f"slim_like_official {workdir / 'root'}"
        )
        timed(["bash", "-c", trim], "trimming the root")
        subprocess.run(
            f"tar -C {workdir / 'root'} -c . | docker import - {ROOT_TAG}",
            shell=True,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def dockerfile_on_bench_base(dockerfile: str, workdir: Path) -> Path:
    text = (ROOT / dockerfile).read_text()
    text = text.replace("FROM opsbook/debian:bookworm", f"FROM {ROOT_TAG}")
    text = text.replace("FROM opsbook/base:bookworm", f"FROM {BASE_TAG}")
    path = workdir / dockerfile.replace("/", "_")
    path.write_text(text)
    return path


def build_all(no_cache: bool, workdir: Path) -> dict[str, float]:
    cache = ["--no-cache"] if no_cache else []
    times = {}
    base_context = workdir / "base-context"
    if not base_context.exists():
        shutil.copytree(ROOT / "images" / "base", base_context)
        extra = extra_ca_certs()
        ca = base_context / "extra-ca-certs.pem"
        ca.write_text(Path(extra).read_text() if extra else "")
    dockerfile = dockerfile_on_bench_base("images/base/Dockerfile", workdir)
    times["base"] = timed(
        ["docker", "build", *cache, "-q", "-t", BASE_TAG, "-f", str(dockerfile), str(base_context)],
        "build of base",
    )
    for name, context, dockerfile_path, options in IMAGES:
        dockerfile = dockerfile_on_bench_base(dockerfile_path, workdir)
        times[name] = timed(
            [
                "docker",
                "build",
                *cache,
                "-q",
                *options,
                "-t",
                tag_of(name),
                "-f",
                str(dockerfile),
                context,
            ],
            f"build of {name}",
        )
        log(f"build ({'no cache' if no_cache else 'cached'}): {name} {times[name]:.0f} s")
    return times


def remove_bench_images() -> None:
    tags = [tag_of(name) for name, *_ in IMAGES] + [BASE_TAG, ROOT_TAG]
    docker("rmi", "-f", *tags, check=False)


def images_figure() -> Figure:
    figure = Figure(
        "images",
        "Images",
        "Every image the project builds, built twice in a row with `docker build` (no BuildKit), "
        "base first, as scripts/build-images.sh does: from nothing (a Debian bookworm root by "
        f"`debootstrap --variant=minbase` from {MIRROR} and `docker import`, as "
        "images/base/build.sh does where no registry answers, then every image with "
        "`--no-cache`: every package downloaded again), then with the cache (nothing "
        "changed: every layer reused). Sizes are the engine's (uncompressed, base layers "
        "included; images share the base).",
    )
    figure.context["before"] = Quiet.now().__dict__
    workdir = Path(tempfile.mkdtemp(prefix="opsbook-bench-build."))
    try:
        remove_bench_images()
        log("images: Debian root by debootstrap")
        root_s = debian_root()
        fresh = build_all(True, workdir)
        cached = build_all(False, workdir)
        sizes = {name: size_mb(tag_of(name)) for name, *_ in IMAGES}
        sizes["base"] = size_mb(BASE_TAG)
        root_mb = size_mb(ROOT_TAG)
    finally:
        remove_bench_images()
        shutil.rmtree(workdir, ignore_errors=True)
    rows = [Row("Debian root (debootstrap + import)", [root_s], "s", note=f"{root_mb:.0f} MB")]
    for name in ["base", *[n for n, *_ in IMAGES]]:
        rows.append(
            Row(
                f"{name}: from nothing / with the cache",
                [fresh[name]],
                "s",
                note=f"{cached[name]:.1f} s with the cache; {sizes[name]:.0f} MB",
            )
        )
    figure.context["sizes_mb"] = sizes
    figure.context["fresh_s"] = fresh
    figure.context["cached_s"] = cached
    figure.context["root_s"] = root_s
    figure.rows = rows
    figure.rows.append(
        Row("all images from nothing (root included)", [root_s + sum(fresh.values())], "s")
    )
    figure.rows.append(Row("all images with the cache", [sum(cached.values())], "s"))
    figure.context["after"] = Quiet.now().__dict__
    return figure


def sizes_figure() -> Figure:
    """Only the sizes, of the images the stack ran (opsbook/<name>:0.1.0): no build timed."""
    figure = Figure(
        "images",
        "Images",
        "Sizes of the images the bench stack ran (`opsbook/<name>:0.1.0`, the engine's "
        "uncompressed size, base layers included). Build times were not measured in this run.",
    )
    tags = {"base": "opsbook/base:bookworm"}
    tags.update({name: f"opsbook/{name}:0.1.0" for name, *_ in IMAGES})
    figure.rows = [Row(name, [size_mb(tag)], "MB") for name, tag in tags.items()]
    return figure
