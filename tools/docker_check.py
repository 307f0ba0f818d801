"""Build the real Dockerfile with buildah on a locally made Debian base and run tb inside it.

`make docker-check` (root; `apt-get install debootstrap buildah`). Where there is no Docker engine
and no registry to pull `python:3.11-slim-bookworm` from, the base image is made here:
debootstrap builds a bookworm root (its python3 is 3.11) from the Debian mirror apt already uses,
and buildah commits it as a local image. `buildah bud --isolation chroot` then runs the
Dockerfile's steps unchanged, with `BASE_IMAGE` and `TORCH_INDEX_URL` as build arguments, and
pip inside the build reaches packages the way this machine's pip does: its configuration
(`pip config list`) is read at run time, local index and wheel folders are mounted read-only at
the same paths, and the settings are passed as the Dockerfile's `PIP_*` build arguments.

The checks run as the image's user in /data, a folder mounted from here, and each prints PASS or
FAIL; the build time and image size come last. Exit status 1 if the build or any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
BASE_TAG = "localhost/tb-check-base:bookworm"
IMAGE_TAG = "localhost/tb:check"
PYPI = "https://pypi.org/simple"
IN_BUILD_PIP_DIR = "/run/tb-host-pip"  # where pip's constraint and cert files are mounted


def sh(*argv: str, capture: bool = True, check: bool = True) -> str:
    """Run a command; its stdout, stripped."""
    result = subprocess.run(argv, text=True, check=False,
                            stdout=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        sys.exit(f"docker-check: `{' '.join(argv[:3])} ...` failed (exit {result.returncode})")
    return (result.stdout or "").strip()


def debian_mirror(suite: str) -> str:
    """The Debian mirror apt uses on this machine for `suite` (read, never written down)."""
    lines = sh("apt-get", "indextargets", "--format", "$(REPO_URI) $(CODENAME) $(TARGET_OF)")
    for line in lines.splitlines():
        uri, codename, target = [*line.split(), "", "", ""][:3]
        if codename == suite and target == "deb" and "security" not in uri:
            return uri
    sys.exit(f"docker-check: apt has no source for Debian {suite}; add one or pass --mirror")


def image_exists(tag: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", tag],
                          capture_output=True, check=False).returncode == 0


def make_base(suite: str, mirror: str | None) -> None:
    """A minimal Debian root with python3 and venv, committed as a local image."""
    mirror = mirror or debian_mirror(suite)
    print(f"== base image: debootstrap {suite} (Python 3.11 from Debian) -> {BASE_TAG}")
    ctr = sh("buildah", "from", "scratch")
    try:
        root = sh("buildah", "mount", ctr)
        sh("debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
           suite, root, mirror, capture=False)
        sh("buildah", "umount", ctr)
        sh("buildah", "config", "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash", ctr)
        sh("buildah", "commit", "--quiet", ctr, BASE_TAG)
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)


@dataclass
class PipSettings:
    """What the build needs to reach packages as this machine's pip does."""

    build_args: dict[str, str]
    volumes: list[str]  # buildah --volume specs, all read-only


def _pip_config() -> dict[str, str]:
    """`pip config list`, environment entries winning over files as they do for pip."""
    text = subprocess.run([sys.executable, "-m", "pip", "config", "list"], text=True,
                          capture_output=True, check=False).stdout
    found: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        match = re.match(r"^(\S*?)\.([\w-]+)='(.*)'$", line)
        if match:
            scope, key, value = match.groups()
            rank = 1 if scope == ":env:" else 0
            if key not in found or rank >= found[key][0]:
                found[key] = (rank, value)
    return {key: value for key, (_, value) in found.items()}


def _local_dir(location: str) -> Path | None:
    """The folder behind a file:// URL or a plain path, if it exists here."""
    path = Path(urlparse(location).path) if location.startswith("file://") else Path(location)
    return path if path.is_absolute() and path.exists() else None


