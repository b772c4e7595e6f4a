"""What a cache keeps for ``--explain-cache`` on another machine (``mason.explain``): values of
the environment never leave the machine, yet a changed build arg or file is still named."""

from __future__ import annotations

import json
from types import SimpleNamespace

from mason.cache.format import CacheConfig, CacheRecord, parse_cache_config, serialize_cache_config
from mason.digest import Digest
from mason.engine.explain import (
    FileEntry,
    StepRecord,
    explain_miss,
    exported_inputs,
    redact_preimage,
)
from mason.solver import CacheMap, compute_key


def _key(env: list[str], content: str | None = None, urls: list[str] | None = None):  # type: ignore[no-untyped-def]
    op: dict[str, object] = {"type": "mason.exec.v0", "args": ["sh", "-c", "true"], "env": env}
    if urls is not None:
        op = {"type": "mason.file.v0", "action": {"urls": urls}}
    return compute_key(CacheMap(op), [], content)


def test_environment_values_and_url_credentials_do_not_leave_the_machine() -> None:
    key = _key(["TOKEN=hunter2", "PATH=/bin"])
    redacted = redact_preimage(key.preimage)
    assert b"hunter2" not in redacted and b"TOKEN=sha256:" in redacted
    url_key = _key([], urls=["https://user:pa55@example.com/f.tgz"])
    assert b"pa55" not in redact_preimage(url_key.preimage)


def test_a_changed_build_arg_is_named_from_redacted_keys() -> None:
    old = compute_key(CacheMap({"type": "x"}), [], None)
    old_entry = exported_inputs(_key(["VERSION=1"]), None)
    stored = StepRecord(
        type(old).from_preimage(json.dumps(old_entry["key"]).encode()), redacted=True
    )
    new = type(old).from_preimage(redact_preimage(_key(["VERSION=2"]).preimage))
    assert explain_miss(stored, new, build_args={"VERSION"}) == "build arg VERSION changed"


def test_a_changed_file_is_named_from_the_exported_files() -> None:
    files = (FileEntry("app/a.txt", "file", 0o644, "sha256:1"),)
    entry = exported_inputs(_key([], "sha256:aa"), SimpleNamespace(context_files=files))
    stored = StepRecord(
        type(_key([])).from_preimage(json.dumps(entry["key"]).encode()),
        tuple(FileEntry.from_json(f) for f in entry["files"]),
        redacted=True,
    )
    new = _key([], "sha256:bb")
    changed = (FileEntry("app/a.txt", "file", 0o644, "sha256:2"),)
    assert explain_miss(stored, new, changed) == "COPY source app/a.txt changed (content)"


def test_the_explain_map_round_trips_and_follows_its_records() -> None:
    digest = Digest("sha256:" + "a" * 64)
    config = CacheConfig(
        records=(CacheRecord(digest),),
        steps={digest: "[a 1/2] RUN x"},
        explain={digest: {"key": {"v": "mason.v1"}}, "sha256:gone": {"key": {}}},
    )
    raw = serialize_cache_config(config)
    parsed = parse_cache_config(raw)
    assert parsed.explain[digest] == {"key": {"v": "mason.v1"}}
    kept = parsed.kept(parsed.records, parsed.layers)
    assert set(kept.explain) == {digest}
