"""Each LLB op's cache map as BuildKit v0.32.2 computes it (``solver/llbsolver/ops``).

A cache map is the digest of the op's definition (``CacheMap.preimage``, the
exact bytes BuildKit hashes) plus, per input, a selector digest and the
selectors whose content checksum replaces the input's own key
(``Dep.content``). The definition is Go ``json.Marshal`` of the op with what
cannot change the result cleared first:

- exec: mount selectors, extra-host IPs and the proxy environment cleared; a
  cache mount's id and sharing cleared unless it is the Dockerfile default
  (id = target, shared); a lone writable root bind mount left out;
- file: each action marshalled on its own, a copy's source reduced to its base
  name (the path moves into the input's selector); ``indexes`` only when the
  actions are not chained the usual way;
- merge: the op as it is; source: a string key (``source_key``).
"""

from __future__ import annotations

from collections.abc import Sequence

from mason.digest import Digest, sha256_bytes
from mason.fsroot import clean_path
from mason.llb import pb
from mason.llb.gojson import go_json
from mason.llb.pb import EMPTY
from mason.structs import Struct, replace

__all__ = [
    "CacheMap",
    "Dep",
    "Selector",
    "exec_cache_map",
    "file_cache_map",
    "merge_cache_map",
    "op_cache_map",
    "source_cache_map",
]

EXEC_TYPE = "buildkit.exec.v0"
FILE_TYPE = "buildkit.file.v0"
MERGE_TYPE = "buildkit.merge.v0"
SOURCE_TYPE = "buildkit.source.v0"
ROOT_MOUNT = "/"


class Selector(Struct, frozen=True):
    """A path of an input whose content is checksummed (``opsutils.Selector``)."""

    path: str
    wildcard: bool = False
    follow_links: bool = False
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    required_paths: tuple[str, ...] = ()

    @property
    def has_wildcard_or_filters(self) -> bool:
        return self.wildcard or bool(self.include_patterns) or bool(self.exclude_patterns)


class Dep(Struct, frozen=True):
    """What one input contributes beyond its own key.

    ``selector``: the digest stored on the input's link (None when the input is
    taken whole). ``content``: when set, the input is also keyed by the content
    checksum of these selectors (BuildKit's ``ComputeDigestFunc``).
    """

    selector: Digest | None = None
    content: tuple[Selector, ...] | None = None


class CacheMap(Struct, frozen=True):
    preimage: bytes
    digest: Digest
    deps: tuple[Dep, ...]


# --- exec ------------------------------------------------------------------------------------


def exec_cache_map(op: pb.ExecOp, platform: pb.Platform, num_inputs: int) -> CacheMap:
    """``ExecOp.CacheMap``: the exec definition hashed, and the mounts' selectors per input."""
    meta = op.meta or pb.Meta()
    meta = replace(
        meta,
        extra_hosts=tuple(replace(h, ip="") for h in meta.extra_hosts),
        # Proxy variables are the user's network, not the step's definition.
        proxy_env=None,
    )
    mounts = tuple(_clear_mount(m) for m in op.mounts)
    if len(mounts) == 1 and _is_plain_root(mounts[0]):
        # BuildKit keeps a historical quirk: a RUN's only (root) mount is not hashed.
        mounts = ()
    cleared = replace(op, meta=meta, mounts=mounts)
    preimage = go_json(
        _Struct(
            ("Type", EXEC_TYPE, False),
            ("Exec", cleared, False),
            ("OS", platform.os, False),
            ("Arch", platform.architecture, False),
            ("Variant", platform.variant, True),
            ("OSVersion", platform.os_version, True),
            ("OSFeatures", platform.os_features, True),
        )
    )
    return CacheMap(preimage, sha256_bytes(preimage), _exec_deps(op, num_inputs))


def _clear_mount(m: pb.Mount) -> pb.Mount:
    m = replace(m, selector="")
    if m.cache_opt is not None and _should_clear_cache_opts(m, m.cache_opt):
        m = replace(m, cache_opt=pb.CacheOpt())
    return m


def _should_clear_cache_opts(m: pb.Mount, opt: pb.CacheOpt) -> bool:
    # The Dockerfile's default cache id is the target (or "<namespace>/<target>"):
    # kept, so that existing caches still hit; any other id or sharing is cleared.
    if opt.sharing != pb.CacheSharingOpt.SHARED:
        return True
    if opt.id == m.dest:
        return False
    _, sep, trimmed = opt.id.partition("/")
    return not (sep and trimmed == m.dest)


