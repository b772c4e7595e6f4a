"""A layer chain's entries that given paths' resolutions meet, from the layers' tar headers
alone, and a tree of just those (issue 14).

A step that only puts files into its base (COPY from the context, a heredoc, WORKDIR) looks
at few of the base's entries: those on the way to where it writes (each directory, each
symlink followed, the entry it replaces). Unpacking the whole base for it creates every
inode of the image (busybox: 285, 40-150 ms of kernel time on a small VM) to look at three.
``ChainIndex`` reads the chain's headers (no file data is written; a layer unpacked already
is read from its snapshot, ``add_snapshot``) into the merged tree the unpacked chain would
show, and ``looked_at`` walks a path through it exactly as
``mason.fsroot.FsRoot.resolve`` walks the real tree (symlinks followed inside the root,
``..`` stopping at it, ``MAX_SYMLINKS``), collecting every entry it looks up. ``sparse_tree``
then unpacks those entries, and their directories, with their metadata and empty files (a
copy replaces a file, never reads it), through ``apply_layer``: a lower directory on which
the step's writes give the same upper directory, hence the same layer, as on the whole base.

What the headers cannot say exactly makes the index refuse (``None``): an entry written
through a symlink or under a non-directory of the chain (``apply_layer`` resolves those
against the tree), a directory only implied by its children (its metadata is the unpack's
clock), a hardlink or a device the walk meets, any malformed name. The caller then unpacks
the chain as before.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, cast

from mason.fsroot import MAX_SYMLINKS
from mason.layer._fs import remove_tree
from mason.layer._tarinfo import LayerTarInfo
from mason.layer.apply import HashingReader, apply_layer, entry_type_problem, split_name
from mason.layer.diff import AUFS_META_PREFIX, OPAQUE_MARKER, WHITEOUT_PREFIX, LayerInfo
from mason.layer.errors import LayerError
from mason.oci.atomic import temp_dir

__all__ = ["ChainIndex", "looked_at", "sparse_tree"]


class _Node:
    """An entry of the merged tree: its header (None: a directory only implied) and, for a
    directory, its children; ``layer`` is the index of the layer that wrote it."""

    __slots__ = ("children", "info", "layer")

    def __init__(self, info: tarfile.TarInfo | None, layer: int) -> None:
        self.info = info
        self.layer = layer
        self.children: dict[str, _Node] | None = {} if info is None or info.isdir() else None


class _Unsupported(Exception):
    """What the headers alone cannot answer: the caller unpacks the chain."""


def _parts(name: str, what: str = "entry") -> tuple[str, ...]:
    """An entry's name as ``apply_layer`` takes it; what it rejects is left to it."""
    try:
        return split_name(name, what)
    except LayerError:
        raise _Unsupported(name) from None


def _check_utf8(member: tarfile.TarInfo) -> None:
    """``UnicodeError`` where a name, link or xattr holds what is not UTF-8."""
    for text in (member.name, member.linkname, *member.pax_headers.values()):
        text.encode("utf-8")


