"""--explain-cache: how each kind of key difference is rendered, and the kept records."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mason.digest import sha256_bytes
from mason.engine.context import ContextEntry, Source, checksum_sources
from mason.engine.explain import (
    MAX_FILES,
    NO_EARLIER,
    FileEntry,
    StepRecord,
    context_file_entries,
    explain_miss,
    step_identity,
)
from mason.engine.state import Metadata
from mason.solver import CacheKey, CacheMap, compute_key

IN_A = "sha256:" + "a" * 64
IN_B = "sha256:" + "b" * 64


def _exec(env: list[str], inputs: tuple[str, ...] = (IN_A,), **kw: Any) -> CacheKey:
    op = {
        "type": "mason.exec.v0",
        "args": ["sh", "-c", "x"],
        "env": env,
        "cwd": "/",
        "user": "",
        "network": "default",
        "mounts": [],
        "files": {},
        "epoch": None,
    } | kw
    return compute_key(CacheMap(op), inputs, None)  # type: ignore[arg-type]


def _copy(content: str, **action: Any) -> CacheKey:
    act = {"kind": "copy", "sources": ["app"], "dest": "/app", "chmod": ""} | action
    return compute_key(
        CacheMap({"type": "mason.file.v0", "action": act, "epoch": None}), (IN_A,), content
    )  # type: ignore[arg-type]


def _files(**kw: tuple[int, str]) -> tuple[FileEntry, ...]:
    return tuple(
        FileEntry(p.replace("__", "/").replace("_", "."), "file", m, c)
        for p, (m, c) in sorted(kw.items())
    )


def test_no_record_says_no_earlier_build() -> None:
    assert explain_miss(None, _exec([])) == NO_EARLIER


def test_no_cache_is_named_first() -> None:
    k = _exec([])
    assert explain_miss(StepRecord(k), k, no_cache=True) == "cache not used (--no-cache)"


def test_same_key_that_ran_means_result_gone() -> None:
    k = _exec([])
    assert "result is no longer stored" in explain_miss(StepRecord(k), k)


def test_build_arg_named_without_its_value() -> None:
    text = explain_miss(
        StepRecord(_exec(["PATH=/bin", "VERSION=1"])),
        _exec(["PATH=/bin", "VERSION=2"]),
        build_args={"VERSION"},
    )
    assert text == "build arg VERSION changed"
    assert "2" not in text.replace("VERSION", "")


def test_env_not_a_build_arg_added_and_more() -> None:
    text = explain_miss(StepRecord(_exec(["A=1"])), _exec(["A=2", "B=1"]))
    assert text == "environment variable A changed (and 1 more)"
    assert explain_miss(StepRecord(_exec([])), _exec(["B=1"])) == "environment variable B added"


def test_base_image_digests_shortened() -> None:
    old = compute_key(CacheMap({"type": "mason.source.v0", "image": IN_A}), (), None)
    new = compute_key(CacheMap({"type": "mason.source.v0", "image": IN_B}), (), None)
    assert explain_miss(StepRecord(old), new) == f"base image changed ({IN_A[:19]} → {IN_B[:19]})"


def test_input_step_reason_used_for_changed_input() -> None:
    text = explain_miss(
        StepRecord(_exec([])),
        _exec([], (IN_B,)),
        input_reasons=["input step [b 2/3] RUN x changed"],
    )
    assert text == "input step [b 2/3] RUN x changed"


def test_definition_fields() -> None:
    assert (
        explain_miss(StepRecord(_exec([])), _exec([], cwd="/src"))
        == "working directory changed (/ → /src)"
    )
    assert explain_miss(StepRecord(_exec([])), _exec([], args=["true"])) == "command changed"
    assert (
        explain_miss(StepRecord(_copy("c")), _copy("c", chmod="755"), verb="COPY")
        == "COPY --chmod changed ( → 755)"
    )


def test_op_change_comes_before_input_change() -> None:
    text = explain_miss(
        StepRecord(_exec([])), _exec([], (IN_B,), user="app"), input_reasons=["input changed"]
    )
    assert text == "user changed ( → app)"


def test_file_content_mode_added_removed() -> None:
    old = _files(app__a_txt=(0o644, "sha256:1"), app__b_txt=(0o644, "sha256:2"))
    rec = StepRecord(_copy("c1"), old)
    new = _files(app__a_txt=(0o644, "sha256:9"), app__b_txt=(0o644, "sha256:2"))
    assert explain_miss(rec, _copy("c2"), new) == "COPY source app/a.txt changed (content)"
    new = _files(app__a_txt=(0o644, "sha256:1"), app__b_txt=(0o755, "sha256:2"))
    assert (
        explain_miss(rec, _copy("c2"), new, verb="ADD")
        == "ADD source app/b.txt changed (mode 0644 → 0755)"
    )
    new = _files(app__a_txt=(0o644, "sha256:1"))
    assert explain_miss(rec, _copy("c2"), new) == "COPY source app/b.txt removed"
    new = _files(
        app__a_txt=(0o644, "sha256:1"), app__b_txt=(0o644, "sha256:2"), app__c_txt=(0o644, "x")
    )
    assert explain_miss(rec, _copy("c2"), new) == "COPY source app/c.txt added"


def test_content_without_file_lists() -> None:
    assert explain_miss(StepRecord(_copy("c1")), _copy("c2")) == "COPY sources changed (content)"


def test_git_commit_change_is_named() -> None:
    git = [["http://h/r.git#main", "", False, True, ""]]
    old, new = _copy("git:c1", sources=[], git=git), _copy("git:c2", sources=[], git=git)
    assert explain_miss(StepRecord(old), new, verb="ADD") == (
        "ADD git repository moved to another commit"
    )
    other = _copy("git:c1", sources=[], git=[["http://h/r.git#v2", "", False, True, ""]])
    assert "git source" in explain_miss(StepRecord(old), other, verb="ADD")


def test_key_version_change() -> None:
    old = _exec([])
    preimage = old.preimage.replace(b'"v":"mason.v1"', b'"v":"mason.v0"')
    assert (
        explain_miss(StepRecord(CacheKey.from_preimage(preimage)), old)
        == "cache key format changed (mason.v0 → mason.v1)"
    )


def by_path_checksum(entries: tuple[FileEntry, ...], path: str) -> str:
    return next(e.checksum for e in entries if e.path == path)


def test_context_file_entries_name_each_file(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "x.txt").write_text("x")
    (tmp_path / "app" / "l").symlink_to("x.txt")
    walked: list[ContextEntry] = []
    checksum = checksum_sources([Source(tmp_path / "app", "app", True)], None, walked)
    # collecting the entries rides on the same walk and leaves the checksum unchanged
    assert checksum == checksum_sources([Source(tmp_path / "app", "app", True)], None)
    entries = context_file_entries(walked)
    assert entries is not None
    assert by_path_checksum(entries, "app/x.txt") == sha256_bytes(b"x")
    by_path = {e.path: e for e in entries}
    assert by_path["app/x.txt"].kind == "file" and by_path["app/x.txt"].checksum.startswith(
        "sha256:"
    )
    assert by_path["app/l"].checksum == "x.txt"
    assert FileEntry.from_json(by_path["app"].to_json()) == by_path["app"]


def test_identity_ignores_pinned_digest(tmp_path: Path) -> None:
    a = step_identity(tmp_path, "Dockerfile", f"[b 1/2] FROM r/busybox@{IN_A}")
    b = step_identity(tmp_path, "Dockerfile", f"[b 1/2] FROM r/busybox@{IN_B}")
    assert a == b and "FROM r/busybox" in a


def test_step_keys_table_bounded_and_replaced(tmp_path: Path) -> None:
    meta = Metadata(tmp_path / "meta.db")
    meta.MAX_STEP_KEYS = 3  # type: ignore[misc]
    meta.put_step_keys([(f"id{i}", f"k{i}", b"{}", None) for i in range(5)])
    meta.put_step_keys([("id0", "new", b"{}", "[]")])
    assert meta.step_key("id0") == ("new", b"{}", "[]")
    kept = meta._conn().execute("SELECT COUNT(*) FROM step_keys").fetchone()[0]
    assert kept == 3


def test_line_shape_is_a_status_line() -> None:
    """The rendered line never starts like a step header or a BuildKit status word."""
    line = "cache miss: " + NO_EARLIER
    assert not re.match(r"(\[|CACHED|DONE|ERROR|WARNING|CANCELED|\d+\.\d+ )", line)


def test_context_file_entries_give_up_past_the_limit() -> None:
    walked: list[ContextEntry] = [(f"f{i}", "file", 0o644, "") for i in range(MAX_FILES + 1)]
    assert context_file_entries(walked) is None
    assert context_file_entries(walked[:2]) == (
        FileEntry("f0", "file", 0o644, ""),
        FileEntry("f1", "file", 0o644, ""),
    )


class _Counted:
    """A step's own key made on demand, counting how often (a context walk each time)."""

    def __init__(self, key: CacheKey) -> None:
        self.key, self.made = key, 0

    def __call__(self) -> CacheKey:
        self.made += 1
        return self.key


