"""Random trees for the scoping property tests: files, directories and symlinks (absolute,
relative, dangling, loops, ``..``) written under a root, with ``CANARY`` in a link target
standing for a canary directory outside it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["build_tree"]


def build_tree(root: Path, canary: Path, spec: dict[str, str]) -> None:
    """``spec``: relative name -> ``dir``, ``file`` (its name as content) or ``link:TARGET``.
    An entry under a link or a file is left out: the builder never writes through a link."""
    for name, kind in sorted(spec.items()):
        p = root / name
        if any(os.path.islink(root / a) or os.path.isfile(root / a) for a in Path(name).parents):
            continue
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(p):
                continue
            if kind == "dir":
                p.mkdir()
            elif kind == "file":
                p.write_bytes(name.encode())
            else:
                os.symlink(kind.removeprefix("link:").replace("CANARY", str(canary)), p)
        except OSError:
            continue  # a parent is a file or a link: this entry cannot exist
