"""BuildKit v0.32.2's cache keys for mason's build steps (issue 12, docs/cache-keys.md).

``plan_llb`` turns the build plan into the LLB BuildKit's Dockerfile frontend makes of it;
each step vertex of ``engine.convert`` is matched to the op its command made there (by
stage and position, the op's kind checked). A matched step's key is then the chain key
of that op (``mason.llb.cachegraph``): its record digest with, per input, the input's
chain keys and the dep's selector, or the content root of the build-context files the
step reads. The solver looks a step up under these keys (``BuildKeys.rekey``) and the
cache exporter writes the records behind them with BuildKit's digests and input links
(``StepKeys.closure``), so one cache ref serves BuildKit and mason.

A step without a match (an op ``plan_llb`` does not model: a git source, a download not
pinned by ``--checksum``, a named context, mason's own run options) keeps mason's own
key (``mason.v1``), which no BuildKit record can equal: never a wrong hit.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mason.digest import Digest
from mason.engine.context import DockerIgnore
from mason.engine.llbplan import LLBDefinition
from mason.engine.ops import ExecOp, FileOp, MergeOp, SourceOp, StepResult
from mason.llb import pb
from mason.llb.cachegraph import chain_key, chain_keys
from mason.llb.cachemap import CacheMap, op_cache_map
from mason.llb.contenthash import ContentTree
from mason.llb.keys import content_key, http_source_key, image_source_keys, record_digest
from mason.solver import CacheKey, Vertex

__all__ = ["BuildKeys", "RecordNode", "StepKeys", "match_vertices"]

_LOCAL = "local://"
_IMAGE = "docker-image://"


@dataclass(frozen=True)
class RecordNode:
    """One record of BuildKit's cache graph: ``key`` names it among the exported records
    (its first chain key), ``digest`` is what BuildKit calls it, ``links`` per input index the
    alternatives ``(selector, linked record's key)``."""

    key: Digest
    digest: Digest
    links: tuple[tuple[tuple[str, Digest], ...], ...] = ()


@dataclass(frozen=True)
class StepKeys:
    """An op's chain keys (sorted), its own records (an image has two) and every record
    its own reach through their links, themselves included (what an export must write)."""

    chain: tuple[Digest, ...]
    own: tuple[RecordNode, ...]
    closure: Mapping[Digest, RecordNode]


def _kind_matches(op: Any, llb: pb.Op) -> bool:
    if isinstance(op, ExecOp):
        return llb.exec is not None
    if isinstance(op, FileOp):
        return llb.file is not None
    if isinstance(op, MergeOp):  # a link on scratch is the copy itself
        return llb.merge is not None or llb.file is not None
    return False


def match_vertices(converted: Any, definition: LLBDefinition) -> dict[Vertex[StepResult], str]:
    """Each step vertex of ``converted`` (an ``engine.convert.ConvertedBuild``) whose op the
    same command made in ``definition``, as that op's digest; base images by manifest."""
    ops = definition.by_digest()
    bad = {
        i
        for i, cmds in converted.commands.items()
        if tuple(definition.commands.get(i, ())) != tuple(cmds)
    }
    out: dict[Vertex[StepResult], str] = {}
    for vertex, (stage, position, role) in converted.positions.items():
        table = definition.steps if role == "step" else definition.linked
        found = table.get((stage, position))
        if stage in bad or found is None or not _kind_matches(vertex.op, ops[found].op):
            continue
        out[vertex] = found
    images: dict[str, str] = {}
    for v in definition.vertices:
        src = v.op.source
        if src is not None and src.identifier.startswith(_IMAGE) and "@" in src.identifier:
            images.setdefault(src.identifier.rsplit("@", 1)[1], v.digest)
    for vertex in _reachable(converted.target.vertex):
        if isinstance(vertex.op, SourceOp) and vertex.op.manifest_digest in images:
            out[vertex] = images[vertex.op.manifest_digest]
    return out


def _reachable(root: Vertex[StepResult]) -> list[Vertex[StepResult]]:
    seen: dict[Vertex[StepResult], None] = {}
    stack = [root]
    while stack:
        v = stack.pop()
        if v not in seen:
            seen[v] = None
            stack.extend(v.inputs)
    return list(seen)


class BuildKeys:
    """The chain keys of one build's LLB ops, computed once each, inputs first, on demand.

    ``diff_ids`` gives each base image's layer diff IDs by manifest digest (its second key).
    The build context is hashed as BuildKit's client sends it (``ContentTree.for_context``,
    without what ``.dockerignore`` leaves out), each file once, whatever number of steps read it.
    """

    def __init__(
        self,
        definition: LLBDefinition,
        vertices: Mapping[Vertex[StepResult], str],
        *,
        context: Path,
        ignore: DockerIgnore,
        platform: pb.Platform,
        diff_ids: Mapping[str, Sequence[str]],
    ) -> None:
        self._ops = definition.by_digest()
        self._of = dict(vertices)
        self._context = context
        self._ignore = ignore
        self._platform = platform
        self._diff_ids = diff_ids
        self._done: dict[str, StepKeys | None] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._tree: ContentTree | None = None

    def rekey(
        self, vertex: Vertex[StepResult], key: CacheKey, inputs: Sequence[CacheKey]
    ) -> CacheKey:
        """The solver's ``rekey``: a matched step's first chain key, all of them as
        alternatives, and its records for the exporter; any other step keeps ``key``."""
        digest = self._of.get(vertex)
        keys = self.keys_of(digest) if digest is not None else None
        if keys is None:
            return key
        return dataclasses.replace(key, digest=keys.chain[0], alternatives=keys.chain, export=keys)

    def close(self) -> None:
        if self._tree is not None:
            self._tree.close()

    def keys_of(self, digest: str) -> StepKeys | None:
        with self._guard:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            if digest not in self._done:
                self._done[digest] = self._compute(self._ops[digest].op)
            return self._done[digest]

    def _compute(self, op: pb.Op) -> StepKeys | None:
        if op.source is not None:
            return self._source(op)
        cm = op_cache_map(op, len(op.inputs), self._platform)
        if cm is None:
            return None
        alts: list[list[tuple[str, set[Digest]]]] = []
        links: list[tuple[tuple[str, Digest], ...]] = []
        closure: dict[Digest, RecordNode] = {}
        for inp, dep in zip(op.inputs, cm.deps, strict=True):
            src = self._ops[inp.digest].op.source
            if src is not None and src.identifier.startswith(_LOCAL):
                if dep.content is None:
                    return None  # the context taken whole, unhashed: BuildKit's key is per session
                root = content_key(self._context_tree(), dep.content)
                node = RecordNode(chain_key(root.record, []), root.record)
                closure[node.key] = node
                alts.append([("", {node.key})])
                links.append((("", node.key),))
                continue
            keys = self.keys_of(inp.digest) if inp.index == 0 else None
            if keys is None:
                return None
            # a checksummed input of another op is linked by its own key here (BuildKit's
            # exported record has this link beside the content root): no snapshot is read
            selector = dep.selector or ""
            alts.append([(selector, set(keys.chain))])
            links.append(tuple((selector, r.key) for r in keys.own))
            closure.update(keys.closure)
        record = record_digest(cm.digest, 0)
        chain = tuple(sorted(chain_keys(record, alts)))
        if not chain:
            return None
        own = RecordNode(chain[0], record, tuple(links))
        closure[own.key] = own
        return StepKeys(chain, (own,), closure)

    def _source(self, op: pb.Op) -> StepKeys | None:
        src = op.source
        assert src is not None
        if src.identifier.startswith(_IMAGE) and "@" in src.identifier:
            manifest = src.identifier.rsplit("@", 1)[1]
            diff_ids = self._diff_ids.get(manifest)
            if not diff_ids:
                return None
            maps: tuple[CacheMap, ...] = image_source_keys(
                manifest, op.platform or self._platform, diff_ids
            )
        elif src.identifier.startswith(("http://", "https://")) and _pinned(src.attrs):
            maps = (http_source_key(src.attrs["http.filename"], src.attrs["http.checksum"]),)
        else:
            return None  # the context (read through content roots only), an unpinned download
        own = tuple(
            RecordNode(chain_key(r, []), r) for r in (record_digest(cm.digest, 0) for cm in maps)
        )
        return StepKeys(tuple(sorted(n.key for n in own)), own, {n.key: n for n in own})

    def _context_tree(self) -> ContentTree:
        with self._guard:
            if self._tree is None:
                ignore = self._ignore

                def excluded(rel: str, is_dir: bool) -> bool:
                    rel = rel.lstrip("/")
                    if not ignore.ignored(rel):
                        return False
                    return ignore.can_skip_dir(rel) if is_dir else True

                self._tree = ContentTree.for_context(
                    self._context, excluded=None if ignore.empty else excluded
                )
            return self._tree


def _pinned(attrs: Mapping[str, str]) -> bool:
    """A download BuildKit keys without fetching it: ``--checksum``, default mode and owner."""
    return (
        bool(attrs.get("http.checksum"))
        and "http.filename" in attrs
        and not any(k in attrs for k in ("http.perm", "http.uid", "http.gid"))
    )


def plan_keys(
    converted: Any,
    *,
    context: Path,
    ignore: DockerIgnore,
    platform: str,
    build_args: Mapping[str, str],
) -> BuildKeys | None:
    """The BuildKit keys of a converted build (``engine.convert.ConvertedBuild``), or None when
    ``plan_llb`` cannot plan it (then every step keeps mason's own key)."""
    from mason.engine.llbplan import BaseImage, parse_platform, plan_llb
    from mason.errors import MasonError

    images = {str(img.ref): img for img in converted.images}

    def resolve(ref: str, _platform: pb.Platform) -> BaseImage:
        img = images.get(ref)
        if img is None:
            raise _Unplanned(ref)
        return BaseImage(img.manifest_digest, img.config)

    # the context source's attributes (.dockerignore patterns, session) enter no key: the
    # context is keyed by the content of what each step reads
    try:
        definition = plan_llb(
            converted.plan,
            resolve=resolve,
            platform=parse_platform(platform),
            build_args=build_args,
        )
    except (MasonError, _Unplanned):
        return None
    diff_ids = {
        img.manifest_digest: [
            str(d) for d in (img.config.get("rootfs") or {}).get("diff_ids") or ()
        ]
        for img in converted.images
    }
    return BuildKeys(
        definition,
        match_vertices(converted, definition),
        context=context,
        ignore=ignore,
        platform=parse_platform(platform),
        diff_ids=diff_ids,
    )


class _Unplanned(Exception):
    """A base image the build did not resolve (plan_llb asked for another reference)."""
