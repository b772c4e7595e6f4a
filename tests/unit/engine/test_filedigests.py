"""mason.engine.filedigests: a context file whose stat is unchanged since the last build on the
root is not read again, by BuildKit's content checksum (``ContentTree``) nor by mason's own
(``checksum_sources``); a changed ctime, a racy entry or a corrupt cache means the file is read.
Within one build a file is read once for both checksums (the context tree notes its plain
sha256 from the same read), unless it changed in between.

Reads are observed through the two functions that read a context file's bytes
(``ContentTree._read_digest``, ``context._read_sha256``). Files written by a test are younger
than the racy margin, so the tests that expect a digest to be kept run the build "later" (the
clock the recording compares with, moved 10 s on); the racy tests use the real clock."""

from __future__ import annotations

import os
import sqlite3
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.unit.llb import golden

from mason.digest import sha256_bytes
from mason.engine import context as ctxmod
from mason.engine import filedigests
from mason.engine.context import Source, checksum_sources
from mason.engine.filedigests import FileDigestCache, decode, encode
from mason.engine.metadata import Metadata
from mason.engine.racy import racy_margin_ns
from mason.engine.stateroot import StateRoot
from mason.llb.cachemap import Selector
from mason.llb.contenthash import CONTEXT_FILE_KIND, ContentTree


@pytest.fixture
def meta(tmp_path: Path) -> Metadata:
    return Metadata(tmp_path / "meta.db")


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build runs 10 s after the test wrote its files: they are no longer racy."""
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 10 * 1_000_000_000)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The context files read (``ContentTree``'s path below the root, ``checksum_sources``'s
    host path), in order."""
    seen: list[str] = []
    tree_read = ContentTree._read_digest
    sha_read = ctxmod._read_sha256

    def tree(self: ContentTree, rec: Any, plain: Any = None) -> Any:
        if rec.st is not None and stat.S_ISREG(rec.st.st_mode) and rec.st.st_size > 0:
            seen.append(rec.rel)
        return tree_read(self, rec, plain)

    def sha(path: Path) -> Any:
        seen.append(str(path))
        return sha_read(path)

    monkeypatch.setattr(ContentTree, "_read_digest", tree)
    monkeypatch.setattr(ctxmod, "_read_sha256", sha)
    return seen


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "app" / "sub").mkdir(parents=True)
    (root / "app" / "a.txt").write_bytes(b"alpha\n")
    (root / "app" / "sub" / "b.txt").write_bytes(b"beta\n" * 1000)
    (root / "app" / "empty").write_bytes(b"")
    (root / "app" / "link").symlink_to("a.txt")
    return root


def _bk(root: Path, cache: FileDigestCache | None) -> str:
    digests = cache.for_root(root) if cache is not None else None
    with ContentTree.for_context(root, digests=digests) as tree:
        return tree.checksum(Selector("/app"))


def _own(root: Path, cache: FileDigestCache | None) -> tuple[str, list[Any]]:
    entries: list[Any] = []
    digests = cache.for_root(root) if cache is not None else None
    dgst = checksum_sources([Source(root / "app", "app", True)], None, entries, digests)
    return dgst, entries


def _both(root: Path, cache: FileDigestCache | None) -> tuple[str, str, list[Any]]:
    bk = _bk(root, cache)
    own, entries = _own(root, cache)
    if cache is not None:
        cache.flush()
    return bk, own, entries


def test_an_unchanged_file_is_not_read_again(
    ctx: Path, meta: Metadata, later: None, reads: list[str]
) -> None:
    plain = _both(ctx, None)
    reads.clear()
    cold = _both(ctx, FileDigestCache(lambda: meta))
    assert cold == plain
    # a.txt and sub/b.txt, once for both checksums (an empty file has no bytes to read)
    assert sorted(reads) == ["app/a.txt", "app/sub/b.txt"]
    reads.clear()
    warm = _both(ctx, FileDigestCache(lambda: meta))  # the next build: a new cache on the same root
    assert warm == plain
    assert reads == []


def test_a_relative_context_is_kept_too(
    ctx: Path, meta: Metadata, later: None, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ctx)  # mason build . names the context "."
    cache = FileDigestCache(lambda: meta)
    cold = _own(Path("."), cache)
    cache.flush()
    reads.clear()
    assert _own(Path("."), FileDigestCache(lambda: meta)) == cold
    assert reads == []