def _is_plain_root(m: pb.Mount) -> bool:
    return (
        m.dest == ROOT_MOUNT
        and m.selector == ""
        and not m.readonly
        and m.mount_type == pb.MountType.BIND
        and m.cache_opt is None
        and m.ssh_opt is None
        and m.secret_opt is None
        and m.result_id == ""
    )


_CONTENT_CACHE_ON = 2
_CONTENT_CACHE_OFF = 1


def _exec_deps(op: pb.ExecOp, num_inputs: int) -> tuple[Dep, ...]:
    selectors: list[list[str]] = [[] for _ in range(num_inputs)]
    content: list[bool] = [False] * num_inputs
    for m in op.mounts:
        if m.mount_type in (pb.MountType.SECRET, pb.MountType.SSH, pb.MountType.TMPFS):
            continue
        if m.input == EMPTY:
            continue
        if not 0 <= m.input < num_inputs:
            raise ValueError(f"exec mount {m.dest!r} names input {m.input} of {num_inputs}")
        sel = clean_path("/" + m.selector)
        selectors[m.input].append(sel)
        # Content keys only where no unselected file can leak into a later step.
        safe = m.output == EMPTY or m.readonly or sel == ROOT_MOUNT
        if m.content_cache == _CONTENT_CACHE_OFF:
            safe = False
        elif m.content_cache == _CONTENT_CACHE_ON:
            if not safe:
                raise ValueError(f"exec mount {m.dest!r}: content cache forced where it is unsafe")
        elif m.dest == ROOT_MOUNT:
            safe = False
        content[m.input] = safe
    deps = []
    for paths, by_content in zip(selectors, content, strict=True):
        selector = sha256_bytes(b"\0".join(p.encode() for p in paths)) if paths else None
        sels = tuple(Selector(p) for p in dedupe_paths(paths)) if by_content else None
        deps.append(Dep(selector, sels))
    return tuple(deps)


def dedupe_paths(paths: Sequence[str]) -> list[str]:
    """Drop paths under another of the paths; sorted (``dedupePaths``)."""
    if len(paths) <= 1:
        return list(paths)
    unique = set(paths)
    kept = [
        p
        for p in unique
        if not any(p != q and p.startswith(q if q.endswith("/") else q + "/") for q in unique)
    ]
    return sorted(kept)


# --- file ------------------------------------------------------------------------------------


def file_cache_map(op: pb.FileOp, num_inputs: int) -> CacheMap:
    """``fileOp.CacheMap``: every action's JSON (base64), the index triples, the sources' selectors."""
    selectors: dict[int, list[Selector]] = {}
    invalid: set[int] = set()
    actions: list[bytes] = []
    indexes: list[list[int]] = []
    for action in op.actions:
        if action.input != EMPTY:
            # The destination's own selectors would be read from what the op changes.
            invalid.add(action.input)
        body = action.action
        owner = getattr(body, "owner", None)
        if owner is not None:
            _owner_selectors(owner, selectors)
        if (
            isinstance(body, pb.FileActionCopy)
            and action.secondary_input != EMPTY
            and action.secondary_input < num_inputs
        ):
            selectors.setdefault(action.secondary_input, []).append(_copy_selector(body))
            body = replace(body, src=go_path_base(body.src))
        actions.append(go_json(body))
        indexes.append([action.input, action.secondary_input, action.output])
    preimage = go_json(
        _Struct(
            ("Type", FILE_TYPE, False),
            ("Actions", actions, False),
            ("indexes", None if _is_default_indexes(indexes) else indexes, True),
        )
    )
    deps = [Dep() for _ in range(num_inputs)]
    for idx, sels in selectors.items():
        if not 0 <= idx < num_inputs:
            raise ValueError(f"file op names input {idx} of {num_inputs}")
        if idx in invalid:
            continue
        paths = sorted(
            (s.path.encode() for s in sels), reverse=True
        )  # BuildKit: "historical reasons"
        deps[idx] = Dep(sha256_bytes(b"\0".join(paths)), dedupe_selectors(sels))
    return CacheMap(preimage, sha256_bytes(preimage), tuple(deps))


