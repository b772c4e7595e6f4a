"""The registries configuration daemonless tools share: containers-registries.conf(5).

Read from ``$CONTAINERS_REGISTRIES_CONF`` if set, else ``$HOME/.config/containers/registries.conf``
if it exists, else ``/etc/containers/registries.conf``, then the drop-ins of the matching
``registries.conf.d/`` directories in name order (a later ``[[registry]]`` with the same
prefix replaces an earlier one). mason honours, per registry (``prefix``, defaulting to
``location``; ``*.example.com`` matches subdomains):

- ``insecure = true``: plain HTTP or unverified TLS for that host (and for an insecure mirror);
- ``blocked = true``: no pull from or push to it;
- ``location``: pulls of ``prefix/…`` go to ``location/…``;
- ``[[registry.mirror]]``: pulls try each mirror in order (``pull-from-mirror`` ``all``,
  ``digest-only`` or ``tag-only``), then the location; pushes never go to a mirror.

The v1 tables ``[registries.insecure]`` and ``[registries.block]`` (``registries = [...]``) are read
too. ``unqualified-search-registries`` and short-name aliases are not used: mason's references
are always qualified (Docker Hub by default, as docker does).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mason.oci.reference import Reference
from mason.registry.errors import RegistryError
from mason.structs import Struct, field

__all__ = [
    "Mirror",
    "RegistriesConf",
    "RegistriesConfError",
    "RegistryEntry",
    "load_registries_conf",
]

_SYSTEM = Path("/etc/containers/registries.conf")


class RegistriesConfError(RegistryError):
    """A registries.conf that cannot be read, or a registry it blocks."""

    reference = "registries-conf"


class Mirror(Struct, frozen=True):
    location: str
    insecure: bool = False
    pull_from: str = "all"  # all | digest-only | tag-only

    def serves(self, ref: Reference) -> bool:
        return self.pull_from == "all" or (self.pull_from == "digest-only") == bool(ref.digest)


class RegistryEntry(Struct, frozen=True):
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    source: str = ""

    def matches(self, name: str) -> bool:
        """Whether ``host/repository`` falls under this entry's prefix (a whole path component)."""
        if self.prefix.startswith("*."):
            host = name.split("/", 1)[0]
            return host.endswith(self.prefix[1:])
        return name == self.prefix or name.startswith(self.prefix.rstrip("/") + "/")


class RegistriesConf(Struct, frozen=True):
    entries: tuple[RegistryEntry, ...] = ()
    files: tuple[str, ...] = field(default=())

    def find(self, ref: Reference) -> RegistryEntry | None:
        """The entry with the longest matching prefix for ``ref``."""
        name = f"{ref.registry}/{ref.repository}"
        found = [e for e in self.entries if e.matches(name)]
        return max(found, key=lambda e: len(e.prefix), default=None)

    def insecure_hosts(self) -> set[str]:
        hosts = {_host(e.location) for e in self.entries if e.insecure}
        hosts |= {_host(m.location) for e in self.entries for m in e.mirrors if m.insecure}
        return hosts

    def check_allowed(self, ref: Reference) -> None:
        entry = self.find(ref)
        if entry is not None and entry.blocked:
            raise RegistriesConfError(
                f"registry {entry.prefix} is blocked in {entry.source or 'registries.conf'}",
                operation=f"access {ref}",
                hint="remove blocked = true for it to use it",
            )

    def pull_sources(self, ref: Reference) -> list[Reference]:
        """Where a pull of ``ref`` is tried, in order: its mirrors, then its location."""
        self.check_allowed(ref)
        entry = self.find(ref)
        if entry is None:
            return [ref]
        rest = _remainder(entry, ref)
        mirrors = [_rebase(m.location, rest, ref) for m in entry.mirrors if m.serves(ref)]
        return [*mirrors, _rebase(entry.location, rest, ref)]


def _host(location: str) -> str:
    return location.split("/", 1)[0]


def _remainder(entry: RegistryEntry, ref: Reference) -> str:
    """The part of ``host/repository`` below the entry's prefix ("" for the prefix itself)."""
    name = f"{ref.registry}/{ref.repository}"
    if entry.prefix.startswith("*."):
        return ref.repository
    return name[len(entry.prefix.rstrip("/")) :].lstrip("/")


def _rebase(location: str, rest: str, ref: Reference) -> Reference:
    path = f"{location.rstrip('/')}/{rest}" if rest else location
    suffix = f"@{ref.digest}" if ref.digest else f":{ref.tag or 'latest'}"
    return Reference.parse(path + suffix)


