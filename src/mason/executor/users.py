"""Resolving a Dockerfile USER value against a rootfs' /etc/passwd and /etc/group.

The rules follow Docker (moby/sys/user GetExecUser): a name must exist, a
numeric uid or gid may be absent (then the gid defaults to 0 and the home to
"/"), supplementary groups come from /etc/group only when no group was given.
The primary group is among the supplementary ones, first unless /etc/group lists
it already (BuildKit v0.32.2's ensureAdditionalGids, from containerd): for a user
``app`` (gid 1500, also in ``extra``) ``id`` prints ``groups=1500(app),1600(extra)``,
for ``USER 1700:1800`` ``groups=1800``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from mason.executor.types import UserResolutionError
from mason.fsroot import FsRoot, PathOutsideError
from mason.structs import Struct

__all__ = ["ResolvedUser", "parse_group", "parse_passwd", "resolve_user"]

_MAX_ID = 2**31 - 1


class PasswdEntry(Struct, frozen=True):
    name: str
    uid: int
    gid: int
    home: str


class GroupEntry(Struct, frozen=True):
    name: str
    gid: int
    members: tuple[str, ...]


class ResolvedUser(Struct, frozen=True):
    """Numeric identity for a process: uid, gid, supplementary gids, home."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"
    name: str | None = None


def _int(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def _records(text: str, min_fields: int) -> Iterator[list[str]]:
    """The colon-separated fields of each line, skipping comments and short lines like libc does."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) >= min_fields:
            yield fields


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Parse passwd lines, skipping comments and malformed lines like libc does."""
    entries = []
    for fields in _records(text, 4):
        uid, gid = _int(fields[2]), _int(fields[3])
        if uid is None or gid is None:
            continue
        home = fields[5] if len(fields) > 5 and fields[5] else "/"
        entries.append(PasswdEntry(fields[0], uid, gid, home))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for fields in _records(text, 3):
        gid = _int(fields[2])
        if gid is None:
            continue
        members = tuple(m for m in fields[3].split(",") if m) if len(fields) > 3 else ()
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


#: /etc/passwd and /etc/group come from an image: read this much at most
_MAX_DATABASE = 16 << 20


def _read(rootfs: Path, path: str) -> str | None:
    """A user database file of the image, resolved inside ``rootfs``. Anything but a regular
    file (a FIFO would block the build, a device could be endless) counts as missing."""
    try:
        with FsRoot(rootfs) as fs:
            fd = fs.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, PathOutsideError):
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(_MAX_DATABASE).decode("utf-8", errors="replace")


def resolve_user(rootfs: Path, user: str) -> ResolvedUser:
    """Resolve ``user`` ("", "name", "uid", "name:group", "uid:gid") in ``rootfs``."""
    user_arg, _, group_arg = user.partition(":")
    if ":" in user and not group_arg:
        raise UserResolutionError(f"invalid user {user!r}: empty group after ':'")
    passwd_text = _read(rootfs, "/etc/passwd")
    group_text = _read(rootfs, "/etc/group")
    users = parse_passwd(passwd_text) if passwd_text is not None else []
    groups = parse_group(group_text) if group_text is not None else []

    # An empty USER means root, looked up by uid 0 for its home and groups.
    wanted_uid = 0 if user_arg == "" else _int(user_arg)
    match = next(
        (
            u
            for u in users
            if (user_arg != "" and u.name == user_arg)
            or (wanted_uid is not None and u.uid == wanted_uid)
        ),
        None,
    )
    if match is not None:
        uid, gid, home, name = match.uid, match.gid, match.home, match.name
    elif wanted_uid is not None:
        uid, gid, home, name = wanted_uid, 0, "/", None
    else:
        where = "no /etc/passwd in the image" if passwd_text is None else "no matching entry"
        raise UserResolutionError(
            f"unable to find user {user_arg!r}: {where}",
            context=[f"rootfs: {rootfs}"],
            hint="create the user in an earlier step or use a numeric uid",
        )

    additional: tuple[int, ...] = ()
    if group_arg:
        wanted_gid = _int(group_arg)
        group = next(
            (
                g
                for g in groups
                if g.name == group_arg or (wanted_gid is not None and g.gid == wanted_gid)
            ),
            None,
        )
        if group is not None:
            gid = group.gid
        elif wanted_gid is not None:
            gid = wanted_gid
        else:
            where = "no /etc/group in the image" if group_text is None else "no matching entry"
            raise UserResolutionError(
                f"unable to find group {group_arg!r}: {where}",
                context=[f"rootfs: {rootfs}"],
                hint="create the group in an earlier step or use a numeric gid",
            )
    elif name is not None:
        # Like Docker, supplementary groups only in the implicit form.
        seen: list[int] = []
        for g in groups:
            if name in g.members and g.gid not in seen:
                seen.append(g.gid)
        additional = tuple(seen)
    return ResolvedUser(
        uid=uid, gid=gid, additional_gids=with_primary_gid(gid, additional), home=home, name=name
    )


def with_primary_gid(gid: int, additional: tuple[int, ...]) -> tuple[int, ...]:
    """``additional`` with ``gid`` in it: unchanged when present, else in front (containerd's
    and BuildKit's ensureAdditionalGids)."""
    return additional if gid in additional else (gid, *additional)
