"""Putting one blob into a repository the cheapest way: the step image push, cache export
and ``imagetools copy`` share.

Nothing moves when the repository has the blob (HEAD); else a cross-repo mount from a
repository of the same registry that holds it; else an upload -- in the session the registry
opens when it declines the last mount, so a declined mount costs no extra request. The
candidates come from the descriptor's ``containerd.io/distribution.source.<host>``
annotation (what containerd and BuildKit write), or from the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import BinaryIO, Literal, Protocol

from mason.digest import Digest
from mason.errors import MasonError
from mason.oci.descriptor import DISTRIBUTION_SOURCE_PREFIX, Descriptor
from mason.oci.reference import Reference
from mason.registry.errors import RegistryError

__all__ = ["BlobPusher", "StoreOutcome", "mount_candidates", "push_blob"]

StoreOutcome = Literal["existing", "mounted", "uploaded"]


class BlobPusher(Protocol):
    """What ``push_blob`` needs of ``mason.registry.client.RegistryClient`` (fakes implement it)."""

    def mount_blob(self, ref: Reference, digest: Digest, from_repository: str) -> bool: ...

    def push_blob_outcome(
        self,
        ref: Reference,
        desc: Descriptor,
        opener: Callable[[], BinaryIO],
        *,
        mount_from: str | None = None,
    ) -> Literal["exists", "mounted", "uploaded"]: ...


def mount_candidates(desc: Descriptor, target: Reference) -> list[str]:
    """Repositories of ``target``'s registry that ``desc`` says hold it, best first
    (longest common path prefix with the target, as containerd picks)."""
    value = desc.annotations.get(DISTRIBUTION_SOURCE_PREFIX + target.registry, "")
    repos = [r.strip() for r in value.split(",") if r.strip() and r.strip() != target.repository]

    def common(repo: str) -> int:
        n = 0
        for a, b in zip(repo.split("/"), target.repository.split("/"), strict=False):
            if a != b:
                break
            n += 1
        return n

    return sorted(dict.fromkeys(repos), key=lambda r: (-common(r), r))


def push_blob(
    client: BlobPusher,
    ref: Reference,
    desc: Descriptor,
    opener: Callable[[], BinaryIO],
    *,
    mount_from: Sequence[str] | None = None,
) -> StoreOutcome:
    """Put ``desc`` into ``ref``'s repository: nothing if it is there, a mount from one of
    ``mount_from`` (default: ``mount_candidates(desc, ref)``), else an upload.

    With several candidates the first ones are tried before any HEAD: a mount POST costs what a
    HEAD does, and mounting a blob the repository already has is harmless."""
    candidates = list(mount_from) if mount_from is not None else mount_candidates(desc, ref)
    candidates = [c for c in candidates if c != ref.repository]
    for repo in candidates[:-1]:
        try:
            if client.mount_blob(ref, desc.digest, repo):
                return "mounted"
        except MasonError:
            continue  # e.g. no pull right on that repository: try the next one
    last = candidates[-1] if candidates else None
    try:
        outcome = client.push_blob_outcome(ref, desc, opener, mount_from=last)
    except RegistryError as exc:
        if last is None or exc.status not in (401, 403):
            raise
        # a token service may refuse the pull scope on the mount source: plain upload
        outcome = client.push_blob_outcome(ref, desc, opener)
    return "existing" if outcome == "exists" else outcome