class ChainIndex:
    """The merged tree of a chain of layer tars (lowest first), headers only."""

    def __init__(self) -> None:
        self._root = _Node(None, -1)  # the root's attributes are the snapshot's, no header's
        self._layers = 0

    def add(self, stream: BinaryIO) -> LayerInfo | None:
        """Index the next layer up from its uncompressed tar (read to its end); its diff ID
        and size as read, or None when it holds what cannot be indexed exactly (the index
        is then not to be used)."""
        reader = HashingReader(stream)
        try:
            self._add_layer(reader)
        except (_Unsupported, tarfile.TarError, UnicodeError):
            return None
        return reader.drain()

    def add_snapshot(self, diff_dir: str) -> bool:
        """Index the next layer up from its snapshot in overlay form (what mounting it
        shows: its own files' times and attributes); False as for ``add``."""
        from mason.layer.diff import diff_headers

        try:
            headers = diff_headers(diff_dir)
        except LayerError:
            return False  # e.g. overlay's redirects: the mount decides
        layer = self._next_layer()
        try:
            for member in headers:
                _check_utf8(member)  # as a tar of them would be read back (strict UTF-8)
                self._add_member(member, layer)
        except (_Unsupported, UnicodeError):
            return False
        return True

    def copy(self) -> ChainIndex:
        """An index to add more layers to, this one left as it is."""
        other = ChainIndex()
        other._root = _copied(self._root)
        other._layers = self._layers
        return other

    def _next_layer(self) -> int:
        layer = self._layers
        self._layers += 1
        return layer

    def _add_layer(self, stream: object) -> None:
        layer = self._next_layer()
        with tarfile.open(
            fileobj=cast(Any, stream),
            mode="r|",
            encoding="utf-8",
            errors="strict",
            tarinfo=LayerTarInfo,
        ) as tf:
            for member in tf:
                self._add_member(member, layer)

    def _add_member(self, member: tarfile.TarInfo, layer: int) -> None:
        """One entry of layer ``layer``, dispatched as ``apply_layer`` dispatches."""
        parts = _parts(member.name)
        if not parts:
            return
        if parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, layer, member)
            return
        if member.islnk():
            self._link_target(member, parts)
        elif entry_type_problem(member, allow_devices=os.geteuid() == 0):
            raise _Unsupported(member.name)
        self._put(self._dir_for(parts[:-1], layer), parts[-1], member, layer)

    def _dir_for(self, parts: tuple[str, ...], layer: int) -> _Node:
        """The directory node an entry at ``parts`` goes into, implied ones made."""
        node = self._root
        for part in parts:
            assert node.children is not None
            if part.startswith(WHITEOUT_PREFIX):
                raise _Unsupported("/".join(parts))
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node(None, layer)
            elif child.children is None:  # through a symlink or a file: the tree decides
                raise _Unsupported("/".join(parts))
            node = child
        return node

    def _whiteout(self, parts: tuple[str, ...], layer: int, member: tarfile.TarInfo) -> None:
        base = parts[-1]
        if member.isdir():
            raise _Unsupported(member.name)
        if base == OPAQUE_MARKER:
            _drop_lower(self._dir_for(parts[:-1], layer), layer)
            return
        if base.startswith(AUFS_META_PREFIX):
            return  # AUFS bookkeeping, as apply_layer skips it
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise _Unsupported(member.name)
        parent = self._root
        for part in parts[:-1]:
            child = parent.children.get(part) if parent.children is not None else None
            if child is None:
                return  # nothing there to delete
            if child.children is None:
                raise _Unsupported(member.name)
            parent = child
        assert parent.children is not None
        old = parent.children.get(name)
        if old is not None and old.layer == layer:
            raise _Unsupported(member.name)  # created and deleted by one layer: rejected
        parent.children.pop(name, None)

    def _link_target(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        """A hardlink's target must be a non-directory of the tree, named without symlinks,
        and neither the link itself nor inside the directory the link replaces (the unpack
        removes what is there first: it refuses both)."""
        target = _parts(member.linkname, "hardlink target")
        if target[: len(parts)] == parts:
            raise _Unsupported(member.name)
        node: _Node | None = self._root
        for part in target:
            node = (
                node.children.get(part) if node is not None and node.children is not None else None
            )
        if node is None or node.info is None or node.children is not None or node.info.issym():
            raise _Unsupported(member.name)

    @staticmethod
    def _put(parent: _Node, base: str, member: tarfile.TarInfo, layer: int) -> None:
        assert parent.children is not None
        old = parent.children.get(base)
        node = _Node(member, layer)
        if old is not None and old.children is not None and member.isdir():
            node.children = old.children  # a directory over a directory merges
            if old.info is None or _xattrs(old.info) - _xattrs(member):
                # its own attributes are the header's, but xattrs the header does not name
                # stay on the unpacked directory where the layer was applied flat (one that
                # reaches below): the headers alone cannot say which
                node.info = None
        parent.children[base] = node

    def looked_at(self, unsafe: str, *, follow: bool) -> dict[tuple[str, ...], tarfile.TarInfo]:
        """Every entry (canonical path -> header) ``FsRoot.resolve(unsafe, follow=follow)``
        looks up in the unpacked chain; ``_Unsupported`` when one has no exact header."""
        seen: dict[tuple[str, ...], tarfile.TarInfo] = {}
        pending = [p for p in unsafe.split("/") if p not in ("", ".")]
        pending.reverse()
        names: list[str] = []
        nodes: list[_Node | None] = []
        links = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if names:
                    names.pop()
                    nodes.pop()
                continue
            current = nodes[-1] if nodes else self._root
            node = current.children.get(part) if current and current.children is not None else None
            if node is not None:
                seen[(*names, part)] = _exact(node, (*names, part))
            if (
                node is not None
                and node.info is not None
                and node.info.issym()
                and (pending or follow)
            ):
                links += 1
                if links > MAX_SYMLINKS:
                    return seen  # the real walk fails here too, having looked at these
                target = node.info.linkname
                if target.startswith("/"):
                    names, nodes = [], []
                pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
                continue
            if pending and node is not None and node.children is None:
                return seen  # not a directory: the real walk fails here too
            names.append(part)
            nodes.append(node)
        return seen


def _copied(node: _Node) -> _Node:
    twin = _Node(node.info, node.layer)
    if node.children is not None:
        twin.children = {name: _copied(child) for name, child in node.children.items()}
    else:
        twin.children = None
    return twin


def _xattrs(info: tarfile.TarInfo) -> set[str]:
    return {k for k in info.pax_headers if k.startswith("SCHILY.xattr.")}


def _drop_lower(directory: _Node, layer: int) -> None:
    """An opaque marker: what lower layers put anywhere under ``directory`` is hidden."""
    assert directory.children is not None
    for name, child in list(directory.children.items()):
        if child.layer < layer:
            del directory.children[name]
        elif child.children is not None:
            _drop_lower(child, layer)


def _exact(node: _Node, parts: tuple[str, ...]) -> tarfile.TarInfo:
    info = node.info
    if info is None or not (info.isdir() or info.issym() or info.isreg()) or info.islnk():
        raise _Unsupported("/".join(parts))
    return info


def looked_at(
    index: ChainIndex, paths: Iterable[tuple[str, bool]]
) -> dict[tuple[str, ...], tarfile.TarInfo] | None:
    """The entries the resolutions of ``paths`` (unsafe path, follow a final symlink) look
    at, with the directories holding them; None when one has no exact header."""
    seen: dict[tuple[str, ...], tarfile.TarInfo] = {}
    try:
        for unsafe, follow in paths:
            seen.update(index.looked_at(unsafe, follow=follow))
    except _Unsupported:
        return None
    return seen


@contextlib.contextmanager
def sparse_tree(entries: dict[tuple[str, ...], tarfile.TarInfo], parent: str) -> Iterator[str]:
    """A new directory in ``parent`` holding ``entries`` (with their directories, which a
    walk that reached them looked at too): headers as in the chain, files empty (a step
    replaces a file, never reads it). Removed on exit."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for parts in sorted(entries, key=lambda p: (len(p), p)):
            info = copy.copy(entries[parts])
            info.name, info.size = "/".join(parts), 0
            tf.addfile(info)
    buf.seek(0)
    holder = temp_dir(parent, "sparse-")
    try:
        root = os.path.join(holder, "fs")
        os.mkdir(root, 0o755)  # as a snapshot's: a mount's root takes its lower's attributes
        apply_layer(buf, root, mode="flat")
        yield root
    finally:
        remove_tree(holder)
