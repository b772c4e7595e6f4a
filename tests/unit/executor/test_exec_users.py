"""USER resolution against sample /etc/passwd and /etc/group, Docker's rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mason.executor import ResolvedUser, UserResolutionError, resolve_user
from mason.executor.users import parse_group, parse_passwd

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
nohome:x:1001:1001::
broken line
bad:x:notanumber:1::/:/bin/sh
"""
GROUP = """\
root:x:0:
wheel:x:10:root,app
app:x:1000:
nohome:x:1001:
docker:x:2000:app
audio:x:2001:daemon,app
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", ResolvedUser(0, 0, (0, 10), "/root", "root")),
        ("root", ResolvedUser(0, 0, (0, 10), "/root", "root")),
        ("0", ResolvedUser(0, 0, (0, 10), "/root", "root")),
        ("app", ResolvedUser(1000, 1000, (1000, 10, 2000, 2001), "/home/app", "app")),
        ("1000", ResolvedUser(1000, 1000, (1000, 10, 2000, 2001), "/home/app", "app")),
        # An explicit group replaces the primary group and drops supplementary ones
        # (the primary one stays among them, as BuildKit v0.32.2 has it).
        ("app:docker", ResolvedUser(1000, 2000, (2000,), "/home/app", "app")),
        ("app:2001", ResolvedUser(1000, 2001, (2001,), "/home/app", "app")),
        ("1000:4242", ResolvedUser(1000, 4242, (4242,), "/home/app", "app")),
        # Numeric ids that are not in the files are allowed; gid defaults to 0.
        ("4242", ResolvedUser(4242, 0, (0,), "/", None)),
        ("4242:4343", ResolvedUser(4242, 4343, (4343,), "/", None)),
        ("4242:wheel", ResolvedUser(4242, 10, (10,), "/", None)),
        # Empty home field falls back to "/".
        ("nohome", ResolvedUser(1001, 1001, (1001,), "/", "nohome")),
    ],
)
def test_resolve_user(rootfs: Path, spec: str, expected: ResolvedUser) -> None:
    assert resolve_user(rootfs, spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("nobody", "unable to find user 'nobody'"),
        ("app:nogroup", "unable to find group 'nogroup'"),
        ("app:", "empty group"),
    ],
)
def test_unknown_names_are_clear_errors(rootfs: Path, spec: str, fragment: str) -> None:
    with pytest.raises(UserResolutionError) as info:
        resolve_user(rootfs, spec)
    assert fragment in str(info.value)
    assert info.value.reference == "unknown-user"


def test_without_passwd_file_only_numeric_ids_work(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, "") == ResolvedUser(0, 0, (0,), "/", None)
    assert resolve_user(tmp_path, "7:8") == ResolvedUser(7, 8, (8,), "/", None)
    with pytest.raises(UserResolutionError, match="no /etc/passwd"):
        resolve_user(tmp_path, "app")
    with pytest.raises(UserResolutionError, match="no /etc/group"):
        resolve_user(tmp_path, "7:staff")


def test_passwd_symlink_is_resolved_inside_the_rootfs(tmp_path: Path) -> None:
    # /etc -> /host-etc: the absolute link must resolve inside the rootfs, not on the host.
    (tmp_path / "host-etc").mkdir()
    (tmp_path / "host-etc/passwd").write_text("someone:x:321:654::/h:/bin/sh\n")
    (tmp_path / "etc").symlink_to("/host-etc")
    assert resolve_user(tmp_path, "someone") == ResolvedUser(321, 654, (654,), "/h", "someone")


def test_parsers_skip_malformed_lines() -> None:
    assert [e.name for e in parse_passwd(PASSWD)] == ["root", "daemon", "app", "nohome"]
    assert [(g.name, g.members) for g in parse_group(GROUP)][1] == ("wheel", ("root", "app"))


def test_user_database_is_read_inside_the_rootfs_and_only_as_a_file(tmp_path: Path) -> None:
    rootfs, host = tmp_path / "rootfs", tmp_path / "host"
    (rootfs / "etc").mkdir(parents=True)
    host.mkdir()
    (host / "passwd").write_text("evil:x:4242:4242::/:/bin/sh\n")
    os.symlink(
        str(host / "passwd"), rootfs / "etc" / "passwd"
    )  # absolute: means <rootfs>/<host>/passwd
    os.mkfifo(rootfs / "etc" / "group")  # would block a plain read forever
    with pytest.raises(UserResolutionError, match="unable to find user 'evil'"):
        resolve_user(rootfs, "evil")
    assert resolve_user(rootfs, "1000").uid == 1000


def test_primary_group_is_first_among_supplementary_unless_listed(tmp_path: Path) -> None:
    """BuildKit v0.32.2 (containerd's ensureAdditionalGids): ``id`` of user app (gid 1500, also in
    extra) prints groups=1500(app),1600(extra); USER 1700:1800 prints groups=1800."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("app:x:1500:1500::/home/app:/bin/sh\n")
    (tmp_path / "etc/group").write_text("app:x:1500:\nextra:x:1600:app\n")
    assert resolve_user(tmp_path, "app").additional_gids == (1500, 1600)
    assert resolve_user(tmp_path, "1700:1800").additional_gids == (1800,)
