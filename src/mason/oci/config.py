"""Image config documents (OCI ``config.v1`` and Docker ``container.image.v1``).

``ImageConfig`` keeps the raw bytes it was read from (its digest is of those)
and a parsed dict behind read-only accessors. New configs are serialised with
sorted keys and no whitespace, so the same content gives the same digest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mason.digest import Digest, DigestError, parse_digest
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor, RawDocument
from mason.oci.errors import ConfigError
from mason.oci.platform import Platform
from mason.structs import Struct

__all__ = [
    "HistoryEntry",
    "ImageConfig",
    "build_image_config",
    "json_copy",
    "parse_image_config",
    "serialise_config",
]


class HistoryEntry(Struct, frozen=True):
    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created is not None:
            out["created"] = self.created
        if self.created_by is not None:
            out["created_by"] = self.created_by
        if self.author is not None:
            out["author"] = self.author
        if self.comment is not None:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> HistoryEntry:
        def text(key: str) -> str | None:
            v = value.get(key)
            return v if isinstance(v, str) else None

        return cls(
            text("created"),
            text("created_by"),
            text("author"),
            text("comment"),
            bool(value.get("empty_layer")),
        )


def serialise_config(data: Mapping[str, Any]) -> bytes:
    """Deterministic bytes for a config dict: sorted keys, compact, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class ImageConfig(RawDocument, Struct, frozen=True):
    raw: bytes
    data: Mapping[str, Any]

    __hash__ = RawDocument.__hash__

    def descriptor(self, media_type: str = mt.OCI_CONFIG) -> Descriptor:
        return Descriptor(media_type, self.digest, len(self.raw))

    def _str(self, key: str) -> str | None:
        v = self.data.get(key)
        return v if isinstance(v, str) else None

    @property
    def architecture(self) -> str | None:
        return self._str("architecture")

    @property
    def os(self) -> str | None:
        return self._str("os")

    @property
    def variant(self) -> str | None:
        return self._str("variant")

    @property
    def created(self) -> str | None:
        return self._str("created")

    @property
    def author(self) -> str | None:
        return self._str("author")

    @property
    def platform(self) -> Platform | None:
        if self.os is None or self.architecture is None:
            return None
        return Platform(self.os, self.architecture, self.variant)

    @property
    def config(self) -> Mapping[str, Any]:
        """The runtime defaults (``Env``, ``Cmd``, ``Entrypoint``, ``WorkingDir``, ``User``, ...)."""
        v = self.data.get("config")
        return v if isinstance(v, Mapping) else {}

    def _list(self, key: str) -> tuple[str, ...] | None:
        v = self.config.get(key)
        if v is None:
            return None
        return tuple(str(x) for x in v) if isinstance(v, list) else None

    @property
    def env(self) -> tuple[str, ...]:
        return self._list("Env") or ()

    @property
    def env_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    @property
    def cmd(self) -> tuple[str, ...] | None:
        return self._list("Cmd")

    @property
    def entrypoint(self) -> tuple[str, ...] | None:
        return self._list("Entrypoint")

    @property
    def shell(self) -> tuple[str, ...] | None:
        return self._list("Shell")

    @property
    def working_dir(self) -> str:
        v = self.config.get("WorkingDir")
        return v if isinstance(v, str) else ""

    @property
    def user(self) -> str:
        v = self.config.get("User")
        return v if isinstance(v, str) else ""

    @property
    def labels(self) -> Mapping[str, str]:
        v = self.config.get("Labels")
        return {str(k): str(x) for k, x in v.items()} if isinstance(v, Mapping) else {}

    @property
    def on_build(self) -> tuple[str, ...]:
        return self._list("OnBuild") or ()

    @property
    def diff_ids(self) -> tuple[Digest, ...]:
        rootfs = self.data.get("rootfs")
        if not isinstance(rootfs, Mapping):
            return ()
        return tuple(Digest(str(d)) for d in rootfs.get("diff_ids") or ())

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        v = self.data.get("history")
        if not isinstance(v, list):
            return ()
        return tuple(HistoryEntry.from_json(h) for h in v if isinstance(h, Mapping))

    def to_dict(self) -> dict[str, Any]:
        """A deep, mutable copy of the parsed document (to derive a new config from)."""
        copied: dict[str, Any] = json_copy(dict(self.data))
        return copied


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, tuples and immutable leaves), as
    ``copy.deepcopy`` makes it, without importing copy and weakref for every build (and
    faster); anything else is handed to deepcopy."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, tuple):
        return tuple(json_copy(v) for v in value)
    import copy

    return copy.deepcopy(value)


def parse_image_config(raw: bytes, *, where: str = "image config") -> ImageConfig:
    """Parse and check the shape of a config; ``ConfigError`` names what is wrong."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for key in ("architecture", "os", "variant", "created", "author"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise ConfigError(f"{where}: {key} must be a string")
    if data.get("config") is not None and not isinstance(data["config"], dict):
        raise ConfigError(f"{where}: config must be an object")
    rootfs = data.get("rootfs")
    if rootfs is not None:
        if not isinstance(rootfs, dict):
            raise ConfigError(f"{where}: rootfs must be an object")
        diff_ids = rootfs.get("diff_ids") or []
        if not isinstance(diff_ids, list):
            raise ConfigError(f"{where}: rootfs.diff_ids must be a list")
        for i, d in enumerate(diff_ids):
            try:
                parse_digest(d if isinstance(d, str) else "")
            except DigestError as exc:
                raise ConfigError(f"{where}: rootfs.diff_ids[{i}]: {exc.message}") from exc
    if data.get("history") is not None and not isinstance(data["history"], list):
        raise ConfigError(f"{where}: history must be a list")
    return ImageConfig(raw, data)


def build_image_config(
    data: Mapping[str, Any] | None = None,
    *,
    platform: Platform | None = None,
    diff_ids: Sequence[Digest] | None = None,
    history: Sequence[HistoryEntry] | None = None,
    config: Mapping[str, Any] | None = None,
    created: str | None = None,
) -> ImageConfig:
    """A config with deterministic bytes. Keyword arguments override fields of ``data``."""
    doc: dict[str, Any] = json_copy(dict(data or {}))
    if platform is not None:
        doc["architecture"] = platform.architecture
        doc["os"] = platform.os
        if platform.variant:
            doc["variant"] = platform.variant
        else:
            doc.pop("variant", None)
    if diff_ids is not None:
        doc["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    if history is not None:
        doc["history"] = [h.to_json() for h in history]
    if config is not None:
        doc["config"] = dict(config)
    if created is not None:
        doc["created"] = created
    return parse_image_config(serialise_config(doc))
