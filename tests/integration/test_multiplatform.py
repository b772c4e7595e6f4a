"""Multi-platform builds (issue 16): ``--platform linux/amd64,linux/arm64`` builds both images in
one solve, pushes an index, runs arm64 RUN steps under QEMU (Debian's qemu-user-static), and
keeps every platform's records in one registry cache ref.

The base is an index of two busybox-static images (the host's, and Debian's arm64 one,
``tests.support.busybox.push_busybox_index``); skopeo and umoci read what mason pushed.
"""

from __future__ import annotations

import json
import os
import platform as host
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest
from tests.support.cachebuild import Build, Builder, skopeo_raw
from tests.support.registry_server import RegistryServer

from mason.digest import sha256_bytes

pytestmark = pytest.mark.skipif(
    host.machine() != "x86_64", reason="the multi-platform base is amd64 + arm64 on an amd64 host"
)

PLATFORMS = "linux/amd64,linux/arm64"

DOCKERFILE = """\
ARG BASE=busybox
FROM --platform=$BUILDPLATFORM $BASE AS tools
ARG TARGETARCH
RUN echo "made on $(uname -m) for $TARGETARCH" > /tool.txt

FROM $BASE
ARG TARGETPLATFORM
COPY --from=tools /tool.txt /tool.txt
RUN uname -m > /arch && echo "$TARGETPLATFORM" > /target
RUN cat /arch /target > /both
"""


