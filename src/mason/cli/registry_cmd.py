"""`mason registry check REF`: which features a registry supports, one line each."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("registry", help="check what a registry supports")
    sub = parser.add_subparsers(dest="registry_command", metavar="COMMAND")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])
    check = sub.add_parser(
        "check",
        help="try the features a registry cache relies on in REF's repository",
        description=(
            "Push small throw-away blobs and manifests (tags mason-check-*) to REF's repository "
            "and report, one line each, whether the registry supports: blob and chunked "
            "uploads, a cache as an image manifest and as an index, the cache config media "
            "type, cross-repository mounts, conditional updates (If-Match), the referrers API "
            "and tag deletion, with the registry's own error where one fails. The tags are "
            "deleted when the registry allows it; unreferenced blobs go with the registry's "
            "garbage collection. Exit 1 when no form of registry cache can be stored."
        ),
    )
    check.add_argument("ref", metavar="REF", help="a repository, e.g. registry.example/app-cache")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument(
        "--insecure",
        action="append",
        default=[],
        metavar="HOST",
        help="allow plain HTTP / unverified TLS for HOST (repeatable)",
    )
    check.add_argument("--ca-file", help="extra CA certificates (PEM) to trust")
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    from mason.cli.imagetools_cmd import registry_client
    from mason.oci.reference import Reference
    from mason.registry.check import check_registry

    ref = Reference.parse(args.ref)
    with registry_client(args) as client:
        report = check_registry(client, ref)
    if args.format == "json":
        doc = {
            "repository": str(ref.repository_ref),
            "tags": f"{report.tag_prefix}*",
            "features": [f.to_json() for f in report.findings],
            "leftBehind": report.left_behind,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"registry {ref.registry}, repository {ref.repository} (tags {report.tag_prefix}*)")
        for f in report.findings:
            word = {True: "yes", False: "no", None: "-"}[f.supported]
            print(f"  {word:<4}{f.feature}" + (f": {f.detail}" if f.detail else ""))
        if report.left_behind:
            print(f"left behind (deletion refused): {', '.join(report.left_behind)}")
    return 0 if report.cache_usable else 1
