"""The README's table of `mason build` flags lists every flag `mason build --help` shows."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mason.cli.build_cmd import register

README = Path(__file__).resolve().parents[3] / "README.md"


def _build_flags() -> set[str]:
    subparsers = argparse.ArgumentParser().add_subparsers()
    register(subparsers)
    build = subparsers.choices["build"]
    return {
        opt for action in build._actions for opt in action.option_strings if opt.startswith("--")
    } - {"--help"}


def test_every_build_flag_is_in_the_readme_table() -> None:
    table = README.read_text().split("The flags of `mason build`:", 1)[1].split("\n\n", 2)[1]
    listed = set(re.findall(r"`(--[a-z-]+)", table))
    flags = _build_flags()
    assert flags, "no flags found in the parser"
    assert flags - listed == set(), "flags missing from the README's table"
    assert listed - flags == set(), "the README's table lists flags mason build does not have"