def _copy_selector(copy: pb.FileActionCopy) -> Selector:
    return Selector(
        path=copy.src,
        wildcard=copy.allow_wildcard and contains_wildcards(copy.src),
        follow_links=copy.follow_symlink,
        include_patterns=copy.include_patterns,
        exclude_patterns=copy.exclude_patterns,
        required_paths=copy.required_paths,
    )


def _owner_selectors(owner: pb.ChownOpt, selectors: dict[int, list[Selector]]) -> None:
    # A user or group by name is looked up in that input's /etc/passwd or /etc/group.
    for opt, file in ((owner.user, "/etc/passwd"), (owner.group, "/etc/group")):
        if opt is not None and opt.by_name is not None:
            if opt.by_name.input < 0:
                raise ValueError(f"invalid user index {opt.by_name.input}")
            selectors.setdefault(opt.by_name.input, []).append(Selector(file, follow_links=True))


def dedupe_selectors(sels: Sequence[Selector]) -> tuple[Selector, ...]:
    """``dedupeSelectors``: plain paths deduplicated (followed and not apart), filtered ones kept, by path."""
    plain = dedupe_paths(
        [s.path for s in sels if not s.has_wildcard_or_filters and not s.follow_links]
    )
    follow = dedupe_paths(
        [s.path for s in sels if not s.has_wildcard_or_filters and s.follow_links]
    )
    out = [Selector(p) for p in plain] + [Selector(p, follow_links=True) for p in follow]
    out += [s for s in sels if s.has_wildcard_or_filters]
    # A stable sort by path, as Go's slices.SortFunc is not stable but keys are unique in practice.
    out.sort(key=lambda s: s.path.encode())
    return tuple(out)


def contains_wildcards(name: str) -> bool:
    """Whether ``name`` has an unescaped ``*``, ``?`` or ``[`` (Go's filepath.Match syntax)."""
    i = 0
    while i < len(name):
        ch = name[i]
        if ch in "*?[":
            return True
        if ch == "\\":
            i += 1
        i += 1
    return False


def go_path_base(p: str) -> str:
    """Go's ``path.Base``: trailing slashes dropped, "" is ".", all slashes is "/"."""
    if p == "":
        return "."
    p = p.rstrip("/")
    if p == "":
        return "/"
    return p.rsplit("/", 1)[-1]


def _is_default_indexes(indexes: list[list[int]]) -> bool:
    # The usual chain (first action on input 0, each next on the previous action,
    # sources from input 1, only the last writes output 0) keeps BuildKit's older
    # key form without indexes.
    if not indexes:
        return False
    last = len(indexes) - 1
    for i, (inp, secondary, output) in enumerate(indexes):
        if inp != (0 if i == 0 else len(indexes) + i - 1):
            return False
        if secondary not in (-1, 1):
            return False
        if output != (0 if i == last else -1):
            return False
    return True


# --- merge, source ---------------------------------------------------------------------------


def merge_cache_map(op: pb.MergeOp) -> CacheMap:
    preimage = go_json(_Struct(("Type", MERGE_TYPE, False), ("Merge", op, False)))
    return CacheMap(preimage, sha256_bytes(preimage), tuple(Dep() for _ in op.inputs))


def op_cache_map(op: pb.Op, num_inputs: int, platform: pb.Platform) -> CacheMap | None:
    """The cache map of an exec, file or merge op (``platform`` when the op names none);
    None for a source, whose key comes from what it resolves to."""
    if op.exec is not None:
        return exec_cache_map(op.exec, op.platform or platform, num_inputs)
    if op.file is not None:
        return file_cache_map(op.file, num_inputs)
    if op.merge is not None:
        return merge_cache_map(op.merge)
    return None


def source_cache_map(key: str) -> CacheMap:
    """A source's cache map: the string ``buildkit.source.v0:<key>`` hashed (no inputs)."""
    preimage = f"{SOURCE_TYPE}:{key}".encode()
    return CacheMap(preimage, sha256_bytes(preimage), ())


class _Struct:
    """An anonymous Go struct literal: (name, value, omitempty) in declaration order."""

    __slots__ = ("fields",)

    def __init__(self, *fields: tuple[str, object, bool]) -> None:
        self.fields = fields

    def go_json_fields(self) -> tuple[tuple[str, object, bool], ...]:
        return self.fields