def pip_settings(torch_index: str | None) -> tuple[PipSettings, str]:
    """Build arguments and mounts from this machine's pip configuration, and the torch index."""
    config = _pip_config()
    args: dict[str, str] = {}
    mounts: set[Path] = set()
    for key, arg in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL"),
                     ("find-links", "PIP_FIND_LINKS")):
        if key not in config:
            continue
        args[arg] = config[key]
        for location in config[key].split():
            folder = _local_dir(location)
            if folder is None:
                continue
            if key != "find-links":
                # A local "simple" index links its files relative to itself (../../files/):
                # mount the folder above it too.
                folder = folder.parent
            mounts.add(folder)
    volumes = [f"{folder}:{folder}:ro" for folder in sorted(mounts)]
    for key, arg in (("constraint", "PIP_CONSTRAINT"), ("cert", "PIP_CERT")):
        if key in config and Path(config[key]).is_file():
            inside = f"{IN_BUILD_PIP_DIR}/{arg.lower()}{Path(config[key]).suffix}"
            volumes.append(f"{Path(config[key]).resolve()}:{inside}:ro")
            args[arg] = inside
    # By default torch comes from pip's own index, as every other package does: a local index
    # that serves torch may lack its CUDA dependencies (pip then falls back to an older torch
    # from elsewhere, with a torchvision built for another torch: `torchvision::nms does not
    # exist`, which the Dockerfile's import check catches).
    return PipSettings(args, volumes), torch_index or config.get("index-url", PYPI)


def image_size(tag: str) -> str:
    """As buildah reports it (uncompressed, all layers), e.g. "7.07 GB"."""
    data = json.loads(sh("buildah", "images", "--json", tag) or "[]")
    size = data[0].get("size") if data else None
    if isinstance(size, int | float):
        return f"{size / 1e9:.2f} GB"
    return str(size or "unknown")


def build(settings: PipSettings, torch_index: str) -> float:
    # The Docker image format, as `docker build` makes: OCI has no SHELL, so buildah would
    # drop the Dockerfile's `SHELL ["/bin/bash", "-o", "pipefail", "-c"]` (and pipefail).
    argv = ["buildah", "bud", "--isolation", "chroot", "--layers", "--format", "docker", "-f",
            str(REPO / "Dockerfile"), "-t", IMAGE_TAG,
            "--build-arg", f"BASE_IMAGE={BASE_TAG}", "--build-arg",
            f"TORCH_INDEX_URL={torch_index}"]
    for key, value in settings.build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    for volume in settings.volumes:
        argv += ["--volume", volume]
    print(f"== build: Dockerfile -> {IMAGE_TAG} (torch from {torch_index})", flush=True)
    start = time.perf_counter()
    result = subprocess.run([*argv, str(REPO)], check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"docker-check: the build failed after {seconds:.0f} s (exit "
                 f"{result.returncode})")
    return seconds


@dataclass
class Check:
    name: str
    argv: list[str]
    expect: str | None = None  # a regular expression the output must contain
    files: str | None = None  # a glob under the mounted folder that must match something


MAKE_IMAGES = ("import numpy as np, imageio.v3 as iio, pathlib\n"
               "rng = np.random.default_rng(0)\n"
               "for c in ('cat', 'dog'):\n"
               "    d = pathlib.Path('imgs', c); d.mkdir(parents=True, exist_ok=True)\n"
               "    for i in range(3):\n"
               "        iio.imwrite(d / f'{i}.png', rng.integers(0, 255, (48, 64, 3), np.uint8))\n")

CHECKS = [
    Check("tb --help", ["tb", "--help"], expect=r"augment"),
    Check("tb --version", ["tb", "--version"], expect=r"\d+\.\d+"),
    Check("tb models list", ["tb", "models", "list", "--filter", "resnet", "--limit", "3"],
          expect=r"resnet"),
    Check("tb summary resnet18", ["tb", "summary", "resnet18"], expect=r"11[.,]\d"),
    Check("test images", ["python", "-c", MAKE_IMAGES], files="imgs/*/*.png"),
    Check("tb augment", ["tb", "augment", "imgs", "out", "--seed", "0", "--copies", "2"],
          files="out/*/*_aug1.png"),
    Check("tb finetune", ["tb", "finetune", "--freeze", "--amp", "--epochs", "1"],
          files="runs/**/*.pt"),
    Check("import cv2", ["python", "-c", "import cv2; print(cv2.__version__)"],
          expect=r"\d+\.\d+"),
]


