"""`mason du` and `mason prune`: what $MASON_ROOT holds, and freeing it."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "resolve_root"]


def resolve_root() -> Path:
    """$MASON_ROOT, else /var/lib/mason for root and ~/.local/share/mason otherwise."""
    env = os.environ.get("MASON_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/mason")
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "mason"


def register(subparsers: Any) -> None:
    if "du" not in subparsers.choices:
        du = subparsers.add_parser("du", help="show disk usage of the local state ($MASON_ROOT)")
        du.add_argument("--verbose", "-v", action="store_true", help="list every entry")
        du.set_defaults(handler=_du)
    if "prune" not in subparsers.choices:
        pr = subparsers.add_parser(
            "prune",
            help="remove local build cache",
            description=(
                "Remove local build cache, like `docker buildx prune -f`: without options every "
                "cached result, layer and snapshot goes (registry caches are untouched); with "
                "--keep-storage, what no cached result can use goes first, then cached results "
                "with the layers only they need and cache mounts, least recently used first, "
                "until at most SIZE is left; with --filter until=DURATION or --keep-duration "
                "DURATION only what was not used for that long goes. Waits for running builds "
                "on the same root."
            ),
        )
        pr.add_argument(
            "--keep-storage",
            metavar="SIZE",
            default=None,
            help="keep the most recently used cache up to SIZE bytes (e.g. 10GB)",
        )
        pr.add_argument(
            "--all",
            "-a",
            action="store_true",
            help="also forget compressed variants and leave only the root's empty skeleton",
        )
        pr.add_argument(
            "--filter",
            dest="filters",
            action="append",
            default=[],
            metavar="until=DURATION",
            help="only what was not used for DURATION (e.g. 24h, 90m, 7d)",
        )
        pr.add_argument(
            "--keep-duration",
            metavar="DURATION",
            help="keep what was used within DURATION (the same as --filter until=DURATION)",
        )
        pr.set_defaults(handler=_prune)


def _du(args: argparse.Namespace) -> int:
    from mason.engine.state import StateRoot, human_size

    root = resolve_root()
    if not root.exists():
        print(f"{root}: empty")
        return 0
    with StateRoot.open(root) as st:
        entries = st.usage()
        records = st.meta.results()
        names = st.meta.step_names() if args.verbose else {}
    results = len(records)
    if args.verbose:
        print(f"{'KIND':<12} {'SIZE':>10}  ID")
        for e in sorted(entries, key=lambda e: -e.size):
            print(f"{e.kind:<12} {human_size(e.size):>10}  {e.ident}")
        print()
        _print_records(records, names)
    by_kind: dict[str, tuple[int, int]] = {}
    for e in entries:
        n, s = by_kind.get(e.kind, (0, 0))
        by_kind[e.kind] = (n + 1, s + e.size)
    print(f"{'KIND':<12} {'COUNT':>6} {'SIZE':>10}")
    for kind in ("blob", "snapshot", "cache-mount"):
        n, s = by_kind.get(kind, (0, 0))
        print(f"{kind:<12} {n:>6} {human_size(s):>10}")
    print(f"cache records: {results}")
    print(f"Total: {human_size(sum(e.size for e in entries))} in {root}")
    return 0


def _print_records(records: list[Any], names: dict[str, str]) -> None:
    """One line per cached result: its step, the size of the layer it added, its last use."""
    from mason.engine.state import human_size

    print(f"{'LAST USED':<16} {'SIZE':>10}  STEP")
    now = time.time()
    for r in sorted(records, key=lambda r: -r.last_used):
        size = r.layers[-1].blob_size if r.layers else 0
        step = names.get(r.key) or r.description or f"(key {r.key[:19]})"
        print(f"{_ago(now - r.last_used):<16} {human_size(size):>10}  {step}")
    print()


def _ago(seconds: float) -> str:
    for unit, span in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= span:
            n = int(seconds // span)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def _prune(args: argparse.Namespace) -> int:
    import sys

    from mason.engine.state import StateError, StateRoot, human_size, parse_size
    from mason.errors import UsageError

    root = resolve_root()
    if not root.exists():
        print("Total reclaimed space: 0B")
        return 0
    try:
        keep = parse_size(args.keep_storage) if args.keep_storage is not None else 0
    except Exception as exc:
        raise UsageError(str(exc)) from exc
    unused_for = _unused_for(args.filters, args.keep_duration)
    try:
        st = StateRoot.open(root, exclusive=True, wait=False)
    except StateError as exc:
        if exc.reference != "state-busy":
            raise
        # never delete under a running build: wait for its shared lock to go
        print(f"waiting for the builds using {root} to finish...", file=sys.stderr, flush=True)
        st = StateRoot.open(root, exclusive=True)
    with st:
        removed, freed = st.prune(
            keep, all_=args.all or args.keep_storage is None, unused_for=unused_for
        )
    print(f"Deleted {removed} entries")
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


def _unused_for(filters: list[str], keep_duration: str | None) -> float | None:
    from mason.cache.retention import parse_duration
    from mason.errors import UsageError

    limits = [parse_duration(keep_duration, "--keep-duration")] if keep_duration else []
    for text in filters:
        key, _, value = text.partition("=")
        if key != "until" or not value:
            raise UsageError(
                f"invalid --filter {text!r}: mason prune takes until=DURATION",
                reference="invalid-argument",
            )
        limits.append(parse_duration(value, "--filter until"))
    return max(limits) if limits else None
