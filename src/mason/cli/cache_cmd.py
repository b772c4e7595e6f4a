"""`mason cache inspect REF|DIR`: what a registry or local build cache holds (mason's or BuildKit's);
`mason cache prune REF`: a registry cache without its least recently used records.

A directory (or ``oci-layout://DIR[:TAG]``) is read as a local cache (``index.json`` entry
``TAG``, default ``latest``; ``--tag``/``--digest`` choose another); anything else is a
registry reference. Only the manifest and the cache config are downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

from mason.cli._format import binary_size

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cache", help="inspect and prune registry and local build caches"
    )
    sub = parser.add_subparsers(dest="cache_command", metavar="COMMAND")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])
    inspect = sub.add_parser(
        "inspect", help="records, layers and sizes of a cache (REF, DIR or oci-layout://DIR[:TAG])"
    )
    inspect.add_argument("target", metavar="REF|DIR")
    inspect.add_argument("--tag", help="local cache: index.json tag (default latest)")
    inspect.add_argument("--digest", help="local cache: manifest digest instead of a tag")
    inspect.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    inspect.add_argument(
        "--insecure",
        action="append",
        default=[],
        metavar="HOST",
        help="allow plain HTTP / unverified TLS for HOST (repeatable)",
    )
    inspect.add_argument("--ca-file", help="extra CA certificates (PEM) to trust")
    inspect.add_argument("--records", action="store_true", help="also list key-only records")
    inspect.set_defaults(handler=_inspect)
    _register_prune(sub)


def _register_prune(sub: Any) -> None:
    prune = sub.add_parser(
        "prune",
        help="rewrite a registry cache without its least recently used records",
        description=(
            "Drop the records of the registry cache REF that no build used within "
            "--keep-duration, then the least recently used ones until the blobs still "
            "reached fit --keep-size, and write the cache again in the form it had (the tag "
            "is deleted when nothing is left). Last use is what mason's exports recorded "
            "(renewed at most once a day); records without one (BuildKit's) count from when "
            "they were created. The registry deletes the blobs no manifest references when "
            "its garbage collection runs (for the CNCF registry: registry garbage-collect)."
        ),
    )
    prune.add_argument("ref", metavar="REF")
    prune.add_argument(
        "--keep-duration", metavar="DURATION", help="keep what was used within, e.g. 7d"
    )
    prune.add_argument("--keep-size", metavar="SIZE", help="keep at most this much, e.g. 5GB")
    prune.add_argument(
        "--dry-run", action="store_true", help="say what would be dropped, change nothing"
    )
    prune.add_argument(
        "--insecure",
        action="append",
        default=[],
        metavar="HOST",
        help="allow plain HTTP / unverified TLS for HOST (repeatable)",
    )
    prune.add_argument("--ca-file", help="extra CA certificates (PEM) to trust")
    prune.set_defaults(handler=_prune)


def _prune(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from mason.cache.registry import prune_registry_cache
    from mason.cache.retention import parse_duration
    from mason.cli.imagetools_cmd import registry_client
    from mason.engine.stateroot import human_size, parse_size
    from mason.errors import UsageError
    from mason.oci.reference import Reference

    if args.keep_duration is None and args.keep_size is None:
        raise UsageError(
            "mason cache prune needs --keep-duration or --keep-size",
            hint="e.g. mason cache prune REF --keep-duration 7d --keep-size 5GB",
        )
    keep_duration = (
        parse_duration(args.keep_duration, "--keep-duration") if args.keep_duration else None
    )
    keep_size = parse_size(args.keep_size) if args.keep_size else None
    ref = Reference.parse(args.ref)
    with registry_client(args) as client:
        report = prune_registry_cache(
            client,
            ref,
            now=datetime.now(UTC),
            keep_duration=keep_duration,
            keep_size=keep_size,
            dry_run=args.dry_run,
        )
    verb = "would drop" if args.dry_run else "dropped"
    print(
        f"cache {ref}: {report.with_results} records with results, {verb} {report.dropped} "
        f"(freeing {human_size(report.freed_bytes)}, keeping {human_size(report.kept_bytes)})"
    )
    if report.deleted:
        print(f"nothing was left: deleted the tag {ref}")
    elif report.written is not None:
        print(f"wrote {report.written.digest}")
    if report.freed_bytes and not args.dry_run:
        print(
            "the blobs are deleted by the registry's garbage collection "
            "(CNCF registry: registry garbage-collect CONFIG)"
        )
    return 0


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _inspect(args: argparse.Namespace) -> int:
    from mason.cache import load_cache_source
    from mason.cache.inspect import describe_cache
    from mason.cache.options import parse_cache_from, split_csv
    from mason.errors import UsageError

    target: str = args.target
    if target.startswith("oci-layout://"):
        path, _, tag = target.removeprefix("oci-layout://").partition(":")
        target, args.tag = path, args.tag or tag or None
    if os.path.isdir(target):
        text = f'type=local,"src={target}"'
        if args.digest:
            text += f",digest={args.digest}"
        elif args.tag:
            text += f",tag={args.tag}"
        [options] = parse_cache_from(text)
        source = load_cache_source(options)
    else:
        if args.tag or args.digest:
            raise UsageError(
                "--tag and --digest are for a local cache directory; put the tag in REF"
            )
        if len(split_csv(target)) != 1 or "=" in target or target.startswith(("/", ".", "~")):
            raise UsageError(
                f"{target!r} is neither a directory nor an image reference",
                reference="cache-not-found",
                hint="a local cache is a directory with index.json; a registry cache is a REF",
            )
        [options] = parse_cache_from(target)
        from mason.registry.client import RegistryClient

        with RegistryClient.for_user(
            os.environ.get("DOCKER_CONFIG"),
            os.environ.get("REGISTRY_AUTH_FILE"),
            insecure_hosts=args.insecure,
            ca_file=args.ca_file,
        ) as client:
            source = load_cache_source(options, client)
    if source.warning or source.missing:  # inspecting is not a build: nothing there is an error
        raise _unreadable(args.target, source.warning or source.missing or "")
    summary = describe_cache(source)
    if args.format == "json":
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    _print_text(summary, show_records=args.records)
    return 0


def _unreadable(target: str, warning: str) -> Exception:
    """The import's one-line warning (``cache import from X failed, continuing without it:
    MESSAGE | context | hint: ...``) as an error: inspecting is not a build that goes on."""
    from mason.errors import BuildError

    reason = re.sub(
        r"^(cache import from .+? failed, continuing without it|local cache import at .+? skipped): ",
        "",
        warning,
    )
    message, *rest = (part.strip() for part in reason.split(" | "))
    hints = [p.removeprefix("hint: ") for p in rest if p.startswith("hint: ")]
    return BuildError(
        f"cannot inspect cache {target}: {message}",
        reference="cache-unreadable",
        context=[p for p in rest if not p.startswith("hint: ")],
        hint=hints[0] if hints else None,
    )


def _print_text(s: dict[str, Any], *, show_records: bool) -> None:
    out = sys.stdout.write
    out(f"Cache:      {s['source']}\n")
    if s["manifest"]:
        m = s["manifest"]
        out(f"Manifest:   {m['digest']} ({m['mediaType']}, {m['size']} bytes, {s['form']} form)\n")
    if s["config"]:
        c = s["config"]
        out(f"Config:     {c['digest']} ({c['size']} bytes)\n")
    out(f"Written by: {s['writtenBy']}\n")
    out(
        f"Records:    {s['records']} ({s['recordsWithResults']} with results, {s['records'] - s['recordsWithResults']} key-only)\n"
    )
    out(
        f"Layers:     {len(s['layers'])} entries, {s['blobs']} blobs, {binary_size(s['totalSize'])} total\n\n"
    )
    out(f"{'#':>3}  {'BLOB':<12}  {'SIZE':>10}  {'COMPRESSION':<12}  {'PARENT':>6}  DIFF ID\n")
    for layer in s["layers"]:
        parent = "-" if layer["parent"] == -1 else str(layer["parent"])
        diff = _short(layer["diffID"]) if layer["diffID"] else "-"
        out(
            f"{layer['index']:>3}  {_short(layer['digest']):<12}  {binary_size(layer['size']):>10}  "
            f"{layer['compression']:<12}  {parent:>6}  {diff}\n"
        )
    out("\nResults:\n")
    for r in s["results"]:
        if not r["usable"]:
            out(f"  {_short(r['key'])}  unusable (blob descriptor or diff ID missing)\n")
            continue
        step = f"  {r['step']}" if r.get("step") else ""
        out(
            f"  {_short(r['key'])}  {r['layers']} layers, {binary_size(r['size'])}, top {_short(r['top'])}{step}\n"
        )
    if show_records and s["keyOnly"]:
        out("\nKey-only records:\n")
        for r in s["keyOnly"]:
            step = f"  {r['step']}" if r.get("step") else ""
            out(f"  {_short(r['key'])}{step}\n")