def test_only_the_changed_file_is_read(
    ctx: Path, meta: Metadata, later: None, reads: list[str]
) -> None:
    _both(ctx, FileDigestCache(lambda: meta))
    (ctx / "app" / "a.txt").write_bytes(b"alpha, changed\n")
    reads.clear()
    warm = _both(ctx, FileDigestCache(lambda: meta))
    assert warm == _both(ctx, None)
    assert reads[:1] == ["app/a.txt"]
    # then every file, by each of the checksums without a cache (nothing shared)
    assert len(reads) == 1 + 4


def test_a_file_changed_between_the_checksums_is_read_again(
    ctx: Path, meta: Metadata, later: None, reads: list[str]
) -> None:
    cache = FileDigestCache(lambda: meta)
    _bk(ctx, cache)
    (ctx / "app" / "a.txt").write_bytes(b"alpha, changed after the first checksum\n")
    reads.clear()
    own, entries = _own(ctx, cache)
    assert reads == [str(ctx / "app" / "a.txt")]
    assert own == _own(ctx, None)[0]
    digest = sha256_bytes(b"alpha, changed after the first checksum\n")
    assert ("app/a.txt", "file", 0o644, digest) in entries


def _rewrite_same_size_and_mtime(path: Path, data: bytes) -> None:
    """``data`` (as long as the old bytes) into ``path`` in place, its mtime put back as
    ``touch -d`` would: only the ctime (which user space cannot set) tells the change."""
    before = os.stat(path)
    assert len(data) == before.st_size
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    while os.stat(path).st_ctime_ns == before.st_ctime_ns:  # the same clock tick: once more
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def test_same_size_and_mtime_forced_back_but_a_new_ctime_is_read_again(
    ctx: Path, meta: Metadata, later: None, reads: list[str]
) -> None:
    cold = _both(ctx, FileDigestCache(lambda: meta))
    _rewrite_same_size_and_mtime(ctx / "app" / "a.txt", b"ALPHA\n")
    reads.clear()
    warm = _both(ctx, FileDigestCache(lambda: meta))
    assert reads == ["app/a.txt"]
    assert warm[0] != cold[0] and warm[1] != cold[1]
    assert warm == _both(ctx, None)
    assert ("app/a.txt", "file", 0o644, sha256_bytes(b"ALPHA\n")) in warm[2]


def test_a_racy_file_is_not_kept_and_read_again(
    ctx: Path, meta: Metadata, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the build starts 1 ms after the files' last change: within the racy margin, however
    # slow this machine is now
    newest = max(max(st.st_mtime_ns, st.st_ctime_ns) for st in map(os.lstat, ctx.rglob("*")))
    monkeypatch.setattr(time, "time_ns", lambda: newest + 1_000_000)
    cache = FileDigestCache(lambda: meta)
    cold = _both(ctx, cache)
    assert meta.file_digests(cache.for_root(ctx).root) is None
    reads.clear()
    assert _both(ctx, FileDigestCache(lambda: meta)) == cold
    assert len(reads) == 4  # two files, by each checksum: a racy read is not shared either


def _entry(st: os.stat_result, digest: bytes, recorded_ns: int) -> bytes:
    return struct.pack(
        "<QQqqqQ32sq",
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_mode,
        digest,
        recorded_ns,
    )


def test_a_racy_entry_is_not_trusted(ctx: Path, meta: Metadata) -> None:
    st = os.lstat(ctx / "app" / "a.txt")
    fake = bytes(32)  # not the file's digest: trusting it would give a wrong key
    settled = max(st.st_mtime_ns, st.st_ctime_ns) + racy_margin_ns(st)
    entries = {
        ("app/a.txt", "k-racy"): _entry(st, fake, settled - 1),
        ("app/a.txt", "k-settled"): _entry(st, fake, settled),
    }
    meta.update_file_digests(str(ctx.resolve()), lambda _: encode(entries))
    digests = FileDigestCache(lambda: meta).for_root(ctx)
    assert digests.get("app/a.txt", "k-racy", st) is None
    assert digests.get("app/a.txt", "k-settled", st) == "sha256:" + "00" * 32


def test_a_file_changed_while_it_was_read_is_not_kept(
    ctx: Path, meta: Metadata, later: None
) -> None:
    path = ctx / "app" / "a.txt"
    st = os.lstat(path)
    path.write_bytes(b"written during the read\n")
    cache = FileDigestCache(lambda: meta)
    digests = cache.for_root(ctx)
    digests.put(
        "app/a.txt", "sha256", st, sha256_bytes(b"x"), since_ns=time.time_ns(), after=os.stat(path)
    )
    cache.flush()
    assert meta.file_digests(digests.root) is None


class _BrokenMeta:
    """Metadata whose file digests cannot be read or written."""

    def file_digests(self, root: str) -> bytes | None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    def update_file_digests(self, root: str, update: Any) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda row: row[:-3],  # truncated
        lambda row: row[:100] + bytes([row[100] ^ 1]) + row[101:],  # one bit flipped
        lambda row: row.replace(b"mason.filedigests.v1", b"mason.filedigests.v9"),
        lambda row: row + b"\0more",  # a name too many
        lambda row: b"",
        lambda row: "text",
    ],
)
def test_a_corrupt_row_is_ignored(
    ctx: Path,
    meta: Metadata,
    later: None,
    reads: list[str],
    corrupt: Callable[[bytes], Any],
) -> None:
    cache = FileDigestCache(lambda: meta)
    cold = _both(ctx, cache)
    root = cache.for_root(ctx).root
    row = meta.file_digests(root)
    assert row is not None and len(decode(row)) == 4  # two files, two kinds
    with meta._tx() as conn:
        conn.execute("UPDATE file_digests SET entries = ? WHERE root = ?", (corrupt(row), root))
    reads.clear()
    again = FileDigestCache(lambda: meta)
    assert _both(ctx, again) == cold
    assert sorted(reads) == ["app/a.txt", "app/sub/b.txt"]
    assert len(decode(meta.file_digests(root))) == 4  # written anew over the corrupt row