def run_checks(data: Path, extra: dict[str, list[str]]) -> list[tuple[str, bool, float]]:
    """Each check as the image's user in /data (a folder mounted from here)."""
    ctr = sh("buildah", "from", "--quiet", IMAGE_TAG)
    results = []
    try:
        uid = sh("buildah", "run", "--isolation", "chroot", ctr, "--", "id", "-u", "tb")
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(parents=True)
        os.chown(data, int(uid), int(uid))
        for check in CHECKS:
            argv = ["buildah", "run", "--isolation", "chroot", "--user", "tb",
                    "--workingdir", "/data", "--volume", f"{data}:/data",
                    "--env", "HF_HUB_OFFLINE=1", ctr, "--", *check.argv,
                    *extra.get(check.name, [])]
            start = time.perf_counter()
            result = subprocess.run(argv, text=True, capture_output=True, check=False)
            seconds = time.perf_counter() - start
            output = result.stdout + result.stderr
            (data.parent / f"{re.sub(r'[^a-z0-9]+', '-', check.name)}.log").write_text(output)
            ok = result.returncode == 0
            why = f"exit {result.returncode}"
            if ok and check.expect and not re.search(check.expect, output):
                ok, why = False, f"output lacks /{check.expect}/"
            if ok and check.files and not list(data.glob(check.files)):
                ok, why = False, f"no {check.files} written"
            print(f"{'PASS' if ok else 'FAIL'}  {check.name:<20} {seconds:6.1f} s"
                  f"{'' if ok else '  (' + why + ')'}", flush=True)
            if not ok:
                print("      " + "\n      ".join(output.strip().splitlines()[-15:]))
            results.append((check.name, ok, seconds))
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="bookworm", help="Debian release of the base image")
    parser.add_argument("--mirror", help="Debian mirror (default: the one apt uses here)")
    parser.add_argument("--torch-index", default=os.environ.get("TORCH_INDEX_URL"),
                        help="index for torch/torchvision (default: pip's own index here)")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/tb-docker-check"),
                        help="folder mounted as /data for the checks")
    parser.add_argument("--finetune-args", default="",
                        help="extra arguments for the finetune check, e.g. '--model NAME'")
    parser.add_argument("--rebuild-base", action="store_true", help="make the base image anew")
    parser.add_argument("--remove", action="store_true",
                        help="remove the built images (not the base) and buildah's layer cache "
                             "at the end")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("docker-check: run as root (debootstrap and buildah's chroot isolation)")
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"docker-check: {' and '.join(missing)} missing; apt-get install "
                 f"{' '.join(missing)}")

    if opts.rebuild_base or not image_exists(BASE_TAG):
        make_base(opts.suite, opts.mirror)
    settings, torch_index = pip_settings(opts.torch_index)
    seconds = build(settings, torch_index)
    size = image_size(IMAGE_TAG)
    print(f"== checks in {IMAGE_TAG}, as user tb in /data (mounted from {opts.work / 'data'}; "
          f"each check's output in {opts.work}/*.log)")
    results = run_checks(opts.work / "data", {"tb finetune": opts.finetune_args.split()})
    print(f"== build {seconds:.0f} s, image {size}, "
          f"{sum(ok for _, ok, _ in results)}/{len(results)} checks passed")
    if opts.remove:
        subprocess.run(["buildah", "rmi", IMAGE_TAG], capture_output=True, check=False)
        subprocess.run(["buildah", "rmi", "--prune"], capture_output=True, check=False)
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)


if __name__ == "__main__":
    main()
