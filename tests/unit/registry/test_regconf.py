"""containers-registries.conf(5) as mason reads it: prefixes, rewrites, mirrors, v1 tables,
drop-ins and the file that wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from mason.oci.reference import Reference
from mason.registry.regconf import RegistriesConfError, load_registries_conf

CONF = """
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.lan:5000/hub"
insecure = true
[[registry.mirror]]
location = "digests.lan/hub"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "example.com/team"
location = "internal.example:5000/team-copy"

[[registry]]
location = "*.corp.example"
blocked = true

[registries.insecure]
registries = ["old.lan:5000"]
"""


def _conf(tmp_path: Path, text: str = CONF) -> Path:
    path = tmp_path / "registries.conf"
    path.write_text(text)
    return path


def test_mirrors_in_order_then_the_location(tmp_path: Path) -> None:
    conf = load_registries_conf({"CONTAINERS_REGISTRIES_CONF": str(_conf(tmp_path))})
    tagged = [str(r) for r in conf.pull_sources(Reference.parse("busybox:1"))]
    assert tagged == ["mirror.lan:5000/hub/library/busybox:1", "docker.io/library/busybox:1"]
    digest = "sha256:" + "a" * 64
    pinned = [str(r) for r in conf.pull_sources(Reference.parse(f"busybox@{digest}"))]
    assert pinned == [
        f"mirror.lan:5000/hub/library/busybox@{digest}",
        f"digests.lan/hub/library/busybox@{digest}",
        f"docker.io/library/busybox@{digest}",
    ]
    assert conf.insecure_hosts() == {"mirror.lan:5000", "old.lan:5000"}


def test_prefix_rewrites_whole_components_only(tmp_path: Path) -> None:
    conf = load_registries_conf({"CONTAINERS_REGISTRIES_CONF": str(_conf(tmp_path))})
    assert [str(r) for r in conf.pull_sources(Reference.parse("example.com/team/app:2"))] == [
        "internal.example:5000/team-copy/app:2"
    ]
    assert [str(r) for r in conf.pull_sources(Reference.parse("example.com/teamwork/app:2"))] == [
        "example.com/teamwork/app:2"
    ]


def test_blocked_wildcard_registries_refuse_pulls_and_pushes(tmp_path: Path) -> None:
    conf = load_registries_conf({"CONTAINERS_REGISTRIES_CONF": str(_conf(tmp_path))})
    with pytest.raises(RegistriesConfError, match=r"\*\.corp\.example is blocked"):
        conf.pull_sources(Reference.parse("build.corp.example/app:1"))
    conf.check_allowed(Reference.parse("corp.example.org/app:1"))


def test_the_user_file_and_drop_ins(tmp_path: Path) -> None:
    user = tmp_path / ".config" / "containers"
    (user / "registries.conf.d").mkdir(parents=True)
    (user / "registries.conf").write_text('[[registry]]\nlocation = "a.lan"\ninsecure = true\n')
    (user / "registries.conf.d" / "50-b.conf").write_text(
        '[[registry]]\nlocation = "a.lan"\nblocked = true\n'
    )
    conf = load_registries_conf({"HOME": str(tmp_path)})
    entry = conf.find(Reference.parse("a.lan/x:1"))
    assert (
        entry is not None and entry.blocked and not entry.insecure
    )  # the later drop-in replaced it


def test_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RegistriesConfError, match="cannot read"):
        load_registries_conf({"CONTAINERS_REGISTRIES_CONF": str(_conf(tmp_path, "[[registry]\n"))})
    assert (
        load_registries_conf({"CONTAINERS_REGISTRIES_CONF": str(tmp_path / "none.conf")}).entries
        == ()
    )


# What the distributions ship (a file of comments, shortnames.conf's aliases) is settled without
# tomllib; a text it is unsure of goes to tomllib, so errors and registries are still read.
_PLAIN_CASES = [
    ("", True),
    ("# only comments\n\n  # indented\t\n", True),
    ('[aliases]\n  "fedora" = "registry.fedoraproject.org/fedora" # c\r\n  php = "x"\n', True),
    ('[ a ]\n""  =  ""\n[b]\nk = "v"\n', True),
    ('unqualified-search-registries = "docker.io"\n', True),
    ("[[registry]]\nlocation = 'a.lan'\n", False),
    ("[registry]\n", False),
    ('registry = "x"\n', False),
    ('[registries]\nk = "v"\n', False),
    ('[a]\nk = "1"\n"k" = "2"\n', False),  # a key defined twice: tomllib's error
    ("[a]\n[a]\n", False),
    ('a = "1"\n[a]\n', False),
    ("# control \x01 char\n", False),
    ('k = "1"\r', False),  # a lone CR
    ("x = 1\n", False),
    ('k = "a\\"b"\n', False),  # escapes: tomllib's job
    ("\ufeff# BOM\n", False),
    ("[a] junk\n", False),
]


@pytest.mark.parametrize(("text", "plain"), _PLAIN_CASES)
def test_files_holding_no_registries_are_read_without_tomllib(text: str, plain: bool) -> None:
    import tomllib

    from mason.registry.regconf import _holds_no_registries

    assert _holds_no_registries(text) is plain
    if plain:  # never says so of a file tomllib would refuse or find registries in
        doc = tomllib.loads(text)
        assert "registry" not in doc and "registries" not in doc


def test_a_broken_file_after_plain_lines_is_still_an_error(tmp_path: Path) -> None:
    text = '[aliases]\nphp = "docker.io/library/php"\n[aliases]\n'
    env = {"CONTAINERS_REGISTRIES_CONF": str(_conf(tmp_path, text))}
    with pytest.raises(RegistriesConfError, match="cannot read"):
        load_registries_conf(env)
    (tmp_path / "registries.conf").write_text(text[: -len("[aliases]\n")])
    assert load_registries_conf(env).entries == ()
