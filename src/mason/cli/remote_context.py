"""``mason build URL``: a git repository or an http(s) download as the build context, as
``docker buildx build`` takes it (BuildKit's dockerui DetectGitContext / DetectHTTPContext).

- A git URL (``https://host/repo.git#ref:subdir``, ``git@host:repo``, ``git://…``, ``ssh://…``,
  the query form; ``github.com/o/r`` when no such local path exists) is checked out (the commit
  its ref names, depth 1, ``.git`` removed unless ``keep-git-dir``); the context is ``subdir``
  of it, and the Dockerfile (a relative ``-f``, default ``Dockerfile``) is read inside that
  context; an absolute ``-f`` (or ``-f -``) is a local Dockerfile, as buildx takes it.
  ``--build-arg BUILDKIT_CONTEXT_KEEP_GIT_DIR=1`` keeps ``.git``; with ``SOURCE_DATE_EPOCH`` the
  files are dated by the commit (BuildKit's dockerui does both).
- Any other ``http://`` or ``https://`` URL is downloaded: a tar (plain, gzip, bzip2, xz) is
  the context, anything else is the Dockerfile of an empty context (``docker build URL``).

The directory is private and removed when mason exits.
"""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from pathlib import Path

from mason.engine.gitsource import (
    GitRef,
    GitRefError,
    checkout,
    parse_git_ref,
    parse_go_bool,
    resolve_commit,
)
from mason.errors import BuildError, UsageError
from mason.fsroot import FsRoot, PathOutsideError
from mason.structs import replace

__all__ = ["remote_context"]

#: a context download bigger than this is refused (it is held in memory to be unpacked)
MAX_HTTP_CONTEXT = 1 << 30


def remote_context(
    spec: str, dockerfile_flag: str | None, build_args: Mapping[str, str]
) -> tuple[Path, bytes | None] | None:
    """(the context directory, the Dockerfile's bytes or None) for a URL ``spec``; None when
    ``spec`` is a local path."""
    try:
        ref = parse_git_ref(spec)
    except GitRefError as exc:
        raise UsageError(f"context {spec}: {exc.message}", reference="invalid-context") from None
    if ref is not None and not (ref.indistinguishable_from_local and Path(spec).exists()):
        return _git_context(_context_defaults(ref, build_args), dockerfile_flag)
    if spec.startswith(("http://", "https://")):
        return _http_context(spec)
    return None


def _context_defaults(ref: GitRef, build_args: Mapping[str, str]) -> GitRef:
    """dockerui's build args for a git context: ``BUILDKIT_CONTEXT_KEEP_GIT_DIR`` keeps ``.git``
    (the URL's own ``keep-git-dir=true`` wins), and with ``SOURCE_DATE_EPOCH`` files are dated by
    the commit unless the URL says ``mtime=``."""
    keep = parse_go_bool(build_args.get("BUILDKIT_CONTEXT_KEEP_GIT_DIR", ""))
    if keep and not ref.keep_git_dir:
        ref = replace(ref, keep_git_dir=True)
    if build_args.get("SOURCE_DATE_EPOCH") and not ref.mtime:
        ref = replace(ref, mtime="commit")
    return ref


def _git_context(ref: GitRef, dockerfile_flag: str | None) -> tuple[Path, bytes | None]:
    import shutil
    import tempfile

    if ref.indistinguishable_from_local:  # github.com/o/r: BuildKit fetches it over https
        ref = replace(ref, remote="https://" + ref.remote)
    scratch = Path(tempfile.mkdtemp(prefix="mason-git-context-"))
    atexit.register(shutil.rmtree, scratch, True)
    try:
        directory = checkout(ref, resolve_commit(ref, scratch), scratch)
    except BuildError as exc:
        raise BuildError(f"context {ref.display}: {exc.message}", reference=exc.reference) from None
    if dockerfile_flag == "-" or (dockerfile_flag and Path(dockerfile_flag).is_absolute()):
        return directory, None  # as buildx: stdin, or an absolute -f, is a local Dockerfile
    name = dockerfile_flag or "Dockerfile"
    try:
        with FsRoot(directory) as root:  # -f is inside the context, never beside it
            return directory, root.read_bytes(name)
    except (OSError, PathOutsideError) as exc:
        raise UsageError(
            f"failed to read dockerfile {name} in context {ref.display}: "
            f"{getattr(exc, 'strerror', None) or exc}",
            reference="dockerfile-missing",
            hint="give the Dockerfile's path inside the repository (or its subdir) with -f",
        ) from None


def _http_context(url: str) -> tuple[Path, bytes | None]:
    from mason.cli.stdin_context import context_from_bytes
    from mason.registry.errors import RegistryError, redact_url
    from mason.registry.transport import http_get

    shown = redact_url(url)
    data = bytearray()
    try:
        with http_get(url, operation=f"context {shown}") as chunks:
            for chunk in chunks:
                data += chunk
                if len(data) > MAX_HTTP_CONTEXT:
                    raise UsageError(
                        f"context {shown}: larger than {MAX_HTTP_CONTEXT} bytes",
                        reference="invalid-context",
                    )
    except RegistryError as exc:
        why = f"HTTP {exc.status}" if exc.status is not None else exc.message
        raise BuildError(f"context {shown}: {why}", reference="context-download-failed") from None
    return context_from_bytes(bytes(data), shown)
