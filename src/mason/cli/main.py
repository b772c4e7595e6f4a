"""mason's command line: `mason build`, `mason imagetools`, `mason cache`, `mason du`/`prune`,
`mason debug`. Heavy modules are imported lazily so `mason --help` stays fast.

Each subcommand lives in its own module under ``mason.cli`` exposing
``register(subparsers)``; the module is named in ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mason.errors import MasonError

__all__ = ["main"]

# subcommand name -> module under mason.cli that defines register(subparsers)
_COMMANDS: dict[str, str] = {
    "build": "mason.cli.build_cmd",
    "imagetools": "mason.cli.imagetools_cmd",
    "cache": "mason.cli.cache_cmd",
    "du": "mason.cli.state_cmd",
    "prune": "mason.cli.state_cmd",
    "debug": "mason.cli.debug_cmd",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mason",
        description="Build container images from Dockerfiles, with build cache in OCI registries.",
    )
    parser.add_argument("--version", action="version", version="mason 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered: set[str] = set()
    for module_name in dict.fromkeys(_COMMANDS.values()):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # subcommand not built yet
            raise
        module.register(sub)
        registered.add(module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except MasonError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