def _recorded(tmp_path: Path, meta: Metadata, key: CacheKey) -> None:
    from types import SimpleNamespace

    from mason.engine.explain import ExplainRecorder
    from mason.solver import NullProgress, Vertex

    rec = ExplainRecorder(
        NullProgress(),
        meta,
        context=tmp_path,
        dockerfile="Dockerfile",
        build_args=(),
        explain=False,
    )
    vertex = Vertex(SimpleNamespace(context_files=None), name="[1/2] COPY app /app")
    rec.vertex_cached(vertex, key, "local")
    rec.flush()


def test_a_step_kept_with_the_same_key_does_not_make_its_preimage(tmp_path: Path) -> None:
    from mason.solver import DeferredKey

    meta = Metadata(tmp_path / "meta.db")
    own = _Counted(_copy("sha256:" + "c" * 64))
    _recorded(tmp_path, meta, DeferredKey.of(IN_B, (IN_A,), own))
    assert own.made == 1  # a new step identity: its preimage is kept
    identity = step_identity(tmp_path, "Dockerfile", "[1/2] COPY app /app")
    assert meta.step_key(identity) == (IN_B, own.key.preimage, None)
    _recorded(tmp_path, meta, DeferredKey.of(IN_B, (IN_A,), own))
    assert own.made == 1  # the same key again: only marked used
    changed = _Counted(_copy("sha256:" + "d" * 64))
    _recorded(tmp_path, meta, DeferredKey.of(IN_A, (IN_A,), changed))
    assert changed.made == 1
    assert meta.step_key(identity) == (IN_A, changed.key.preimage, None)
