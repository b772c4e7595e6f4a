"""Retention of a registry cache: when each record was last used, and pruning the least
recently used (buildkit#1896: a registry cache otherwise grows forever).

Each export stamps the records of its build with the time (``mason.lastUsed`` in the cache
config, a field BuildKit ignores). A stamp less than a day old is kept as it is, so that an
unchanged build re-exports byte-identical documents within a day; last use is therefore
known to a day. Pruning drops the results of records not used within ``keep_duration``,
then the least recently used results until the blobs still reached fit ``keep_size``; a
record with no result stays only while a record with a result links to it (BuildKit walks
the links), and layers no result reaches leave the document. The blobs themselves are
deleted by the registry's garbage collection, never by mason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from mason.cache.format import (
    ZERO_TIME,
    CacheConfig,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    ChainedResult,
    normalize_cache_config,
)
from mason.cache.options import CacheOptionsError
from mason.digest import Digest
from mason.structs import Struct, replace

__all__ = [
    "Pruned",
    "parse_duration",
    "parse_time",
    "prune_config",
    "stamp_last_used",
    "without_unreached_layers",
]

#: A last-use stamp younger than this is not renewed (byte-identical re-exports within a day).
REFRESH_SECONDS = 86400.0

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(text: str, what: str) -> float:
    """Seconds from Go's duration syntax (``1h30m``, ``90s``), plus ``d`` for days (``7d``)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CacheOptionsError(
            f"invalid {what} {text!r}: expected a duration such as 24h, 90m or 7d",
            reference="invalid-argument",
        )
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time as Go writes it (nanoseconds allowed); unreadable ones are the epoch."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        return datetime.fromtimestamp(0, UTC)
    zone = "+00:00" if match[3] == "Z" else match[3]
    frac = (match[2] or "")[:7]  # Python keeps microseconds
    return datetime.fromisoformat(match[1] + frac + zone)


def _format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp_last_used(config: CacheConfig, earlier: Mapping[str, str], now: str) -> CacheConfig:
    """``config`` (one build's records) with every record that has a result stamped as used
    ``now``, unless ``earlier`` (what the destination held) has a stamp under a day old."""
    current = parse_time(now)
    stamps: dict[str, str] = {}
    for rec in config.records:
        if not rec.has_result:
            continue
        before = earlier.get(rec.digest)
        recent = before and (current - parse_time(before)).total_seconds() < REFRESH_SECONDS
        stamps[rec.digest] = before if recent and before else _format_time(current)
    return replace(config, last_used=stamps)


def _last_use(config: CacheConfig, rec: CacheRecord) -> datetime:
    """A record's last use; for one never stamped (BuildKit's, or older mason's), its newest
    result's creation."""
    stamp = config.last_used.get(rec.digest)
    if stamp:
        return parse_time(stamp)
    created = [r.created_at for r in rec.results] + [c.created_at for c in rec.chains]
    return max((parse_time(t) for t in created), default=parse_time(ZERO_TIME))


class Pruned(Struct, frozen=True):
    config: CacheConfig
    dropped: int
    kept_bytes: int
    freed_bytes: int


def _chain_blobs(config: CacheConfig, rec: CacheRecord) -> set[Digest]:
    blobs: set[Digest] = set()
    for r in rec.results:
        blobs.update(config.layers[i].blob for i in config.chain(r.layer))
    for c in rec.chains:
        blobs.update(config.layers[i].blob for i in c.layers)
    return blobs


def prune_config(
    config: CacheConfig,
    sizes: Mapping[Digest, int],
    now: datetime,
    *,
    keep_duration: float | None = None,
    keep_size: int | None = None,
) -> Pruned:
    """``config`` without the results of records unused for ``keep_duration`` seconds, then
    without the least recently used ones until the blobs they reach fit ``keep_size`` bytes."""
    order = sorted(
        (i for i, rec in enumerate(config.records) if rec.has_result),
        key=lambda i: (_last_use(config, config.records[i]), config.records[i].digest),
    )
    chains = {i: _chain_blobs(config, config.records[i]) for i in order}
    users: dict[Digest, int] = {}
    for blobs in chains.values():
        for blob in blobs:
            users[blob] = users.get(blob, 0) + 1
    total = sum(sizes.get(b, 0) for b in users)
    before = total
    dropped: set[int] = set()
    for i in order:
        expired = keep_duration is not None and (
            (now - _last_use(config, config.records[i])).total_seconds() > keep_duration
        )
        over = keep_size is not None and total > keep_size
        # over the size, a result whose blobs all serve newer ones too frees nothing: keep it
        frees = sum(sizes.get(b, 0) for b in chains[i] if users[b] == 1)
        if not expired and not (over and frees > 0):
            continue
        dropped.add(i)
        for blob in chains[i]:
            users[blob] -= 1
            if users[blob] == 0:
                total -= sizes.get(blob, 0)
    records = [
        CacheRecord(rec.digest, inputs=rec.inputs) if i in dropped else rec
        for i, rec in enumerate(config.records)
    ]
    kept = _linked_from_results(records)
    pruned = without_unreached_layers(_only(config, records, kept))
    return Pruned(normalize_cache_config(pruned), len(dropped), total, before - total)


def _linked_from_results(records: list[CacheRecord]) -> set[int]:
    """Records with a result and every record they link to, transitively."""
    kept: set[int] = set()
    todo = [i for i, rec in enumerate(records) if rec.has_result]
    while todo:
        i = todo.pop()
        if i in kept:
            continue
        kept.add(i)
        todo.extend(link.link for inp in records[i].inputs for link in inp)
    return kept


def _only(config: CacheConfig, records: list[CacheRecord], kept: set[int]) -> CacheConfig:
    """The config with only the ``kept`` records, links renumbered."""
    order = sorted(kept)
    new = {old: n for n, old in enumerate(order)}
    out = tuple(
        CacheRecord(
            records[i].digest,
            records[i].results,
            records[i].chains,
            tuple(
                tuple(CacheInput(new[link.link], link.selector) for link in inp if link.link in new)
                for inp in records[i].inputs
            ),
        )
        for i in order
    )
    return config.kept(out, config.layers)


def without_unreached_layers(config: CacheConfig) -> CacheConfig:
    """Drop layers no result's chain passes through (their blobs would be listed for nothing)."""
    used: set[int] = set()
    for rec in config.records:
        for r in rec.results:
            used.update(config.chain(r.layer))
        for c in rec.chains:
            used.update(c.layers)
    order = sorted(used)
    new_index = {old: new for new, old in enumerate(order)}
    layers = tuple(
        CacheLayer(config.layers[i].blob, new_index.get(config.layers[i].parent, -1)) for i in order
    )
    records = tuple(
        CacheRecord(
            rec.digest,
            tuple(CacheResult(new_index[r.layer], r.created_at) for r in rec.results),
            tuple(
                ChainedResult(tuple(new_index[i] for i in c.layers), c.created_at)
                for c in rec.chains
            ),
            rec.inputs,
        )
        for rec in config.records
    )
    return replace(config, layers=layers, records=records)
