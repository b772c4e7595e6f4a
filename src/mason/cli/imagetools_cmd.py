"""`mason imagetools inspect REF [--raw]` and `mason imagetools copy SRC DST`, like
`docker buildx imagetools`. REF/SRC/DST are image references or `oci-layout://DIR[:TAG]`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from mason.cli._format import binary_size

if TYPE_CHECKING:
    from mason.registry.client import RegistryClient
    from mason.registry.copy import Endpoint

__all__ = ["register", "registry_client"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "imagetools", help="inspect and copy images, indexes and cache manifests"
    )
    sub = parser.add_subparsers(dest="imagetools_command", metavar="COMMAND")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--insecure",
            action="append",
            default=[],
            metavar="HOST",
            help="allow plain HTTP / unverified TLS for HOST (repeatable)",
        )
        p.add_argument("--ca-file", help="extra CA certificates (PEM) to trust")

    inspect = sub.add_parser(
        "inspect", help="show the structure of an image, index or cache manifest"
    )
    inspect.add_argument("ref", metavar="REF")
    inspect.add_argument("--raw", action="store_true", help="print the manifest bytes as stored")
    inspect.add_argument(
        "--format",
        choices=("text", "json", "{{json .}}"),
        default="text",
        help="json: the manifest and the image config(s) as one JSON document",
    )
    common(inspect)
    inspect.set_defaults(handler=_inspect)

    copy = sub.add_parser(
        "copy", help="copy an image, index or cache between registries and OCI layouts"
    )
    copy.add_argument("src", metavar="SRC")
    copy.add_argument("dst", metavar="DST")
    copy.add_argument(
        "-j", "--jobs", type=int, default=4, help="parallel blob transfers (default 4)"
    )
    common(copy)
    copy.set_defaults(handler=_copy)


def registry_client(args: argparse.Namespace, max_workers: int = 4) -> RegistryClient:
    """A client with the user's credentials, registries.conf, ``--insecure`` and ``--ca-file``."""
    from mason.registry.client import RegistryClient

    return RegistryClient.for_user(
        os.environ.get("DOCKER_CONFIG"),
        os.environ.get("REGISTRY_AUTH_FILE"),
        insecure_hosts=args.insecure,
        ca_file=args.ca_file,
        max_workers=max_workers,
    )


def _inspect(args: argparse.Namespace) -> int:
    from mason.registry.copy import parse_endpoint, read_manifest_raw

    endpoint = parse_endpoint(args.ref)
    with registry_client(args) as client:
        raw, media_type, digest = read_manifest_raw(client, endpoint)
        if args.raw:
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()
            return 0
        if args.format != "text":
            print(json.dumps(inspect_json(client, endpoint, raw, media_type, digest), indent=2))
            return 0
        lines = describe(client, endpoint, raw, media_type, digest)
    print("\n".join(lines))
    return 0


def inspect_json(
    client: RegistryClient, endpoint: Endpoint, raw: bytes, media_type: str, digest: str
) -> dict[str, Any]:
    """``--format json``: buildx's ``{{json .}}`` shape -- ``name``, ``manifest`` and ``image``
    (the config; for an index, one per platform, keyed ``os/arch[/variant]``)."""
    from mason.oci import mediatypes as mt
    from mason.oci.descriptor import Descriptor
    from mason.registry.copy import read_manifest_raw

    doc = json.loads(raw)
    out: dict[str, Any] = {
        "name": str(endpoint),
        "mediaType": media_type,
        "digest": digest,
        "size": len(raw),
        "manifest": doc,
    }
    if "manifests" not in doc:
        config = Descriptor.from_json(doc.get("config"))
        if config.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
            out["image"] = _fetch_blob_json(client, endpoint, config)
        return out
    images: dict[str, Any] = {}
    for entry in (Descriptor.from_json(e) for e in doc.get("manifests") or []):
        if entry.platform is None or entry.media_type == mt.BUILDKIT_CACHE_CONFIG:
            continue
        child = json.loads(read_manifest_raw(client, endpoint, entry.digest)[0])
        images[str(entry.platform)] = _fetch_blob_json(
            client, endpoint, Descriptor.from_json(child.get("config"))
        )
    if images:
        out["image"] = images
    return out


def _fetch_blob_json(
    client: RegistryClient, endpoint: Endpoint, desc: Any, cap: int = 64 << 20
) -> Any:
    from mason.oci.layout import OCILayout
    from mason.registry.copy import RegistryEndpoint

    if desc.size > cap:
        return None
    if isinstance(endpoint, RegistryEndpoint):
        with client.open_blob(endpoint.ref, desc) as stream:
            data = stream.read()
    else:
        data = OCILayout.open(endpoint.path).read_blob(desc)
    return json.loads(data)


