"""mason.llb.contenthash on trees made here: context rules against snapshot rules, laziness,
and that nothing outside the tree is read. BuildKit's own digests are checked on the golden
builds (test_golden_keys); here each expected header is written out from the tarsum-v1 rule."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.trees import build_tree

from mason.digest import sha256_bytes
from mason.llb.cachemap import Selector
from mason.llb.contenthash import EMPTY_DIGEST, ChecksumError, ContentTree
from mason.llb.keys import content_key, content_root

#: The owner of what a test writes: a snapshot hashes it.
ME = (os.geteuid(), os.getegid())
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners and trusted xattrs need root")


def _header(mode: int, uid: int, gid: int, size: int, flag: str, link: str = "") -> bytes:
    return (
        f"namemode{mode}uid{uid}gid{gid}size{size}typeflag{flag}linkname{link}"
        "unamegnamedevmajor0devminor0"
    ).encode()


@pytest.fixture
def owned(tmp_path: Path) -> Path:
    """A tree with a file owned 1234:5678 mode 0640 and a 0750 directory owned 7:8."""
    if os.geteuid() != 0:
        pytest.skip("setting owners needs root")
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"abc")
    os.chmod(root / "d" / "f", 0o640)
    os.chmod(root / "d", 0o750)
    os.chown(root / "d" / "f", 1234, 5678)
    os.chown(root / "d", 7, 8)
    return root


def test_a_snapshot_hashes_the_owners_on_disk_a_context_hashes_0_0(owned: Path) -> None:
    snap = ContentTree.for_snapshot(owned).checksum(Selector("/d/f"))
    ctx = ContentTree.for_context(owned).checksum(Selector("/d/f"))
    assert snap == sha256_bytes(_header(0o640, 1234, 5678, 3, "0") + b"abc")
    assert ctx == sha256_bytes(_header(0o640, 0, 0, 3, "0") + b"abc")


def test_a_directory_is_the_merkle_list_of_its_header_and_entries(owned: Path) -> None:
    tree = ContentTree.for_snapshot(owned)
    got = tree.checksum(Selector("/d"))
    dir_header = sha256_bytes(_header(0o750, 7, 8, 0, "5"))
    file_sum = sha256_bytes(_header(0o640, 1234, 5678, 3, "0") + b"abc")
    assert got == sha256_bytes(b"\0" + dir_header.encode() + b"\0f" + file_sum.encode())
    assert tree.trace[got] == (
        "file-list",
        b"\0" + dir_header.encode() + b"\0f" + file_sum.encode(),
    )


def test_a_snapshot_root_has_its_own_header_a_context_root_the_empty_digest(owned: Path) -> None:
    os.chmod(owned, 0o711)
    os.chown(owned, 3, 4)
    snap, ctx = ContentTree.for_snapshot(owned), ContentTree.for_context(owned)
    snap.checksum(Selector("/"))
    ctx.checksum(Selector("/"))
    assert sha256_bytes(_header(0o711, 3, 4, 0, "5")) in snap.trace
    root_list = {p for kind, p in ctx.trace.values() if p.startswith(b"\0sha256:")}
    assert any(p.startswith(b"\0" + EMPTY_DIGEST.encode() + b"\0d") for p in root_list)


@needs_root
def test_snapshot_xattrs_kept_as_buildkit_keeps_them(tmp_path: Path) -> None:
    root = tmp_path / "x"
    root.mkdir()
    f = root / "f"
    f.write_bytes(b"")
    try:
        os.setxattr(f, "user.b", b"2")
        os.setxattr(f, "user.a", b"1")
        os.setxattr(f, "trusted.overlay.opaque", b"y")  # overlayfs's own: hidden when mounted
        os.setxattr(f, "trusted.other", b"t")
    except OSError as exc:
        pytest.fail(f"the test directory must take user and trusted xattrs (root, ext4): {exc}")
    base = _header(0o644, 0, 0, 0, "0")
    snap = ContentTree.for_snapshot(root).checksum(Selector("f"))
    assert snap == sha256_bytes(base + b"trusted.othertuser.a1user.b2")
    # The client sends no xattrs: a context file hashes its header alone.
    assert ContentTree.for_context(root).checksum(Selector("f")) == sha256_bytes(base)


def test_a_socket_hashes_as_an_empty_regular_file(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock"))
        os.chmod(root / "sock", 0o755)
        got = ContentTree.for_snapshot(root).checksum(Selector("sock"))
    finally:
        sock.close()
    assert got == sha256_bytes(_header(0o755, *ME, 0, "0"))


def test_a_missing_path_says_which_and_where(owned: Path) -> None:
    tree = ContentTree.for_snapshot(owned)
    with pytest.raises(ChecksumError) as info:
        tree.checksum(Selector("/d/nope"))
    assert "'/d/nope' not found" in str(info.value) and str(owned) in str(info.value)
    with pytest.raises(ChecksumError, match="'d/f/x' not found"):
        tree.checksum(Selector("/d", include_patterns=("f",), required_paths=("d/f/x",)))


def test_a_directory_that_cannot_be_listed_fails_the_tree(
    owned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    tree = ContentTree.for_snapshot(owned)
    monkeypatch.setattr(os, "scandir", broken)
    with pytest.raises(ChecksumError, match="cannot list '/': Input/output error"):
        tree.checksum(Selector("/d/f"))
    monkeypatch.undo()
    # Half-read: never a digest of what was listed so far.
    with pytest.raises(ChecksumError, match="cannot list"):
        tree.checksum(Selector("/d/f"))


def test_symlinks_resolve_inside_the_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"host")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "secret").write_bytes(b"tree")
    os.symlink(str(outside / "secret"), root / "abs")
    os.symlink("../../../../etc/secret", root / "up")
    os.symlink("/etc", root / "etclink")
    tree = ContentTree.for_snapshot(root)
    inside = sha256_bytes(_header(0o644, *ME, 4, "0") + b"tree")
    assert tree.checksum(Selector("up", follow_links=True)) == inside
    assert tree.checksum(Selector("etclink/secret")) == inside
    with pytest.raises(ChecksumError, match="not found"):  # resolved in the tree, not the host
        tree.checksum(Selector("abs", follow_links=True))


def test_a_filtered_selection_of_one_file_or_link_is_that_entry(tmp_path: Path) -> None:
    # includedPaths starts at the prefix's own record: a file prefix is its own candidate.
    root = tmp_path / "one"
    root.mkdir()
    (root / "f.txt").write_bytes(b"x")
    os.symlink("f.txt", root / "link")
    tree = ContentTree.for_snapshot(root)
    plain = tree.checksum(Selector("f.txt"))
    assert plain == sha256_bytes(_header(0o644, *ME, 1, "0") + b"x")
    assert tree.checksum(Selector("f.txt", exclude_patterns=("*.log",))) == plain
    assert tree.checksum(Selector("f.txt", exclude_patterns=("*",))) == EMPTY_DIGEST
    followed = Selector("link", follow_links=True, exclude_patterns=("*.log",))
    assert tree.checksum(followed) == plain


def test_content_key_of_no_selectors_is_the_whole_tree(owned: Path) -> None:
    tree = ContentTree.for_snapshot(owned)
    whole = tree.checksum(Selector("/"))
    assert content_key(tree, ()) == content_root([whole])
    both = content_key(tree, (Selector("/d/f"), Selector("/d")))
    assert both.preimage == b"\0".join(
        [tree.checksum(Selector("/d/f")).encode(), tree.checksum(Selector("/d")).encode()]
    )
    assert both.record == sha256_bytes(f"{both.digest}@-1".encode())


def test_a_selection_lists_only_the_directories_it_reads(tmp_path: Path) -> None:
    root = tmp_path / "lazy"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f").write_bytes(b"1")
    (root / "big" / "deep").mkdir(parents=True)
    (root / "big" / "deep" / "g").write_bytes(b"2")
    tree = ContentTree.for_snapshot(root)
    tree.checksum(Selector("/a/f"))
    assert b"\0big" in tree.records  # listed with the root
    assert b"\0big\0deep" not in tree.records  # /big itself was never listed
    tree.checksum(Selector("/big"))
    assert b"\0big\0deep\0g" in tree.records


def test_threads_share_one_tree(tmp_path: Path) -> None:
    root = tmp_path / "t"
    for i in range(20):
        (root / f"d{i}").mkdir(parents=True)
        (root / f"d{i}" / "f").write_bytes(bytes([i]))
    serial = [ContentTree.for_snapshot(root).checksum(Selector(f"d{i}")) for i in range(20)]
    shared = ContentTree.for_snapshot(root)
    got: dict[int, str] = {}

    def work(i: int) -> None:
        got[i] = shared.checksum(Selector(f"d{i}"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(20)] == serial


# -- property: lazy reading gives a full scan's digests, and never reads outside the tree ----

_NAME = st.sampled_from(["a", "b", "c"])
_REL = st.lists(st.sampled_from(["a", "b", "c", "..", "."]), min_size=0, max_size=4).map("/".join)
_TARGET = st.one_of(
    _REL, _REL.map(lambda p: "/" + p), st.just("CANARY"), st.just("../../CANARY/secret")
)
_TREE = st.dictionaries(
    st.lists(_NAME, min_size=1, max_size=3).map("/".join),
    st.one_of(st.just("dir"), st.just("file"), _TARGET.map(lambda t: "link:" + t)),
    max_size=12,
)
_SELECTOR = st.builds(
    Selector,
    path=st.one_of(_REL, _REL.map(lambda p: p + "/*"), _REL.map(lambda p: p + "/")),
    wildcard=st.booleans(),
    follow_links=st.booleans(),
    exclude_patterns=st.one_of(st.just(()), st.just(("b",)), st.just(("*/c",))),
)


def _sums(tree: ContentTree, selectors: list[Selector]) -> list[str]:
    out = []
    for sel in selectors:
        try:
            out.append(tree.checksum(sel))
        except ChecksumError as exc:
            out.append(f"error: {exc.message}")
    return out


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=_TREE, selectors=st.lists(_SELECTOR, min_size=1, max_size=4))
def test_lazy_reading_equals_a_full_scan_and_stays_inside(
    tmp_path_factory: pytest.TempPathFactory, spec: dict[str, str], selectors: list[Selector]
) -> None:
    base = tmp_path_factory.mktemp("lazy")
    root, canary = base / "root", base / "CANARY"
    root.mkdir()
    canary.mkdir()
    (canary / "secret").write_bytes(b"one")
    build_tree(root, canary, spec)
    fresh = [_sums(ContentTree.for_snapshot(root), [sel])[0] for sel in selectors]
    scanned = ContentTree.for_snapshot(root)
    scanned.checksum(Selector("/", wildcard=True))  # every directory listed first
    assert _sums(scanned, selectors) == fresh
    (canary / "secret").write_bytes(b"two, and longer")
    os.chmod(canary, 0o700)
    assert _sums(ContentTree.for_snapshot(root), selectors) == fresh