def load_registries_conf(environ: dict[str, str] | None = None) -> RegistriesConf:
    """The configuration in force (see the module docstring); empty when no file exists."""
    env = os.environ if environ is None else environ
    main = _main_file(env)
    files = [main] if main is not None and main.is_file() else []
    if "CONTAINERS_REGISTRIES_CONF" not in env:
        files += _drop_ins(env)
    by_prefix: dict[str, RegistryEntry] = {}
    for path in files:
        for entry in _read(path):
            by_prefix[entry.prefix] = entry
    return RegistriesConf(tuple(by_prefix.values()), tuple(str(p) for p in files))


def _main_file(env: os._Environ[str] | dict[str, str]) -> Path | None:
    if env.get("CONTAINERS_REGISTRIES_CONF"):
        return Path(env["CONTAINERS_REGISTRIES_CONF"])
    home = env.get("HOME")
    user = Path(home) / ".config/containers/registries.conf" if home else None
    return user if user is not None and user.is_file() else _SYSTEM


def _drop_ins(env: os._Environ[str] | dict[str, str]) -> list[Path]:
    dirs = [_SYSTEM.with_suffix(".conf.d")]
    if env.get("HOME"):
        dirs.append(Path(env["HOME"]) / ".config/containers/registries.conf.d")
    return [p for d in dirs if d.is_dir() for p in sorted(d.glob("*.conf"))]


#: a line of the TOML the distributions ship (comments, ``[table]`` and ``key = "string"``):
#: TOML 1.0's rules for those (bare or quoted keys, basic strings and comments without escapes
#: or control characters); anything else is left to tomllib
_COMMENT = r"(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"
_PLAIN_LINE = re.compile(
    rf"[ \t]*(?:\[[ \t]*(?P<table>[A-Za-z0-9_-]+)[ \t]*\][ \t]*{_COMMENT}"
    rf'|(?P<key>"[^"\\\x00-\x1f\x7f]*"|[A-Za-z0-9_-]+)[ \t]*=[ \t]*"[^"\\\x00-\x1f\x7f]*"'
    rf"[ \t]*{_COMMENT}|{_COMMENT})"
)
_READ_TABLES = frozenset({"registry", "registries"})


def _holds_no_registries(text: str) -> bool:
    """``text`` is valid TOML made only of comments, tables other than ``registry`` and
    ``registries``, and string values (the system file of comments, ``shortnames.conf``'s
    ``[aliases]``): nothing mason reads, so tomllib is neither imported (a few ms at
    start-up, issue 14) nor run. False when unsure: tomllib then reads it (and reports errors)."""
    keys: dict[str, set[str]] = {"": set()}
    table = ""
    for line in text.replace("\r\n", "\n").split("\n"):  # a lone CR is no TOML newline
        match = _PLAIN_LINE.fullmatch(line)
        if match is None:
            return False
        if match["table"] is not None:
            table = match["table"]
            if table in keys or table in keys[""] or table in _READ_TABLES:
                return False  # a table defined twice (an error), or one mason reads
            keys[table] = set()
        elif match["key"] is not None:
            key = match["key"].strip('"')
            if key in keys[table] or (not table and key in _READ_TABLES):
                return False
            keys[table].add(key)
    return True


def _read(path: Path) -> list[RegistryEntry]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, exc) from exc
    if _holds_no_registries(text):
        return []
    import tomllib  # only for a file that may hold registries (start-up, issue 14)

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _unreadable(path, exc) from exc
    entries = [_entry(item, path) for item in _list(doc.get("registry"), path, "[[registry]]")]
    old = doc.get("registries")
    old = old if isinstance(old, dict) else {}
    for host in (old.get("insecure") or {}).get("registries") or []:
        entries.append(RegistryEntry(str(host), str(host), insecure=True, source=str(path)))
    for host in (old.get("block") or {}).get("registries") or []:
        entries.append(RegistryEntry(str(host), str(host), blocked=True, source=str(path)))
    return entries


def _unreadable(path: Path, exc: Exception) -> RegistriesConfError:
    return RegistriesConfError(
        f"cannot read {path}: {exc}",
        operation="read registries.conf",
        hint="fix the file or point CONTAINERS_REGISTRIES_CONF elsewhere",
    )


def _entry(item: Any, path: Path) -> RegistryEntry:
    location = str(item.get("location") or "")
    prefix = str(item.get("prefix") or location)
    if not prefix:
        raise RegistriesConfError(
            f"{path}: a [[registry]] needs a location or a prefix", operation="read registries.conf"
        )
    mirrors = tuple(
        Mirror(
            str(m.get("location") or ""),
            bool(m.get("insecure", False)),
            str(m.get("pull-from-mirror") or "all"),
        )
        for m in _list(item.get("mirror"), path, "[[registry.mirror]]")
        if m.get("location")
    )
    return RegistryEntry(
        prefix,
        location or prefix,
        bool(item.get("insecure", False)),
        bool(item.get("blocked", False)),
        mirrors,
        str(path),
    )


def _list(value: Any, path: Path, what: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise RegistriesConfError(
            f"{path}: {what} must be an array of tables", operation="read registries.conf"
        )
    return value