def _summarise_cache_config(doc: Any) -> list[str]:
    """Minimal reading of BuildKit's cacheconfig.v0: counts only (the cache package owns the model)."""
    if not isinstance(doc, dict):
        return ["  (cache config is not a JSON object)"]
    layers = doc.get("layers") or []
    records = doc.get("records") or []
    with_results = sum(
        1 for r in records if isinstance(r, dict) and (r.get("layers") or r.get("results"))
    )
    inputs = sum(len(r.get("inputs") or []) for r in records if isinstance(r, dict))
    return [
        f"  Records:      {len(records)} ({with_results} with results, {inputs} input groups)",
        f"  Layers:       {len(layers)}",
    ]


def describe(
    client: RegistryClient, endpoint: Endpoint, raw: bytes, media_type: str, digest: str
) -> list[str]:
    """A readable summary of a manifest document and what it points to."""
    from mason.oci import mediatypes as mt
    from mason.oci.descriptor import Descriptor

    doc = json.loads(raw)
    lines = [
        f"Name:        {endpoint}",
        f"MediaType:   {media_type}",
        f"Digest:      {digest}",
        f"Size:        {len(raw)} bytes",
    ]
    if "manifests" in doc:
        entries = [Descriptor.from_json(e) for e in doc.get("manifests") or []]
        cache_cfgs = [e for e in entries if e.media_type == mt.BUILDKIT_CACHE_CONFIG]
        if cache_cfgs:
            lines.append("Kind:        BuildKit cache (index form)")
            layers = [e for e in entries if e.media_type != mt.BUILDKIT_CACHE_CONFIG]
            lines.append(
                f"Layers:      {len(layers)}, {binary_size(sum(e.size for e in layers))} total"
            )
            lines.extend(_layer_lines(layers))
            lines.append(f"Cache config: {cache_cfgs[0].digest} ({cache_cfgs[0].size} bytes)")
            lines.extend(_summarise_cache_config(_fetch_blob_json(client, endpoint, cache_cfgs[0])))
        else:
            lines.append(f"Kind:        index of {len(entries)} manifest(s)")
            lines.append("Manifests:")
            for e in entries:
                lines.append(f"  - {e.digest}  {e.media_type}  {binary_size(e.size)}")
                if e.platform is not None:
                    lines.append(f"    Platform: {e.platform}")
                for key, value in sorted(e.annotations.items()):
                    lines.append(f"    {key}: {value}")
        return lines
    config = Descriptor.from_json(doc.get("config"))
    layers = [Descriptor.from_json(e) for e in doc.get("layers") or []]
    if config.media_type == mt.BUILDKIT_CACHE_CONFIG:
        lines.append("Kind:        BuildKit/mason cache (image-manifest form)")
    elif config.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        lines.append("Kind:        image")
    else:
        lines.append(f"Kind:        artifact ({config.media_type})")
    lines.append(f"Config:      {config.digest} {config.media_type} ({config.size} bytes)")
    cfg = _fetch_blob_json(client, endpoint, config)
    if config.media_type == mt.BUILDKIT_CACHE_CONFIG:
        lines.extend(_summarise_cache_config(cfg))
    elif isinstance(cfg, dict) and config.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        platform = "/".join(str(cfg[k]) for k in ("os", "architecture", "variant") if cfg.get(k))
        lines.append(f"  Platform:   {platform or '(none)'}")
        if cfg.get("created"):
            lines.append(f"  Created:    {cfg['created']}")
        inner = cfg.get("config") or {}
        for key in _CONFIG_KEYS:
            if inner.get(key):
                lines.append(f"  {key + ':':<11} {json.dumps(inner[key], sort_keys=True)}")
        history = cfg.get("history") or []
        diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
        lines.append(f"  History:    {len(history)} entries; diff_ids: {len(diff_ids)}")
        if "moby.buildkit.cache.v0" in cfg:
            lines.append("  Inline cache: present (moby.buildkit.cache.v0)")
    lines.append(f"Layers:      {len(layers)}, {binary_size(sum(e.size for e in layers))} total")
    lines.extend(_layer_lines(layers))
    for key, value in sorted((doc.get("annotations") or {}).items()):
        lines.append(f"Annotation:  {key}={value}")
    return lines


#: the image config's runtime settings, in the order `docker image inspect` lists them
_CONFIG_KEYS = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Healthcheck",
    "Volumes",
    "WorkingDir",
    "Labels",
    "OnBuild",
    "StopSignal",
    "Shell",
)


def _layer_lines(layers: list[Any]) -> list[str]:
    out = []
    for i, layer in enumerate(layers, 1):
        out.append(f"  {i:>3}. {layer.digest}  {binary_size(layer.size):>10}  {layer.media_type}")
    return out


def _copy(args: argparse.Namespace) -> int:
    from mason.registry.copy import copy_image, parse_endpoint

    src = parse_endpoint(args.src)
    dst = parse_endpoint(args.dst)
    with registry_client(args, max_workers=max(1, args.jobs)) as client:
        stats = copy_image(client, src, dst)
    assert stats.root is not None
    print(
        f"copied {src} -> {dst}: {stats.root.digest}\n"
        f"  manifests: {stats.manifests}, blobs uploaded: {stats.blobs_uploaded} "
        f"({binary_size(stats.bytes_uploaded)}), mounted: {stats.blobs_mounted}, already there: {stats.blobs_existing}"
    )
    return 0