def test_an_unreadable_cache_is_an_empty_one(ctx: Path, later: None, reads: list[str]) -> None:
    cold = _both(ctx, None)
    reads.clear()
    assert (
        _both(ctx, FileDigestCache(lambda: _BrokenMeta())) == cold
    )  # flush's error is swallowed too
    assert sorted(reads) == ["app/a.txt", "app/sub/b.txt"]  # shared within the build


@pytest.mark.parametrize("case", golden.model_cases())
def test_golden_keys_with_kept_digests(
    case: str, tmp_path: Path, later: None, reads: list[str]
) -> None:
    """BuildKit's golden keys (tests/data/buildkit-keys) stay equal when the context files'
    digests come from the cache: a cold model fills it, a warm one reads no context file."""
    meta = Metadata(tmp_path / "meta.db")
    plain = golden.model_keys(case)
    root = golden.staged_context(case)
    cold_cache = FileDigestCache(lambda: meta)
    cold = golden.model_keys(case, digests=cold_cache.for_root(root))
    cold_cache.flush()
    reads.clear()  # the other ops' outputs were read by the first model, once for all
    warm = golden.model_keys(case, digests=FileDigestCache(lambda: meta).for_root(root))
    assert cold.preimages == plain.preimages == warm.preimages
    assert cold.records == plain.records == warm.records
    assert reads == []


def test_the_oldest_entries_go_past_the_bound(
    ctx: Path, meta: Metadata, later: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filedigests, "MAX_ENTRIES", 3)
    cache = FileDigestCache(lambda: meta)
    _both(ctx, cache)
    kept = decode(meta.file_digests(cache.for_root(ctx).root))
    assert len(kept) == 3


def test_the_least_recently_written_roots_go(
    tmp_path: Path, meta: Metadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Metadata, "MAX_FILE_DIGEST_ROOTS", 2)
    for name in ("a", "b", "c"):
        meta.update_file_digests(f"/ctx/{name}", lambda _: encode({}))
    assert [meta.file_digests(f"/ctx/{n}") is not None for n in "abc"] == [False, True, True]


def test_prune_all_clears_the_file_digests(tmp_path: Path) -> None:
    with StateRoot.open(tmp_path / "root", exclusive=True) as state:
        st = os.lstat(tmp_path)
        row = encode({("a", CONTEXT_FILE_KIND): _entry(st, bytes(32), 6)})
        state.meta.update_file_digests("/ctx", lambda _: row)
        assert state.meta.file_digests("/ctx") == row
        state.prune(all_=True)
        assert state.meta.file_digests("/ctx") is None
