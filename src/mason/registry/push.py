"""Putting one blob into a repository the cheapest way: the step image push, cache export
and ``imagetools copy`` share.

Nothing moves when the repository has the blob (HEAD); else a cross-repo mount from a
repository of the same registry that holds it; else an upload -- in the session the registry
opens when it declines the last mount, so a declined mount costs no extra request. A small
blob the build itself just made (a config, a small layer) is uploaded without the HEAD: it
is all but surely new, and its upload costs about what the question does. The
candidates come from the descriptor's ``containerd.io/distribution.source.<host>``
annotation (what containerd and BuildKit write), or from the caller.

Puts of one blob into one registry take turns, process-wide (``_Turns``): the image push and
the cache export run side by side, and a layer both need crosses the wire once -- the later
put waits for the earlier one and mounts from its repository (or finds the blob there).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO, Literal, Protocol

from mason.digest import Digest
from mason.errors import MasonError
from mason.oci.descriptor import DISTRIBUTION_SOURCE_PREFIX, Descriptor
from mason.oci.reference import Reference
from mason.registry.errors import RegistryError

__all__ = ["UNASKED_LIMIT", "BlobPusher", "StoreOutcome", "mount_candidates", "push_blob"]

StoreOutcome = Literal["existing", "mounted", "uploaded"]

#: the largest blob made by this build that is uploaded without a HEAD first (issue 14: one
#: round trip less for every config and small layer; a needless re-upload of this much costs
#: about one round trip more)
UNASKED_LIMIT = 256 * 1024


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
        ask_first: bool = True,
    ) -> Literal["exists", "mounted", "uploaded"]: ...

    def put_repositories(self, registry: str, digest: Digest) -> list[str]: ...


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


class _Put:
    """A put under way: where to, and whether it left the blob there."""

    __slots__ = ("done", "ok", "repository")

    def __init__(self, repository: str) -> None:
        self.repository = repository
        self.done = threading.Event()
        self.ok = False


class _Turns:
    """The puts under way in this process, one per (registry, blob)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._puts: dict[tuple[str, Digest], _Put] = {}

    @contextmanager
    def turn(self, ref: Reference, digest: Digest) -> Iterator[str | None]:
        """Wait for any put of ``digest`` into ``ref``'s registry, then hold the turn; yields
        the repository the last such put left the blob in (None: none did)."""
        key, holder = (ref.registry, digest), None
        while True:
            with self._lock:
                other = self._puts.get(key)
                if other is None:
                    mine = self._puts[key] = _Put(ref.repository)
                    break
            other.done.wait()
            holder = other.repository if other.ok else holder
        try:
            yield holder
            mine.ok = True
        finally:
            with self._lock:
                del self._puts[key]
            mine.done.set()


_TURNS = _Turns()


def push_blob(
    client: BlobPusher,
    ref: Reference,
    desc: Descriptor,
    opener: Callable[[], BinaryIO],
    *,
    mount_from: Sequence[str] | None = None,
    made_here: bool = False,
) -> StoreOutcome:
    """Put ``desc`` into ``ref``'s repository: nothing if it is there, a mount from one of
    ``mount_from`` (default: ``mount_candidates(desc, ref)``), else an upload. ``made_here``:
    the build made the blob (not pulled), so one up to ``UNASKED_LIMIT`` with nowhere to
    mount it from is uploaded without asking first whether the repository has it.

    With several candidates the first ones are tried before any HEAD: a mount POST costs what a
    HEAD does, and mounting a blob the repository already has is harmless. A put of the same
    blob into the same registry under way elsewhere in this process is waited for; the
    repository it went to is the first candidate. A blob the client put into other
    repositories of the registry (and not this one) is mounted from them without a HEAD
    first: it is all but certainly not here yet (a layer sent to the cache while the build
    went on, ``mason.engine.earlypush``)."""
    with _TURNS.turn(ref, desc.digest) as just_put:
        put_in = client.put_repositories(ref.registry, desc.digest)
        given = list(mount_from) if mount_from is not None else mount_candidates(desc, ref)
        first = [just_put] if just_put is not None else []
        candidates = [c for c in dict.fromkeys([*first, *put_in, *given]) if c != ref.repository]
        mount_first = bool(put_in) and ref.repository not in put_in
        ask_first = bool(candidates) or not made_here or desc.size > UNASKED_LIMIT
        return _put(
            client, ref, desc, opener, candidates, mount_first=mount_first, ask_first=ask_first
        )


def _put(
    client: BlobPusher,
    ref: Reference,
    desc: Descriptor,
    opener: Callable[[], BinaryIO],
    candidates: list[str],
    *,
    mount_first: bool = False,
    ask_first: bool = True,
) -> StoreOutcome:
    for repo in candidates if mount_first else candidates[:-1]:
        try:
            if client.mount_blob(ref, desc.digest, repo):
                return "mounted"
        except MasonError:
            continue  # e.g. no pull right on that repository: try the next one
    last = candidates[-1] if candidates and not mount_first else None
    try:
        outcome = client.push_blob_outcome(ref, desc, opener, mount_from=last, ask_first=ask_first)
    except RegistryError as exc:
        if last is None or exc.status not in (401, 403):
            raise
        # a token service may refuse the pull scope on the mount source: plain upload
        outcome = client.push_blob_outcome(ref, desc, opener, ask_first=ask_first)
    return "existing" if outcome == "exists" else outcome
