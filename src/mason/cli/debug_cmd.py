"""``mason debug``: developer views of mason's internals.

``mason debug parse-dockerfile PATH`` prints, as JSON, how mason reads a
Dockerfile, in the shape of the golden ``expected.json`` files (BuildKit's
reading), so any Dockerfile can be compared with BuildKit's.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("debug", help="developer tools: inspect how mason reads inputs")
    sub = parser.add_subparsers(dest="debug_command", metavar="DEBUG_COMMAND")
    p = sub.add_parser(
        "parse-dockerfile",
        help="print the parsed, converted and expanded Dockerfile as JSON",
    )
    p.add_argument("path", metavar="PATH", help="the Dockerfile to read ('-' for stdin)")
    p.set_defaults(handler=_parse_dockerfile)
    parser.set_defaults(handler=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _parse_dockerfile(args: argparse.Namespace) -> int:
    from mason.dockerfile import DockerfileError, parse_dockerfile, render_debug
    from mason.dockerfile.document import source_lines
    from mason.errors import UsageError

    try:
        data = sys.stdin.buffer.read() if args.path == "-" else _read(args.path)
    except OSError as exc:
        raise UsageError(f"cannot read {args.path}: {exc.strerror or exc}") from exc
    doc = render_debug(data)
    json.dump(doc, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()
    # the JSON holds the error too; it is also raised so the exit status is 2
    parse_dockerfile(data, path=args.path)
    expanded = doc["expandedWithTestEnv"]
    if expanded and expanded["error"]:
        err = DockerfileError(
            expanded["error"]["message"], lines=expanded["error"]["lines"], section="expand"
        )
        raise err.located(file=args.path, source_lines=source_lines(data))
    return 0


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