@pytest.fixture(scope="module")
def multi_base(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``REG/base/busybox-multi:latest``: an OCI index of an amd64 and an arm64 busybox."""
    from tests.support.busybox import BUSYBOX, push_busybox_index

    from mason.registry.client import RegistryClient

    for tool in (BUSYBOX, "/usr/bin/qemu-aarch64-static"):
        if not Path(tool).exists():
            pytest.skip(f"{tool} is missing (bash scripts/setup.sh test installs it)")
    ref = f"{registry.host}/base/busybox-multi:latest"
    with RegistryClient() as client:
        push_busybox_index(client, ref, tmp_path_factory.mktemp("busybox-multi"))
    return ref


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "Dockerfile").write_text(DOCKERFILE)
    return d


def _platforms(index: dict[str, object]) -> list[str]:
    entries = index["manifests"]
    assert isinstance(entries, list)
    return [f"{e['platform']['os']}/{e['platform']['architecture']}" for e in entries]


def _umoci_files(tmp: Path, ref: str, name: str) -> dict[str, dict[str, str]]:
    """Per platform, the files mason's RUN steps wrote, as umoci unpacks the image."""
    layout = tmp / f"layout-{name}"
    subprocess.run(
        ["skopeo", "copy", "--all", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:x"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    index = json.loads((layout / "index.json").read_text())
    (top,) = index["manifests"]
    blob = layout / "blobs" / "sha256" / top["digest"].split(":", 1)[1]
    out = {}
    for entry in json.loads(blob.read_text())["manifests"]:
        arch = entry["platform"]["architecture"]
        bundle = tmp / f"bundle-{name}-{arch}"
        tagged = layout.with_name(f"{layout.name}-{arch}")
        shutil.copytree(layout, tagged)
        # umoci unpacks a manifest by tag: tag this platform's manifest
        tagged_index = {
            **index,
            "manifests": [{**entry, "annotations": {"org.opencontainers.image.ref.name": arch}}],
        }
        (tagged / "index.json").write_text(json.dumps(tagged_index))
        subprocess.run(
            ["umoci", "unpack", "--rootless", "--image", f"{tagged}:{arch}", str(bundle)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        rootfs = bundle / "rootfs"
        out[arch] = {f: (rootfs / f).read_text() for f in ("arch", "target", "both", "tool.txt")}
    return out


def _all_steps_cached(b: Build) -> None:
    assert b.steps, b.output
    assert not b.ran, f"steps that ran: {sorted(b.ran)}\n{b.output[-3000:]}"


def test_two_platforms_push_an_index_and_rebuild_from_the_registry_cache(
    tmp_path: Path, registry: RegistryServer, multi_base: str, ctx: Path
) -> None:
    build = Builder(tmp_path, multi_base)
    image = f"{registry.host}/multi/app:1"
    cache = f"{registry.host}/multi/cache:latest"
    first = build(
        ctx,
        "--platform",
        PLATFORMS,
        "--push",
        "-t",
        image,
        "--cache-to",
        f"type=registry,ref={cache},mode=max",
        "--progress=plain",
    ).check()
    index, raw = skopeo_raw(image)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert _platforms(index) == ["linux/amd64", "linux/arm64"]
    assert first.digest == sha256_bytes(raw)
    # the BUILDPLATFORM stage ran once per TARGETARCH it sees; each image's RUNs per platform
    files = _umoci_files(tmp_path, image, "first")
    assert files["arm64"]["arch"] == "aarch64\n"
    assert files["amd64"]["arch"] == "x86_64\n"
    assert files["arm64"]["target"] == "linux/arm64\n"
    assert files["arm64"]["tool.txt"] == "made on x86_64 for arm64\n"
    assert files["amd64"]["tool.txt"] == "made on x86_64 for amd64\n"
    assert "emulated by qemu-aarch64" in first.output

    # a wiped root, the registry cache: every step of both platforms hits, same index
    again = build(
        ctx,
        "--platform",
        PLATFORMS,
        "--push",
        "-t",
        image,
        "--cache-from",
        f"type=registry,ref={cache}",
        "--progress=plain",
    ).check()
    _all_steps_cached(again)
    assert len(again.cached) == len(first.steps)
    assert again.digest == first.digest

    # one platform exporting to the same ref keeps the other's records ...
    arm = build(
        ctx,
        "--platform",
        "linux/arm64",
        "--cache-from",
        f"type=registry,ref={cache}",
        "--cache-to",
        f"type=registry,ref={cache},mode=max",
        "--progress=plain",
    ).check()
    _all_steps_cached(arm)
    # ... so amd64 alone, on a fresh root, still hits every step
    amd = build(
        ctx,
        "--platform",
        "linux/amd64",
        "--cache-from",
        f"type=registry,ref={cache}",
        "--push",
        "-t",
        f"{registry.host}/multi/app:amd64",
        "--progress=plain",
    ).check()
    _all_steps_cached(amd)
    manifests = index["manifests"]
    assert isinstance(manifests, list)
    assert amd.digest == manifests[0]["digest"]


def test_step_names_carry_the_platform_and_shared_steps_run_once(
    tmp_path: Path, multi_base: str
) -> None:
    ctx = tmp_path / "shared"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "ARG BASE=busybox\n"
        "FROM --platform=$BUILDPLATFORM $BASE AS gen\n"
        "RUN echo generated > /gen.txt\n"
        "FROM $BASE\n"
        "COPY --from=gen /gen.txt /gen.txt\n"
    )
    out = tmp_path / "out"
    oci = tmp_path / "image.tar"
    b = Builder(tmp_path, multi_base)(
        ctx,
        "--platform",
        PLATFORMS,
        "-o",
        f"type=local,dest={out}",
        "-o",
        f"type=oci,dest={oci},oci-mediatypes=false",
        "--progress=plain",
    ).check()
    # one vertex (one progress number) for both images: the step ran once
    gen_runs = set(re.findall(r"^#(\d+) (\[[^\]]*\] RUN echo generated.*)$", b.output, re.M))
    assert [t for _, t in gen_runs] == ["[linux/amd64 gen 2/2] RUN echo generated > /gen.txt"]
    uses = set(re.findall(r"^#(\d+) \[(linux/\w+) stage-1 2/2\] COPY --from=gen", b.output, re.M))
    assert sorted(p for _, p in uses) == ["linux/amd64", "linux/arm64"]  # ... used by both
    # a local output has one folder per platform, named as buildx names them
    assert sorted(p.name for p in out.iterdir()) == ["linux_amd64", "linux_arm64"]
    assert (out / "linux_arm64" / "gen.txt").read_text() == "generated\n"
    arm_busybox = (out / "linux_arm64" / "bin" / "busybox").read_bytes()
    assert arm_busybox[18:20] == b"\xb7\x00"  # e_machine: EM_AARCH64
    # the OCI layout's one entry is a Docker manifest list (oci-mediatypes=false) of both
    with tarfile.open(oci) as tar:
        (entry,) = json.loads(tar.extractfile("index.json").read())["manifests"]  # type: ignore[union-attr]
        blob = tar.extractfile("blobs/sha256/" + entry["digest"].split(":", 1)[1])
        index = json.loads(blob.read())  # type: ignore[union-attr]
    assert entry["mediaType"] == index["mediaType"]
    assert index["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert _platforms(index) == ["linux/amd64", "linux/arm64"]
    assert b.digest == entry["digest"]


def test_a_docker_output_of_several_platforms_is_refused_as_buildkit_does(
    tmp_path: Path, multi_base: str, ctx: Path
) -> None:
    b = Builder(tmp_path, multi_base)(
        ctx, "--platform", PLATFORMS, "-o", f"type=docker,dest={tmp_path / 'd.tar'}"
    )
    assert b.returncode == 2, b.output
    assert "docker exporter does not currently support exporting manifest lists" in b.output
    assert not (tmp_path / "d.tar").exists()


def _in_namespace(
    root: Path, hide: str, mason_args: str, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """``mason build`` on the fresh ``root`` in a mount namespace of its own where binfmt_misc
    is a tmpfs (mason can neither see nor make a registration) and ``hide``'s paths are
    /dev/null."""
    mason = shutil.which("mason") or str(Path(sys.executable).with_name("mason"))
    script = (
        "set -e; mount -t tmpfs none /proc/sys/fs/binfmt_misc; "
        f'for f in {hide}; do [ -e "$f" ] && mount --bind /dev/null "$f"; done; '
        f'MASON_ROOT={root} exec "{mason}" build --progress=plain {mason_args}'
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_without_binfmt_the_emulator_runs_the_step_explicitly(
    tmp_path: Path, multi_base: str
) -> None:
    """BuildKit's fallback: mason may not register (binfmt_misc is not usable here), so the
    static emulator is bound into the sandbox and started with the step's arguments."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare")
    ctx = tmp_path / "explicit"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("ARG BASE=busybox\nFROM $BASE\nRUN uname -m > /arch\n")
    out = tmp_path / "out"
    proc = _in_namespace(
        tmp_path / "root",
        "",
        f"--platform linux/arm64 --build-arg BASE={multi_base} -o type=local,dest={out} {ctx}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "emulated by /usr/bin/qemu-aarch64-static, run explicitly" in proc.stderr
    assert (out / "arch").read_text() == "aarch64\n"
    assert not (out / "dev" / ".buildkit_qemu_emulator").exists()  # the mountpoint is gone


def test_no_emulator_fails_naming_the_package_and_pushes_nothing(
    tmp_path: Path, registry: RegistryServer, multi_base: str, ctx: Path
) -> None:
    """In a mount namespace of its own, mason sees no binfmt_misc (a tmpfs over it) and no
    qemu-aarch64-static (/dev/null bound over it): as on a machine without the package."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare")
    image = f"{registry.host}/multi/none:1"
    proc = _in_namespace(
        tmp_path / "root",
        "/usr/bin/qemu-aarch64-static /usr/libexec/qemu-binfmt/aarch64-binfmt-P",
        f"--platform {PLATFORMS} --build-arg BASE={multi_base} --push -t {image} "
        f"--cache-to type=registry,ref={registry.host}/multi/none-cache {ctx}",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no emulator for linux/arm64" in proc.stderr
    assert "qemu-user-static" in proc.stderr
    check = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode != 0 and "manifest unknown" in check.stderr.lower()
    # not one blob or manifest of the image: the repository does not exist
    with urllib.request.urlopen(f"{registry.url}/v2/_catalog", timeout=30) as resp:
        repositories = json.loads(resp.read())["repositories"]
    assert "multi/none" not in repositories
    assert "base/busybox-multi" in repositories  # the control: the catalog lists pushed ones
