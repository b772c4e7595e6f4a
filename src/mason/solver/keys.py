"""Cache keys: what a step's key is made of, and how two keys differ.

A key is ``sha256`` of the canonical JSON
``{"v": KEY_VERSION, "op": <op definition>, "inputs": [<input keys>], "content": <checksum or null>}``
(``docs/architecture.md`` §4; the policy is in ``docs/cache-keys.md``). We keep the preimage
bytes with every key so that a miss can be explained later (``docs/architecture.md`` §8).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mason.digest import Digest, canonical_json, sha256_bytes
from mason.structs import Struct, eq_without, force_setattr, repr_without

__all__ = [
    "KEY_VERSION",
    "CacheKey",
    "CacheMap",
    "DeferredKey",
    "InvalidCacheMapError",
    "KeyDifference",
    "compute_key",
    "diff_keys",
    "key_differences",
]

#: Bumped whenever what enters a key changes meaning (see docs/cache-keys.md).
KEY_VERSION = "mason.v1"


class InvalidCacheMapError(TypeError):
    """An op returned a definition that cannot be hashed canonically (a bug in the op)."""


class CacheMap(Struct, frozen=True):
    """What an op contributes to its key.

    ``op`` is the op's definition as a JSON object with a versioned ``"type"``
    string (``"mason.exec.v0"``) and every non-semantic field already blanked
    or left out. ``content``, when given, returns a checksum of data the op
    reads from outside the graph (the build context files a COPY selects); the
    solver calls it at most once, on a worker thread, only for a vertex whose
    key is needed, and never before the vertex's inputs have keys.
    """

    op: Mapping[str, Any]
    content: Callable[[], str] | None = None

    __eq__, __hash__ = eq_without("content")


class CacheKey(Struct, frozen=True):
    """A computed key: its digest and the exact bytes it is the digest of."""

    digest: Digest
    preimage: bytes
    inputs: tuple[Digest, ...]
    content: str | None
    #: every digest the step may be found under in an imported cache (``digest`` first);
    #: empty: ``digest`` only. A builder's ``rekey`` sets it (BuildKit's chain keys).
    alternatives: tuple[Digest, ...] = ()
    #: what the builder's cache exporter needs beyond the digest; the solver passes it on
    export: object = None

    __repr__ = repr_without("preimage", "export")
    __eq__, __hash__ = eq_without("export")

    @property
    def lookup_digests(self) -> tuple[Digest, ...]:
        return self.alternatives or (self.digest,)

    @property
    def version(self) -> str:
        return str(self._decoded()["v"])

    @property
    def op(self) -> dict[str, Any]:
        """A fresh copy of the op definition that entered the key."""
        op: dict[str, Any] = self._decoded()["op"]
        return op

    def _decoded(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.preimage)
        return decoded

    def __str__(self) -> str:
        return self.digest

    @classmethod
    def from_preimage(cls, preimage: bytes) -> CacheKey:
        """The key a kept preimage is the preimage of (``--explain-cache`` keeps them)."""
        decoded = json.loads(preimage)
        return cls(
            digest=sha256_bytes(preimage),
            preimage=preimage,
            inputs=tuple(Digest(i) for i in decoded["inputs"]),
            content=decoded["content"],
        )


class DeferredKey(CacheKey, frozen=True):
    """A key whose digest a builder knows (BuildKit's chain key) and whose own preimage
    (``preimage``, ``content``: what explains a miss) is made on first read, by ``make``:
    a warm build that explains nothing and exports nothing never reads its context twice."""

    _make: Callable[[], CacheKey] | None = None
    _made: CacheKey | None = None

    __repr__ = repr_without("preimage", "export", "_make", "_made")
    __eq__, __hash__ = eq_without("export", "_make", "_made")

    @classmethod
    def of(
        cls,
        digest: Digest,
        inputs: Sequence[Digest],
        make: Callable[[], CacheKey],
        *,
        alternatives: tuple[Digest, ...] = (),
        export: object = None,
    ) -> DeferredKey:
        return cls(digest, b"", tuple(inputs), None, alternatives, export, make)

    def _made_key(self) -> CacheKey:
        made = self._made
        if made is None:
            assert self._make is not None
            made = self._make()  # two threads may both make it: the same bytes
            force_setattr(self, "_made", made)
        return made

    # the fields' own slots (b"", None) are never read: these come first in the lookup
    @property  # type: ignore[misc]
    def preimage(self) -> bytes:
        return self._made_key().preimage

    @property  # type: ignore[misc]
    def content(self) -> str | None:
        return self._made_key().content


def compute_key(cache_map: CacheMap, input_keys: Sequence[Digest], content: str | None) -> CacheKey:
    """The key of an op with definition ``cache_map.op``, given its inputs' keys and content.

    ``content`` is the already computed checksum (``cache_map.content`` is not
    called here). Raises ``InvalidCacheMapError`` when the definition is not a
    JSON object with a string ``type`` or holds values JSON cannot express
    exactly.
    """
    op = cache_map.op
    if not isinstance(op, Mapping) or not isinstance(op.get("type"), str):
        raise InvalidCacheMapError(
            "an op definition must be a JSON object with a string 'type', e.g. 'mason.exec.v0'"
        )
    if content is not None and not isinstance(content, str):
        raise InvalidCacheMapError(
            f"a content checksum must be a string, got {type(content).__name__}"
        )
    _check_json(op, "op")
    preimage_value = {
        "v": KEY_VERSION,
        "op": op,
        "inputs": list(input_keys),
        "content": content,
    }
    try:
        preimage = canonical_json(preimage_value)
    except (TypeError, ValueError) as exc:
        raise InvalidCacheMapError(f"op definition is not canonical JSON: {exc}") from exc
    return CacheKey(
        digest=sha256_bytes(preimage),
        preimage=preimage,
        inputs=tuple(input_keys),
        content=content,
    )


def _check_json(value: Any, where: str) -> None:
    # Floats are refused: their text form is a poor thing to hash, and no op
    # definition needs one. Tuples are accepted and hash like lists.
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidCacheMapError(f"{where}: key {k!r} is not a string")
            _check_json(v, f"{where}.{k}")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]")
        return
    raise InvalidCacheMapError(f"{where}: {type(value).__name__} is not allowed in a key")


class KeyDifference(Struct, frozen=True):
    """One field in which two keys' preimages differ.

    ``field`` is ``"v"``, ``"op.<path>"`` (dots for nested objects), ``"inputs"`` (their number),
    ``"inputs[<i>]"`` or ``"content"``; ``change`` is ``"changed"``, ``"added"`` or ``"removed"``
    (the missing side is None).
    """

    field: str
    old: Any
    new: Any
    change: str = "changed"


def diff_keys(old: CacheKey, new: CacheKey) -> tuple[KeyDifference, ...]:
    """Every field in which ``new`` differs from ``old``: version, op fields (sorted by path),
    inputs in order, content."""
    if old.digest == new.digest:
        return ()
    a, b = old._decoded(), new._decoded()
    out: list[KeyDifference] = []
    if a["v"] != b["v"]:
        out.append(KeyDifference("v", a["v"], b["v"]))
    _diff_json(a["op"], b["op"], "op", out)
    old_inputs, new_inputs = a["inputs"], b["inputs"]
    if len(old_inputs) != len(new_inputs):
        out.append(KeyDifference("inputs", len(old_inputs), len(new_inputs)))
    for i, (x, y) in enumerate(zip(old_inputs, new_inputs, strict=False)):
        if x != y:
            out.append(KeyDifference(f"inputs[{i}]", x, y))
    if a["content"] != b["content"]:
        out.append(KeyDifference("content", a["content"], b["content"]))
    return tuple(out)


def key_differences(old: CacheKey, new: CacheKey) -> tuple[str, ...]:
    """Human-readable reasons why ``new`` is not ``old``, first difference first.

    Used to explain a miss against the nearest known key: a changed op field
    (``op.env: ['A=1'] -> ['A=2']``), a changed input (``input 0: sha256:… ->
    sha256:…``), changed content, or a different key version.
    """
    return tuple(_describe(d) for d in diff_keys(old, new))


def _describe(d: KeyDifference) -> str:
    if d.field == "v":
        return f"key version: {d.old} -> {d.new}"
    if d.field == "inputs":
        return f"number of inputs: {d.old} -> {d.new}"
    if d.field.startswith("inputs["):
        return f"input {d.field[7:-1]}: {d.old} -> {d.new}"
    if d.field == "content":
        return f"content: {d.old} -> {d.new}"
    if d.change == "added":
        return f"{d.field}: added {_short(d.new)}"
    if d.change == "removed":
        return f"{d.field}: removed {_short(d.old)}"
    return f"{d.field}: {_short(d.old)} -> {_short(d.new)}"


def _diff_json(a: Any, b: Any, path: str, out: list[KeyDifference]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{k}"
            if k not in a:
                out.append(KeyDifference(sub, None, b[k], "added"))
            elif k not in b:
                out.append(KeyDifference(sub, a[k], None, "removed"))
            else:
                _diff_json(a[k], b[k], sub, out)
    elif a != b:
        out.append(KeyDifference(path, a, b))


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"
