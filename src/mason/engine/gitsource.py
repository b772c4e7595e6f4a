"""Git sources: ``ADD <git url> <dest>`` and git build contexts, as BuildKit v0.32.2 takes them.

``parse_git_ref`` reads a source the way the Dockerfile frontend's ``dfgitutil.ParseGitRef``
does (``https://host/repo.git#ref:subdir``, ``git@host:repo``, ``git://``, ``ssh://`` and the
``?ref=&tag=&branch=&checksum=&subdir=&keep-git-dir=&submodules=&mtime=`` query form, with its
errors). ``resolve_commit`` asks the remote which commit the ref names (``git ls-remote``, no
clone), which is what a step's cache key holds; ``checkout`` fetches that commit shallowly and
checks it out. The real ``git`` program runs with a clean environment: no user or system config,
no credential helpers, no hooks, no terminal prompts, so nothing of the machine's git set-up
changes what a build gets or shows.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from mason.errors import BuildError, DiagnosticError
from mason.fsroot import FsRoot, clean_path
from mason.structs import Struct

__all__ = [
    "GitRef",
    "GitRefError",
    "checkout",
    "is_commit_sha",
    "parse_git_ref",
    "parse_go_bool",
    "redact_credentials",
    "redact_credentials_in",
    "resolve_commit",
]

_PROTO = re.compile(r"^[a-zA-Z0-9]+://")
_SCP = re.compile(r"^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$")
_SUPPORTED = ("http", "https", "ssh", "git")
_FLAG_QUERIES = ("submodules", "keep-git-dir", "fetch-by-commit")  # may be given without a value
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_TIMEOUT = 600.0


class GitRefError(DiagnosticError):
    """A source that is a git URL but whose options are wrong (BuildKit's loadQuery errors)."""

    reference = "invalid-git-ref"


class GitRef(Struct, frozen=True):
    """A parsed git source. ``remote`` is what ``git`` is given (no fragment, no query)."""

    remote: str
    ref: str = ""
    subdir: str = ""
    checksum: str = ""
    keep_git_dir: bool | None = None
    submodules: bool | None = None
    mtime: str = ""  # "checkout" (the default) or "commit"
    fetch_by_commit: bool = False
    unencrypted: bool = False  # git:// or http://
    indistinguishable_from_local: bool = False  # github.com/foo/bar: only build contexts take it

    @property
    def display(self) -> str:
        """The source as progress shows it, with no credentials."""
        text = redact_credentials(self.remote)
        if self.ref or self.subdir:
            text += f"#{self.ref}" + (f":{self.subdir}" if self.subdir else "")
        return text


def is_commit_sha(text: str) -> bool:
    """A full SHA-1 or SHA-256 commit id (gitutil.IsCommitSHA)."""
    return len(text) in (40, 64) and bool(_HEX.match(text))


def redact_credentials(url: str) -> str:
    """``url`` with a password in its user info replaced by ``xxxxx`` (urlutil.RedactCredentials)."""
    if not _PROTO.match(url):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:xxxxx@{host}"))


_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")


def redact_credentials_in(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` (a step name, a Dockerfile line) with the
    password replaced by ``xxxxx``."""
    return _USERINFO.sub(r"\1:xxxxx@", text)


def parse_git_ref(text: str) -> GitRef | None:
    """``text`` as a git source, or None when it is not one (a local path, a plain URL).
    Raises ``GitRefError`` when it is a git URL with invalid options."""
    if text.startswith(("./", "../")):
        return None
    indistinguishable = text.startswith("github.com/")
    query = fragment = ""
    unencrypted = False
    if indistinguishable or _PROTO.match(text):
        url = "https://" + text if indistinguishable else text
        scheme = url.split("://", 1)[0].lower()
        if scheme not in _SUPPORTED:
            return None
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        # an http(s) URL is a git repository only when its path ends in .git
        if (
            not indistinguishable
            and scheme in ("http", "https")
            and not parts.path.endswith(".git")
        ):
            return None
        unencrypted = scheme in ("http", "git") and not indistinguishable
        query, fragment = parts.query, parts.fragment
        remote = urlunsplit(parts._replace(query="", fragment=""))
        if indistinguishable:
            remote = remote.split("://", 1)[1]
    else:
        m = _SCP.match(text)
        if m is None:
            return None
        user, host, path, query, fragment = m.groups(default="")
        remote = f"{user}@{host}:{path}"
    ref, _, subdir = fragment.partition(":")
    subdir = clean_path(subdir).lstrip("/") if subdir else ""
    base = GitRef(
        remote,
        ref,
        subdir,
        unencrypted=unencrypted,
        indistinguishable_from_local=indistinguishable,
    )
    return _load_query(base, query) if query else base


def parse_go_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool, which BuildKit's options use (None where it fails)."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def _bool_query(key: str, values: list[str]) -> bool:
    if not values:
        return True
    value = parse_go_bool(values[0])
    if value is None:
        raise GitRefError(f"invalid {key} value: {values[0]!r}")
    return value


def _load_query(ref: GitRef, query: str) -> GitRef:
    """BuildKit's GitRef.loadQuery: each key once, with a value (but the flag keys)."""
    opts: dict[str, object] = {}
    tag = branch = ""
    ref_name, subdir = ref.ref, ref.subdir
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if len(values) > 1:
            raise GitRefError(f"query {key!r} has multiple values")
        if values[0] == "":
            if key not in _FLAG_QUERIES:
                raise GitRefError(f"query {key!r} has no value")
            values = []
        if key == "ref":
            if ref_name and ref_name != values[0]:
                raise GitRefError(f"ref conflicts: {ref_name!r} vs {values[0]!r}")
            ref_name = values[0]
        elif key == "tag":
            tag = values[0]
        elif key == "branch":
            branch = values[0]
        elif key == "subdir":
            if subdir and subdir != values[0]:
                raise GitRefError(f"subdir conflicts: {subdir!r} vs {values[0]!r}")
            subdir = values[0]
        elif key in ("checksum", "commit"):
            opts["checksum"] = values[0]
        elif key in _FLAG_QUERIES:
            opts[key.replace("-", "_")] = _bool_query(key, values)
        elif key == "mtime":
            if values[0] not in ("checkout", "commit"):
                raise GitRefError(
                    f'invalid mtime value: {values[0]!r} (must be "checkout" or "commit")'
                )
            opts["mtime"] = values[0]
        else:
            raise GitRefError(f"unexpected query {key!r}")
    if tag:
        tag = tag if tag.startswith("refs/tags/") else "refs/tags/" + tag
        if ref_name and ref_name != tag:
            raise GitRefError(f"ref conflicts: {ref_name!r} vs {tag!r}")
        ref_name = tag
    if branch:
        if tag:
            raise GitRefError("branch conflicts with tag")
        branch = branch if branch.startswith("refs/heads/") else "refs/heads/" + branch
        if ref_name and ref_name != branch:
            raise GitRefError(f"ref conflicts: {ref_name!r} vs {branch!r}")
        ref_name = branch
    return GitRef(
        ref.remote,
        ref_name,
        subdir,
        str(opts.get("checksum", "")),
        opts.get("keep_git_dir"),  # type: ignore[arg-type]
        opts.get("submodules"),  # type: ignore[arg-type]
        str(opts.get("mtime", "")),
        bool(opts.get("fetch_by_commit", False)),
        ref.unencrypted,
        ref.indistinguishable_from_local,
    )


# -- running git ---------------------------------------------------------------------------


def _git_env(home: Path) -> dict[str, str]:
    """A clean environment: no config but ours, never a prompt (a missing credential fails)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
    }
    if "SSH_AUTH_SOCK" in os.environ:  # ssh:// and git@ remotes authenticate with the agent
        env["SSH_AUTH_SOCK"] = os.environ["SSH_AUTH_SOCK"]
    return env


_GIT_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.symlinks=true",
    "-c",
    "credential.helper=",
    "-c",
    "init.defaultBranch=master",
    "-c",
    "advice.detachedHead=false",
    "-c",
    "core.fsmonitor=false",
    # only the transports a git source can name (submodules too): never ext::, never file://
    "-c",
    "protocol.allow=never",
    *(x for p in ("http", "https", "git", "ssh") for x in ("-c", f"protocol.{p}.allow=always")),
)


def _git(args: Sequence[str], *, cwd: Path, home: Path, remote: str, what: str) -> str:
    """Run ``git args`` and return its stdout; a failure names the remote (redacted) and git's
    last line of error, with credentials taken out."""
    # parsing git refs (every build's ADD sources and context) runs no program: subprocess is
    # imported by what runs git (start-up, issue 14)
    import subprocess

    try:
        done = subprocess.run(
            ["git", *_GIT_CONFIG, *args],
            cwd=cwd,
            env=_git_env(home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(
            f"git {what} {redact_credentials(remote)}: {exc}", reference="git-failed"
        ) from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        if remote != redact_credentials(remote):
            why = why.replace(remote, redact_credentials(remote))
        raise BuildError(f"git {what} {redact_credentials(remote)}: {why}", reference="git-failed")
    return done.stdout


def _checksum_check(ref: GitRef, commits: Sequence[str]) -> None:
    """``--checksum`` (or ``?checksum=``) is the commit, or a prefix of it, or of the annotated tag."""
    if not ref.checksum:
        return
    if not _HEX.match(ref.checksum):
        raise BuildError(
            f"invalid checksum {ref.checksum} for Git URL, expected hex commit hash",
            reference="invalid-git-ref",
        )
    if not any(c.startswith(ref.checksum.lower()) for c in commits if c):
        raise BuildError(
            f"expected checksum to match {ref.checksum}, got {commits[0]}",
            reference="checksum-mismatch",
        )


def resolve_commit(ref: GitRef, scratch: Path) -> str:
    """The commit ``ref`` names now, asked of the remote with ``git ls-remote`` (no clone). A full
    commit id is its own answer. The checksum is checked here, before anything is fetched."""
    if is_commit_sha(ref.ref):
        _checksum_check(ref, [ref.ref.lower()])
        return ref.ref.lower()
    name = ref.ref or "HEAD"
    out = _git(
        ["ls-remote", "--", ref.remote, name, name + "^{}"],
        cwd=scratch,
        home=scratch,
        remote=ref.remote,
        what="ls-remote",
    )
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, refname = line.partition("\t")
        found.setdefault(refname, sha)
    # an exact ref first, then a branch, then a tag (git's own order for a short name)
    names = [name, f"refs/heads/{name}", f"refs/tags/{name}"]
    for candidate in names:
        if candidate in found:
            tag = found[candidate]
            commit = found.get(candidate + "^{}", tag)  # an annotated tag: the commit it names
            _checksum_check(ref, [commit, tag])
            return commit
    raise BuildError(
        f"repository {redact_credentials(ref.remote)} does not contain ref {name}",
        reference="git-ref-not-found",
    )


def checkout(ref: GitRef, commit: str, scratch: Path) -> Path:
    """Fetch ``commit`` (depth 1) of ``ref.remote`` into a new directory under ``scratch`` and
    check it out; the directory to copy (``ref.subdir`` of it) is returned. ``.git`` is kept
    only with ``keep_git_dir`` (its origin URL without credentials)."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(dir=scratch, prefix="git-"))
    home = work / "home"
    tree = work / "tree"
    home.mkdir()
    tree.mkdir()

    def git(*args: str, what: str) -> str:
        return _git(args, cwd=tree, home=home, remote=ref.remote, what=what)

    git("init", "-q", what="init")
    git("remote", "add", "origin", ref.remote, what="remote add")
    # "--" before the remote: a ref from the Dockerfile is never read as an option
    try:  # a commit id: servers that allow it (protocol v2 does) fetch just that commit
        git("fetch", "-q", "--depth=1", "--no-tags", "--", "origin", commit, what="fetch")
    except BuildError:
        if not ref.ref or is_commit_sha(ref.ref):
            every = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
            git("fetch", "-q", "--", "origin", *every, what="fetch")
        else:
            git("fetch", "-q", "--no-tags", "--", "origin", ref.ref, what="fetch")
    try:
        got = git("rev-parse", "--verify", "-q", commit + "^{commit}", what="rev-parse").strip()
    except BuildError:
        got = ""
    if got != commit:
        raise BuildError(
            f"git {ref.display}: commit {commit} is not in what the remote sent "
            "(did the ref move during the build?)",
            reference="git-failed",
        )
    git("checkout", "-q", "--detach", commit, what="checkout")
    if ref.submodules is not False and (tree / ".gitmodules").is_file():
        git("submodule", "update", "--init", "--recursive", "--depth=1", what="submodule update")
    # ?mtime=commit: the committer time, read while .git is still there
    when = git("log", "-1", "--format=%ct", commit, what="log") if ref.mtime == "commit" else ""
    if ref.keep_git_dir:  # .git stays, without the credentials or the fetch's traces
        git("remote", "set-url", "origin", redact_credentials(ref.remote), what="remote set-url")
        git("reflog", "expire", "--all", "--expire=now", what="reflog expire")
        (tree / ".git" / "FETCH_HEAD").unlink(missing_ok=True)
    else:
        shutil.rmtree(tree / ".git")
    _normalize_modes(tree)
    if when:
        _set_mtimes(tree, int(when))
    shutil.rmtree(home, ignore_errors=True)
    return _subdir(tree, ref)


def _subdir(tree: Path, ref: GitRef) -> Path:
    """``ref.subdir`` inside the checkout: every component a real directory (no symlink may
    lead out of the repository, or anywhere else in it), as BuildKit's validateDirsOnly."""
    if not ref.subdir:
        return tree
    parts = [p for p in clean_path(ref.subdir).split("/") if p]
    with FsRoot(tree) as root:
        for i in range(len(parts)):
            prefix = "/".join(parts[: i + 1])
            st = root.lstat(prefix)
            if st is None:
                raise BuildError(
                    f"git {ref.display}: subdir {ref.subdir!r} does not exist",
                    reference="invalid-git-subdir",
                )
            if not stat.S_ISDIR(st.st_mode):
                raise BuildError(
                    f"git {ref.display}: invalid subdir {ref.subdir!r}: {prefix!r} is not "
                    "a directory" + (" (a symlink)" if stat.S_ISLNK(st.st_mode) else ""),
                    reference="invalid-git-subdir",
                )
        return root.host("/".join(parts), follow=False)


def _normalize_modes(tree: Path) -> None:
    """Git records only "executable or not": files 0755 or 0644 and directories 0755, whatever
    umask mason runs with (BuildKit's checkouts, made under buildkitd's 022, look so)."""
    for dirpath, _dirnames, filenames in os.walk(tree):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o755 if st.st_mode & 0o100 else 0o644)


def _set_mtimes(tree: Path, when: int) -> None:
    """``?mtime=commit``: every file dated by the commit (symlinks themselves, not targets)."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*dirnames, *filenames]:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(tree, (when, when))
