"""The concrete ops of a Dockerfile build, as ``mason.solver`` ops over ``StepResult``s.

- ``SourceOp``: a base image (FROM) -- its layers as remote blobs, nothing downloaded.
- ``ExecOp``: RUN in a sandbox on a writable snapshot of the input chain.
- ``FileOp``: COPY/ADD (from the context, a stage or an image, inline heredocs,
  URLs) and WORKDIR's mkdir, done in Python on a writable snapshot. With ``link``
  (COPY --link) it copies onto an empty root, so its layer and its key do not
  depend on the destination's layers.
- ``MergeOp``: a chain plus the layers a ``--link`` copy made on its own.

Every op that makes a layer returns the input chain plus one ``LayerRef``;
what the step changed, tarred deterministically, is stored gzip-compressed in the
content store and the step's snapshot is kept (``mason.engine.snapshots``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mason.digest import Digest, HashingWriter, sha256_bytes
from mason.engine.blobs import Blobs
from mason.engine.cachemounts import CacheMounts
from mason.engine.context import (
    ContextEntry,
    CopyOptions,
    DockerIgnore,
    Source,
    _mkdirs,
    checksum_sources,
    copy_looks_at,
    copy_sources,
    select_copy_sources,
    select_sources,
)
from mason.engine.explain import FileEntry, context_file_entries
from mason.engine.gitsource import GitRef, checkout, redact_credentials_in, resolve_commit
from mason.engine.imageconfig import format_created
from mason.engine.snapshots import LookedAt, Mounted, Snapshotter
from mason.engine.state import LayerRef, StateRoot
from mason.errors import BuildError
from mason.fsroot import FsRoot, PathOutsideError, clean_path
from mason.oci.atomic import temp_dir
from mason.solver import CacheMap, ExecContext, Vertex
from mason.solver.keys import CacheKey
from mason.structs import Struct, field

if TYPE_CHECKING:
    from mason.executor import Ulimit
    from mason.oci.platform import Platform

__all__ = [
    "BuildEnv",
    "ExecOp",
    "FileOp",
    "LocalResultStore",
    "MergeOp",
    "MountPlan",
    "SourceOp",
    "StepResult",
]


class StepResult(Struct, frozen=True):
    """A filesystem state: the full layer chain, and the created time of each layer
    (RFC 3339; "" for layers of a base image, whose history is its own)."""

    layers: tuple[LayerRef, ...]
    created: tuple[str, ...] = ()
    source: str = ""
    #: from an imported record: its links to root records (BuildKit's content roots), per
    #: input index, re-exported so a cache-hit build writes the records a cold one does
    root_links: tuple[tuple[int, str], ...] = ()

    def plus(self, layer: LayerRef, created: str) -> StepResult:
        times = self.created + ("",) * (len(self.layers) - len(self.created))
        return StepResult((*self.layers, layer), (*times, created))

    def to_extra(self) -> dict[str, Any]:
        return {"created": list(self.created)}


class LocalResultStore:
    """The solver's local ``CacheStore`` backed by the sqlite metadata. A result whose
    blobs are gone (pruned) is a miss."""

    def __init__(self, state: StateRoot, blobs: Blobs) -> None:
        self.state = state
        self.blobs = blobs

    def lookup(self, key: CacheKey) -> StepResult | None:
        r = self.state.meta.get_result(key.digest)
        if r is None:
            return None
        for lr in r.layers:
            if lr.blob is None:
                return None
            if not self.state.store.has(lr.blob) and not self.blobs.remote_locations(lr.blob):
                return None
        return StepResult(r.layers, tuple(r.extra.get("created", ())))

    def record(self, key: CacheKey, result: StepResult) -> None:
        self.state.meta.put_result(key.digest, result.layers, "", result.to_extra())


class BuildEnv(Struct):
    """What ops share during one build."""

    state: StateRoot
    blobs: Blobs
    snapshots: Snapshotter
    executor: Any
    context: Path
    ignore: DockerIgnore
    secrets: Mapping[str, bytes]
    source_date_epoch: int | None
    dockerfile_name: str = "Dockerfile"
    dockerfile_lines: list[str] = field(default_factory=list)
    http_client: Any = None
    default_network: str = "default"  # mason build --network
    #: mason build --add-host, --shm-size, --ulimit: every RUN's sandbox, and (as in BuildKit,
    #: which keeps them in each exec step's metadata) every RUN's key
    extra_hosts: tuple[tuple[str, str], ...] = ()
    shm_size: int | None = None
    ulimits: tuple[Ulimit, ...] = ()
    #: mason build --allow security.insecure: RUN --security=insecure may run
    allow_insecure: bool = False
    #: the RUN --mount=type=cache directories used, and where new ones are restored from
    cache_mounts: CacheMounts = field(default_factory=CacheMounts)
    #: --ssh: each id's agent socket on the host (``mason.engine.sshagent``)
    ssh_sockets: Mapping[str, str] = field(default_factory=dict)
    #: how a RUN of a foreign platform runs (``mason.executor.emulation.Emulators``; made on
    #: first use, None in unit tests that run only the host's platform)
    emulators: Any = None
    #: --build-context NAME=DIR: each directory and its own .dockerignore
    named_dirs: Mapping[str, tuple[Path, DockerIgnore]] = field(default_factory=dict)
    #: the root's kept context-file digests (``mason.engine.filedigests.FileDigestCache``;
    #: None: every file is read)
    file_digests: Any = None
    #: told of each layer a step commits (``mason.engine.earlypush``; None: nobody listens)
    layer_made: Callable[[LayerRef], None] | None = None

    def digests_of(self, root: Path) -> Any:
        """The kept file digests below ``root`` (a ``RootDigests``), or None."""
        return None if self.file_digests is None else self.file_digests.for_root(root)

    def source_root(self, name: str) -> tuple[Path, DockerIgnore, str]:
        """The directory files are read from (the build context, or the named directory
        context ``name``), its .dockerignore, and how errors name it."""
        if not name:
            return self.context, self.ignore, "build context"
        root, ignore = self.named_dirs[name]
        return root, ignore, f"named context {name}"

    def sandbox_key(self) -> dict[str, Any]:
        """The sandbox settings a RUN's key covers; empty when none is set, so keys stay as before."""
        key: dict[str, Any] = {}
        if self.extra_hosts:
            key["extra_hosts"] = [list(h) for h in self.extra_hosts]
        if self.shm_size is not None:
            key["shm_size"] = self.shm_size
        if self.ulimits:
            key["ulimits"] = [[u.name, u.soft, u.hard] for u in self.ulimits]
        return key

    def created_now(self) -> str:
        return format_created(
            float(self.source_date_epoch) if self.source_date_epoch is not None else time.time()
        )

    def location(self, lines: tuple[int, ...]) -> list[str]:
        """Dockerfile context lines for an error, BuildKit style."""
        if not lines:
            return []
        out = [f"{self.dockerfile_name}:{lines[0]}", "--------------------"]
        for n in lines:
            if 0 < n <= len(self.dockerfile_lines):
                out.append(f"{n:>4} | >>> {redact_credentials_in(self.dockerfile_lines[n - 1])}")
        out.append("--------------------")
        return out


def _commit_step(env: BuildEnv, mounted: Mounted, base: StepResult) -> StepResult:
    # file times stay as the step left them: SOURCE_DATE_EPOCH dates the image and its history,
    # and clamps file times only where an image output asks (rewrite-timestamp=true), as in
    # BuildKit v0.32.2 (mason.engine.exporters.rewrite_timestamps)
    lr = env.snapshots.commit(mounted)
    if env.layer_made is not None:
        env.layer_made(lr)
    return base.plus(lr, env.created_now())


# -- FROM ---------------------------------------------------------------------------


class SourceOp:
    """A base image pinned by manifest digest. ``layers`` carry blob digests and diff IDs."""

    def __init__(self, pinned: str, manifest_digest: str, layers: tuple[LayerRef, ...]) -> None:
        self.pinned = pinned
        self.manifest_digest = manifest_digest
        self.layers = layers

    def cache_map(self, input_keys: Sequence[Digest]) -> CacheMap:
        return CacheMap({"type": "mason.source.v0", "image": self.manifest_digest})

    def execute(self, ctx: ExecContext, inputs: Sequence[StepResult]) -> StepResult:
        ctx.log(f"resolve {self.pinned} done")
        return StepResult(self.layers, ("",) * len(self.layers))


# -- RUN ------------------------------------------------------------------------------


class MountPlan(Struct, frozen=True):
    """One RUN --mount, with stage/image sources as input indexes."""

    type: str
    target: str
    source: str = ""
    input_index: int | None = None  # bind from a stage/image: index into the op's inputs
    readonly: bool = True
    cache_id: str = ""
    sharing: str = "shared"
    secret_id: str = ""
    required: bool = False
    size: int = 0
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    #: a secret given to the RUN in this environment variable (``type=secret,env=NAME``); with no
    #: ``target`` there is no file
    env: str | None = None
    #: a bind mount of a named directory context (``--mount=from=NAME``), read as the main
    #: context is; "" for the main context or a stage/image input
    context: str = ""

    @property
    def secret_file(self) -> bool:
        """A secret mount that puts a file in the sandbox (always, unless only ``env=`` asks)."""
        return self.type == "secret" and (self.env is None or bool(self.target))

    def key_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type,
            "target": self.target,
            "source": self.source,
            "readonly": self.readonly,
        }
        if self.type == "cache":
            d.update(
                id=self.cache_id, sharing=self.sharing, mode=self.mode, uid=self.uid, gid=self.gid
            )
        if self.type == "secret":
            # Only the id and where it goes: secret contents never enter a key.
            d.update(
                id=self.secret_id,
                required=self.required,
                mode=self.mode,
                uid=self.uid,
                gid=self.gid,
            )
            if (
                self.env is not None
            ):  # the variable's name, never its value (absent: keys as before)
                d["env"] = self.env
        if self.type == "ssh":
            # the id and the socket's place and owner: never the agent or its keys (BuildKit)
            d.update(
                id=self.secret_id,
                required=self.required,
                mode=self.mode,
                uid=self.uid,
                gid=self.gid,
            )
        if self.type == "tmpfs":
            d.update(size=self.size)
        if self.input_index is not None:
            d["input"] = self.input_index
        if self.context:
            d["context"] = self.context
        return d


class ExecOp:
    def __init__(
        self,
        env: BuildEnv,
        *,
        args: tuple[str, ...],
        environ: tuple[str, ...],
        cwd: str,
        user: str,
        network: str,
        mounts: tuple[MountPlan, ...],
        files: Mapping[str, str],
        lines: tuple[int, ...],
        display: str,
        security: str = "sandbox",
        platform: Platform | None = None,
    ) -> None:
        self.env = env
        #: the stage's platform: in the key, and what the process runs as (emulated when foreign)
        self.platform = platform
        self.args = args
        self.environ = environ
        self.cwd = cwd
        self.user = user
        self.network = network
        self.mounts = mounts
        self.files = dict(files)
        self.lines = lines
        self.display = display
        self.security = security
        #: another RUN depends on this one (``mark_plan``)
        self.runs_follow = False

    def cache_map(self, input_keys: Sequence[Digest]) -> CacheMap:
        op = {
            "type": "mason.exec.v1",
            "args": list(self.args),
            "env": list(self.environ),
            "cwd": self.cwd,
            "user": self.user,
            "network": self.network,
            "mounts": [m.key_json() for m in self.mounts],
            "files": {k: v for k, v in sorted(self.files.items())},
            "epoch": self.env.source_date_epoch,
            **self.env.sandbox_key(),
        }
        if self.platform is not None:  # as BuildKit's exec op: the platform is in the key
            op["platform"] = str(self.platform)
        if self.security != "sandbox":  # RUN --security=insecure (absent: keys as before)
            op["security"] = self.security
        content = None
        ctx_binds = [m for m in self.mounts if m.type == "bind" and m.input_index is None]
        if ctx_binds:

            def content() -> str:
                if any(m.context for m in ctx_binds):  # named directories: one sum per mount
                    parts = []
                    for m in ctx_binds:
                        root, ignore, what = self.env.source_root(m.context)
                        found = select_sources(root, [m.source or "."], ignore, what=what)
                        digests = self.env.digests_of(root)
                        parts.append(checksum_sources(found, ignore, digests=digests))
                    return sha256_bytes(" ".join(parts).encode())
                srcs = [
                    select_sources(self.env.context, [m.source or "."], self.env.ignore)
                    for m in ctx_binds
                ]
                return checksum_sources(
                    [s for group in srcs for s in group],
                    self.env.ignore,
                    digests=self.env.digests_of(self.env.context),
                )

        return CacheMap(op, content)

    def execute(self, ctx: ExecContext, inputs: Sequence[StepResult]) -> StepResult:
        base = inputs[0]
        # the sandbox's launcher guard starts while the rootfs is mounted, and the next RUN's
        # while this one runs (issue 14)
        prestart = getattr(self.env.executor, "prestart", None)
        if prestart is not None:
            prestart(2 if self.runs_follow else 1)
        with self.env.snapshots.mount(base.layers) as mounted:
            with contextlib.ExitStack() as stack:
                self._run(ctx, inputs, stack, mounted.merged)
            return _commit_step(self.env, mounted, base)

    def _run(
        self,
        ctx: ExecContext,
        inputs: Sequence[StepResult],
        stack: contextlib.ExitStack,
        rootfs: Path,
    ) -> None:
        import shutil

        from mason.executor import BindMount, CacheMount, ExecSpec, TmpfsMount

        env = self.env
        scratch = env.state.temp_dir("run")
        stack.callback(shutil.rmtree, scratch, True)
        mounts: list[Any] = []
        secret_env: list[str] = []
        for i, (name, data) in enumerate(sorted(self.files.items())):
            f = scratch / f"heredoc-{i}"
            f.write_text(data)
            os.chmod(f, 0o755)  # a shebang heredoc is run as a program
            mounts.append(BindMount(f, f"/dev/pipes/{name}", readonly=True))
        for m in self.mounts:
            if m.type == "bind":
                if m.input_index is not None:
                    other = stack.enter_context(
                        env.snapshots.view(inputs[m.input_index].layers, readonly=m.readonly)
                    )
                    src = self._mount_source(other, m, "stage")
                else:
                    src = self._context_mount(m, scratch)
                mounts.append(BindMount(src, m.target, readonly=m.readonly))
            elif m.type == "cache":
                seed = seed_result = None
                if m.input_index is not None:
                    seed_result = inputs[m.input_index]
                    view = stack.enter_context(env.snapshots.view(seed_result.layers))
                    seed = self._mount_source(view, m, "stage")
                cdir = self._cache_dir(m, stack, seed, seed_result, ctx.log)
                mounts.append(CacheMount(cdir, m.target, readonly=False))
            elif m.type == "tmpfs":
                mounts.append(TmpfsMount(m.target, m.size or None))
            elif m.type == "secret":
                mounts.extend(self._secret_mount(m, stack, secret_env))
            elif m.type == "ssh":
                mounts.extend(self._ssh_mount(m, stack))
        args = self._emulated(ctx, mounts)
        spec = ExecSpec(
            rootfs=rootfs,
            args=args,
            env=(*self.environ, *secret_env),
            cwd=self.cwd,
            user=self.user,
            network=self.network,  # type: ignore[arg-type]
            mounts=tuple(mounts),
            extra_hosts=env.extra_hosts,
            shm_size=env.shm_size,
            ulimits=env.ulimits,
            insecure=self.security == "insecure",
        )
        cancel = threading.Event()
        ctx.cancel.add_callback(cancel.set)
        buf = _LineBuffer(ctx.log)
        status = env.executor.run(spec, buf.feed, cancel=cancel)
        buf.flush()
        if not status.ok:
            lines = list(status.last_lines) or buf.tail
            raise BuildError(
                f'process "{" ".join(self.args)}" did not complete successfully: {status.describe()}',
                reference="run-failed",
                context=[*(f"  {ln}" for ln in lines[-10:]), *env.location(self.lines)],
            )

    def _emulated(self, ctx: ExecContext, mounts: list[Any]) -> tuple[str, ...]:
        """The command line for this platform: as it is natively or under binfmt_misc, after
        the emulator (bound read-only, BuildKit's fallback) when it must run explicitly."""
        from mason.executor import BindMount

        if self.platform is None or self.env.emulators is None:
            return self.args
        emulation = self.env.emulators.for_platform(self.platform)
        if emulation.note:
            ctx.log(emulation.note)
        if emulation.emulator is not None:
            from mason.executor.emulation import EMULATOR_MOUNT

            mounts.append(BindMount(emulation.emulator, EMULATOR_MOUNT, readonly=True))
        return tuple(emulation.args(self.args))

    def _context_mount(self, m: MountPlan, scratch: Path) -> Path:
        """What a bind mount of the build context shows: the context as a build sees it. A
        read-only mount of a context with no ``.dockerignore`` rules is the directory itself;
        otherwise a copy made by COPY's own rules, so that ignored files stay out (BuildKit
        never sends them) and an ``rw`` mount writes a throwaway copy, never the user's files."""
        root, ignore, what = self.env.source_root(m.context)
        if m.readonly and ignore.empty:
            return self._mount_source(root, m, what)
        (source,) = select_sources(root, [m.source or "."], ignore, what=what)
        copy = Path(temp_dir(scratch, "context-"))
        name = "" if source.is_dir else os.path.basename(source.rel)
        copy_sources([source], copy, "/" + name, CopyOptions(), ignore, dest_is_dir_hint=False)
        if source.is_dir:
            os.chmod(copy, stat.S_IMODE(os.stat(source.path).st_mode))
        return copy / name if name else copy

    def _secret_mount(
        self, m: MountPlan, stack: contextlib.ExitStack, secret_env: list[str]
    ) -> list[Any]:
        """A secret's file mount (on tmpfs) and/or its ``env=`` variable (``secret_env``)."""
        from mason.engine.secrets import secret_file
        from mason.executor import SecretMount

        env = self.env
        secret = env.secrets.get(m.secret_id)
        if secret is None and m.required:
            raise BuildError(
                f"secret {m.secret_id} not found",
                reference="secret-missing",
                context=env.location(self.lines),
                hint=f"pass --secret id={m.secret_id},src=FILE",
            )
        if m.env is not None:
            # this RUN's environment only (an optional secret that is missing: empty, as
            # BuildKit); never in self.environ, which is the key and the history
            secret_env.append(f"{m.env}={(secret or b'').decode(errors='replace')}")
        if secret is None or not m.secret_file:
            return []
        # on tmpfs, never on disk under $MASON_ROOT: see mason.engine.secrets
        mode = m.mode if m.mode is not None else 0o400
        sf = stack.enter_context(secret_file(secret, mode=mode, uid=m.uid or 0, gid=m.gid or 0))
        return [SecretMount(sf, m.target or f"/run/secrets/{m.secret_id}")]

    def _ssh_mount(self, m: MountPlan, stack: contextlib.ExitStack) -> list[Any]:
        """An ssh agent's socket: a proxy of its own for this RUN, bound read-only."""
        from mason.engine.sshagent import agent_proxy
        from mason.executor import SecretMount

        if m.secret_id not in self.env.ssh_sockets and not m.required:
            return []  # an optional agent that was not forwarded: no socket, as BuildKit
        proxy = stack.enter_context(
            agent_proxy(
                self.env.ssh_sockets,
                m.secret_id,
                mode=0o600 if m.mode is None else m.mode,
                uid=m.uid or 0,
                gid=m.gid or 0,
                where=self.env.location(self.lines),
            )
        )
        return [SecretMount(proxy, m.target)]

    def _mount_source(self, root: Path, m: MountPlan, what: str) -> Path:
        """The host path of ``--mount source=`` inside ``root``: symlinks and ``..`` resolved
        inside it (``mason.fsroot``), so a mount never reaches the host. The view is this
        step's own and nothing writes to it before runc mounts it."""
        try:
            with FsRoot(root) as fs:
                res = fs.resolve(m.source)
        except PathOutsideError as exc:
            raise BuildError(
                f"mount source {m.source!r}: {exc.message}",
                reference="mount-source",
                context=self.env.location(self.lines),
            ) from None
        if not res.exists:
            raise BuildError(
                f"mount source {m.source or '/'!r} does not exist in the {what}",
                reference="mount-source",
                context=self.env.location(self.lines),
            )
        return root.joinpath(*res.parts)

    def _cache_dir(
        self,
        m: MountPlan,
        stack: contextlib.ExitStack,
        seed: Path | None,
        seed_result: StepResult | None,
        log: Callable[[str], None] | None = None,
    ) -> Path:
        """The directory of a cache mount, locked for this RUN as ``sharing`` says, across threads
        and processes (flock on a lock file beside it): ``shared`` takes a shared lock on the one
        directory; ``locked`` an exclusive one (waits); ``private`` the first instance nobody uses,
        else a new one. A cache seeded ``from=`` a stage or image is its own cache per source
        content (as in BuildKit) and starts as a copy of it; any other new one starts with what
        an imported cache holds for its id (``engine.cachemounts``)."""
        import shutil

        ident = m.cache_id
        if seed_result is not None:
            ident += "\0" + ",".join(lr.diff_id for lr in seed_result.layers) + "\0" + m.source
        name = sha256_bytes(ident.encode()).split(":", 1)[1][:32]
        root = self.env.state.cachemounts_dir
        locks = root.parent / "cachemount-locks"  # beside, not inside: du/prune list cachemounts/
        locks.mkdir(parents=True, exist_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        instance = 0
        while True:
            d = root / (name if instance == 0 else f"{name}.{instance}")
            fd = os.open(locks / d.name, os.O_RDWR | os.O_CREAT, 0o600)
            stack.callback(os.close, fd)
            if m.sharing == "private":
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    instance += 1
                    continue
            else:
                fcntl.flock(fd, fcntl.LOCK_EX if m.sharing == "locked" else fcntl.LOCK_SH)
            break
        if not d.exists():
            tmp = self.env.state.temp_dir("cachemount")
            try:
                if seed is not None and seed.is_dir():
                    shutil.copytree(seed, tmp, symlinks=True, dirs_exist_ok=True)
                    shutil.copystat(seed, tmp)
                else:
                    os.chmod(tmp, m.mode if m.mode is not None else 0o755)
                    os.chown(tmp, m.uid or 0, m.gid or 0)
                    if seed_result is None:
                        restored = self.env.cache_mounts.restore(m.cache_id, tmp)
                        if restored is not None and log is not None:
                            log(f"cache mount {m.cache_id!r} restored from {restored}")
                os.rename(tmp, d)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not d.is_dir():
                    raise
        if seed_result is None and instance == 0:
            self.env.cache_mounts.used(m.cache_id, d, locks / d.name)
        return d


class _LineBuffer:
    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._partial = b""
        self.tail: list[str] = []

    def feed(self, data: bytes) -> None:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for ln in lines:
            text = ln.decode(errors="replace").rstrip("\r")
            self.tail = ([*self.tail, text])[-20:]
            self._sink(text)

    def flush(self) -> None:
        if self._partial:
            self.feed(b"\n")


# -- COPY / ADD / WORKDIR -------------------------------------------------------------


class FileAction(Struct, frozen=True):
    """What a FileOp does. ``kind``: copy (context or ``from_input``, plus ADD's ``urls``), inline,
    mkdir. ``link``: the op has no base input and copies onto an empty root (COPY --link)."""

    kind: str
    sources: tuple[str, ...] = ()
    dest: str = "/"
    from_input: int | None = None
    chown: str = ""
    chmod: str = ""
    inline: tuple[tuple[str, str], ...] = ()
    urls: tuple[str, ...] = ()
    checksum: str = ""
    extract: bool = False  # ADD of a local archive
    user: str = ""  # mkdir: owner
    link: bool = False
    exclude: tuple[str, ...] = ()  # COPY/ADD --exclude patterns
    parents: bool = False  # COPY --parents
    unpack: bool | None = None  # ADD --unpack: None unless given (local archives: yes, URLs: no)
    # ADD of git repositories (--checksum and --keep-git-dir merged in)
    git: tuple[GitRef, ...] = ()
    #: COPY --from a named directory context: its name ("": the build context). Not in the
    #: key: what is copied is, by its content, as for the build context.
    context: str = ""

    def key_json(self) -> dict[str, Any]:
        key: dict[str, Any] = {
            "kind": self.kind,
            "sources": list(self.sources),
            "dest": self.dest,
            "from": self.from_input,
            "chown": self.chown,
            "chmod": self.chmod,
            "inline": [list(x) for x in self.inline],
            "urls": list(self.urls),
            "checksum": self.checksum,
            "extract": self.extract,
            "user": self.user,
            "link": self.link,
        }
        # frontend 1.26 flags enter only when given, so that the keys of other steps stay as they were
        if self.exclude:
            key["exclude"] = list(self.exclude)
        if self.parents:
            key["parents"] = True
        if self.unpack is not None:
            key["unpack"] = self.unpack
        if self.git:  # the commit each resolves to is the key's content; no credentials here
            key["git"] = [
                [g.display, g.subdir, bool(g.keep_git_dir), g.submodules is not False, g.mtime]
                for g in self.git
            ]
        return key


class FileOp:
    def __init__(self, env: BuildEnv, action: FileAction, lines: tuple[int, ...]) -> None:
        self.env = env
        self.action = action
        self.lines = lines
        self._url_files: dict[str, tuple[Path, str]] = {}  # url -> (downloaded file, its sha256)
        self._git_commits: dict[GitRef, str] = {}  # resolved once per build: key and checkout agree
        self._lock = threading.Lock()
        #: the context files the key's content covers, one checksum each (mason.engine.explain
        #: keeps them so that a later miss can name the file that changed)
        self.context_files: tuple[FileEntry, ...] | None = None
        #: no step mounts this op's base whole: it may copy onto a sparse one
        #: (``mark_plan``, ``_looks_at``)
        self.sparse_base = False

    def cache_map(self, input_keys: Sequence[Digest]) -> CacheMap:
        op = {
            "type": "mason.file.v1",
            "action": self.action.key_json(),
            "epoch": self.env.source_date_epoch,
        }
        a = self.action
        content: Callable[[], str] | None = None
        if a.kind == "copy" and (a.urls or a.git or a.from_input is None):

            def content() -> str:
                parts = []
                if a.from_input is None and (a.sources or not a.git):
                    sources = self._context_sources()
                    walked: list[ContextEntry] = []
                    root, ignore, _ = self.env.source_root(a.context)
                    digests = self.env.digests_of(root)
                    parts.append(checksum_sources(sources, ignore, walked, digests))
                    self.context_files = context_file_entries(walked)
                parts += [self._fetch_url(u)[1] for u in a.urls]
                parts += [f"git:{self._git_commit(g)}" for g in a.git]
                return parts[0] if len(parts) == 1 else sha256_bytes(" ".join(parts).encode())

        return CacheMap(op, content)

    def _context_sources(self) -> list[Source]:
        root, ignore, what = self.env.source_root(self.action.context)
        return self._select(root, ignore, what)

    def _select(self, root: Path, ignore: DockerIgnore | None, what: str) -> list[Source]:
        """The action's sources in ``root``; an error names the step's lines."""
        a = self.action
        try:
            return select_copy_sources(
                root, a.sources, ignore, what=what, parents=a.parents, exclude=a.exclude
            )
        except BuildError as exc:
            raise BuildError(
                exc.message,
                reference=exc.reference,
                context=[*exc.context, *self.env.location(self.lines)],
            ) from None

    def _fetch_url(self, url: str) -> tuple[Path, str]:
        """Download ``url`` once per build (the key needs its checksum, the copy its bytes). The
        file is named like BuildKit names it: the last element of the URL path, else __unnamed__."""
        import shutil
        import urllib.parse

        from mason.registry.errors import RegistryError
        from mason.registry.transport import http_get

        with self._lock:
            if url in self._url_files:
                return self._url_files[url]
            base = posixpath.basename(urllib.parse.urlsplit(url).path)
            name = base if base not in ("", ".", "/", "..") else "__unnamed__"
            tmp = self.env.state.temp_dir("url")
            path = tmp / name
            try:
                # the registry client's transport: retries, backoff, TLS settings, timeouts
                with http_get(url, operation=f"ADD {url}") as chunks, open(path, "wb") as f:
                    out = HashingWriter(f)
                    for chunk in chunks:
                        out.write(chunk)
            except RegistryError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                why = (
                    f"HTTP {exc.status}"
                    if exc.status is not None
                    else exc.message.removeprefix(f"ADD {url}: ")
                )
                raise BuildError(
                    f"ADD {url}: {why}",
                    reference="add-url-failed",
                    context=self.env.location(self.lines),
                ) from exc
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            got = out.digest
            if self.action.checksum and self.action.checksum != got:
                shutil.rmtree(tmp, ignore_errors=True)
                raise BuildError(
                    f"ADD {url}: checksum mismatch: expected {self.action.checksum}, got {got}",
                    reference="checksum-mismatch",
                    context=self.env.location(self.lines),
                )
            os.chmod(path, 0o600)
            self._url_files[url] = (path, got)
            return path, got

    def _git_commit(self, ref: GitRef) -> str:
        """The commit ``ref`` names, asked of the remote once per build (``--checksum`` checked)."""
        with self._lock:
            if ref not in self._git_commits:
                try:
                    self._git_commits[ref] = resolve_commit(ref, self.env.state.tmp)
                except BuildError as exc:
                    raise BuildError(
                        f"ADD {ref.display}: {exc.message}",
                        reference=exc.reference,
                        context=self.env.location(self.lines),
                    ) from None
            return self._git_commits[ref]

    def _add_git(self, rootfs: Path, dest: str, opts: CopyOptions) -> None:
        """ADD <git url>: the checkout's files (root-owned unless --chown) into ``dest``."""
        import shutil

        for ref in self.action.git:
            commit = self._git_commit(ref)
            scratch = self.env.state.temp_dir("git")
            try:
                tree = checkout(ref, commit, scratch)
                excluded = DockerIgnore(list(self.action.exclude)) if self.action.exclude else None
                source = Source(tree, "", True, exclude=excluded)  # ADD --exclude applies too
                copy_sources([source], rootfs, dest, opts, None, dest_is_dir_hint=True)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    def _drop_downloads(self) -> None:
        import shutil

        with self._lock:
            for path, _ in self._url_files.values():
                shutil.rmtree(path.parent, ignore_errors=True)
            self._url_files.clear()

    def execute(self, ctx: ExecContext, inputs: Sequence[StepResult]) -> StepResult:
        base = StepResult(()) if self.action.link else inputs[0]
        try:
            with contextlib.ExitStack() as stack:
                sources = self._sources(inputs, stack)
                looks_at = self._looks_at(sources)
                new_only = self.action.extract  # an archive's entries: see ``_looks_at``
                mount = self.env.snapshots.mount(base.layers, looks_at=looks_at, new_only=new_only)
                with mount as mounted:
                    self._apply(ctx, stack, mounted.merged, sources)
                    return _commit_step(self.env, mounted, base)
        finally:
            self._drop_downloads()

    def _sources(
        self, inputs: Sequence[StepResult], stack: contextlib.ExitStack
    ) -> list[Source] | None:
        """A COPY's sources, selected before its base is mounted (``_looks_at`` walks them):
        another stage's, in a view of it open until ``stack`` closes, or the context's; None
        for other steps and an ADD of URLs or git only."""
        a = self.action
        if a.kind != "copy":
            return None
        if a.from_input is not None:
            other = stack.enter_context(self.env.snapshots.view(inputs[a.from_input].layers))
            return self._select(other, None, "source stage")
        return self._context_sources() if a.sources else None

    def _looks_at(self, sources: list[Source] | None) -> Callable[[], LookedAt] | None:
        """For a step whose writes alone decide its layer (COPY of ``sources``, a heredoc,
        WORKDIR; owners by number): the paths it resolves in its base, so that a base not
        unpacked yet is shown by just what they meet (``Snapshotter.mount``). None for the
        others (names looked up in /etc/passwd, URLs, git). An ADD of local archives
        unpacks each inside the destination, whose entries are unknown until read: only its
        resolution is given, and the mount is ``new_only``."""
        a = self.action
        owner = a.chown or (a.user if a.kind == "mkdir" else "")
        if not self.sparse_base or (owner and _numeric_owner(owner) is None):
            return None
        if a.kind == "mkdir":
            return lambda: [(a.dest, True)]
        if a.kind == "inline":
            names = [Source(Path(), _inline_name(n), False) for n, _ in a.inline]
            return lambda: copy_looks_at(names, a.dest, None)
        if sources is None or a.urls or a.git or a.parents:
            return None
        if a.extract:  # whatever it unpacks (or copies) goes below the destination
            return lambda: [(a.dest, True)]
        ignore = None if a.from_input is not None else self.env.source_root(a.context)[1]
        return lambda: copy_looks_at(sources, a.dest, ignore)

    def _apply(
        self,
        ctx: ExecContext,
        stack: contextlib.ExitStack,
        rootfs: Path,
        sources: list[Source] | None,
    ) -> None:
        import shutil

        env = self.env
        a = self.action
        opts = self._copy_options(rootfs)
        dest = a.dest
        # several sources always go into a directory
        dir_hint = dest.endswith("/") or dest.endswith("/.") or len(a.sources) + len(a.urls) > 1
        try:
            if a.kind == "mkdir":
                _mkdirs(rootfs, dest, opts)
            elif a.kind == "copy":
                if a.from_input is not None:
                    assert sources is not None
                    stage_opts = CopyOptions(
                        opts.uid, opts.gid, opts.chmod, preserve_owner=True, mode_set=opts.mode_set
                    )
                    copy_sources(sources, rootfs, dest, stage_opts, None, dest_is_dir_hint=dir_hint)
                elif sources is not None:
                    if a.extract and a.unpack is not False:
                        self._add_local(sources, rootfs, dest, opts, dir_hint)
                    else:
                        ignore = env.source_root(a.context)[1]
                        copy_sources(sources, rootfs, dest, opts, ignore, dest_is_dir_hint=dir_hint)
                self._add_urls(rootfs, dest, opts, dir_hint)
                self._add_git(rootfs, dest, opts)
            elif a.kind == "inline":
                tmp = env.state.temp_dir("inline")
                stack.callback(shutil.rmtree, tmp, True)
                srcs = []
                for i, (name, data) in enumerate(a.inline):
                    p = tmp / f"inline-{i}"
                    p.write_text(data)
                    os.chmod(p, 0o644)
                    srcs.append(Source(p, _inline_name(name), False))
                copy_sources(srcs, rootfs, dest, opts, None, dest_is_dir_hint=dir_hint)
        except BuildError as exc:
            raise BuildError(
                exc.message,
                reference=exc.reference,
                context=[*exc.context, *env.location(self.lines)],
            ) from None
        except OSError as exc:
            raise BuildError(
                f"{ctx.name}: {exc}", reference="copy-failed", context=env.location(self.lines)
            ) from exc

    def _add_urls(self, rootfs: Path, dest: str, opts: CopyOptions, dir_hint: bool) -> None:
        """ADD <url>: copied (0600 unless --chmod; a symbolic one applies to 0600), or with
        ``--unpack=true`` unpacked when it is an archive."""
        a = self.action
        keep_mode = opts.chmod is not None or opts.mode_set is not None
        url_opts = opts if keep_mode else CopyOptions(opts.uid, opts.gid, 0o600)
        for url in a.urls:
            path, _ = self._fetch_url(url)
            source = [Source(path, path.name, False)]
            if a.unpack:
                self._add_local(source, rootfs, dest, url_opts, dir_hint)
            else:
                copy_sources(source, rootfs, dest, url_opts, None, dest_is_dir_hint=dir_hint)

    def _copy_options(self, rootfs: Path) -> CopyOptions:
        a = self.action
        uid = gid = None
        owner = a.chown or (a.user if a.kind == "mkdir" else "")
        if owner:
            uid, gid = _resolve_owner(rootfs, owner)
        chmod = mode_set = None
        if a.chmod:
            from mason.engine.chmod import ChmodError, parse_chmod  # start-up: --chmod only

            try:
                mode_set = parse_chmod(a.chmod)
            except ChmodError as exc:
                raise BuildError(
                    f"invalid --chmod={a.chmod}: {exc}",
                    reference="invalid-chmod",
                    context=self.env.location(self.lines),
                ) from None
            chmod, mode_set = (
                (mode_set.octal, None) if mode_set.octal is not None else (None, mode_set)
            )
        return CopyOptions(uid, gid, chmod, mode_set=mode_set)

    def _add_local(
        self, sources: list[Source], rootfs: Path, dest: str, opts: CopyOptions, dir_hint: bool
    ) -> None:
        from mason.layer.apply import apply_layer

        plain: list[Source] = []
        for src in sources:
            # only a regular file can be an archive (a FIFO in the context would block the build)
            regular = not src.is_dir and stat.S_ISREG(os.stat(src.path).st_mode)
            stream = _open_archive(src.path) if regular else None
            if stream is None:
                plain.append(src)
                continue
            target = _mkdirs(rootfs, dest, opts)
            with stream:
                apply_layer(stream, str(target), mode="flat")
        if plain:
            ignore = self.env.source_root(self.action.context)[1]
            copy_sources(plain, rootfs, dest, opts, ignore, dest_is_dir_hint=dir_hint)


class MergeOp:
    """COPY --link (BuildKit's MergeOp): ``inputs[0]``'s chain plus the layers ``inputs[1]`` made on
    an empty root. Nothing runs: the key follows the two inputs, and the copy's own key does not
    depend on the base, so a new base reuses the copied layer."""

    def cache_map(self, input_keys: Sequence[Digest]) -> CacheMap:
        return CacheMap({"type": "mason.merge.v0"})

    def execute(self, ctx: ExecContext, inputs: Sequence[StepResult]) -> StepResult:
        base, linked = inputs
        result = base
        times = linked.created + ("",) * (len(linked.layers) - len(linked.created))
        for lr, created in zip(linked.layers, times, strict=True):
            result = result.plus(lr, created)
        return result


def mark_plan(targets: Sequence[Vertex[StepResult]]) -> None:
    """Mark, on the ops reachable from ``targets``, what the plan's shape tells them:

    - a FileOp whose base no step mounts whole (``FileOp.sparse_base``): every step depending
      on it, and on what is made from it, only writes onto it (a FileOp taking it as its base,
      a MergeOp). A RUN, or a COPY --from reading it, unpacks the base anyway: a sparse copy
      before it would only add the reading of its headers;
    - a RUN that another RUN depends on (``ExecOp.runs_follow``): when it runs, the next
      one's sandbox launcher can start meanwhile."""
    dependents: dict[int, list[tuple[Vertex[StepResult], int]]] = {}
    order: list[Vertex[StepResult]] = []
    stack, seen = list(targets), set()
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        order.append(v)
        for i, inp in enumerate(v.inputs):
            dependents.setdefault(id(inp), []).append((v, i))
            stack.append(inp)
    for v in order:
        if isinstance(v.op, FileOp) and not v.op.action.link and v.inputs:
            v.op.sparse_base = _only_written_onto(v.inputs[0], dependents)
        elif isinstance(v.op, ExecOp):
            v.op.runs_follow = _a_run_depends_on(v, dependents)


def _a_run_depends_on(
    vertex: Vertex[StepResult], dependents: Mapping[int, list[tuple[Vertex[StepResult], int]]]
) -> bool:
    stack, seen = [vertex], {id(vertex)}
    while stack:
        for d, _ in dependents.get(id(stack.pop()), ()):
            if isinstance(d.op, ExecOp):
                return True
            if id(d) not in seen:
                seen.add(id(d))
                stack.append(d)
    return False


def _only_written_onto(
    base: Vertex[StepResult], dependents: Mapping[int, list[tuple[Vertex[StepResult], int]]]
) -> bool:
    stack, seen = [base], {id(base)}
    while stack:
        for d, i in dependents.get(id(stack.pop()), ()):
            onto = isinstance(d.op, MergeOp) or (
                isinstance(d.op, FileOp)
                and not d.op.action.link
                and i == 0
                and d.op.action.from_input != 0
            )
            if not onto:
                return False
            if id(d) not in seen:
                seen.add(id(d))
                stack.append(d)
    return True


def _open_archive(path: Path) -> BinaryIO | None:
    """An uncompressed tar stream if ``path`` is a (compressed) tar archive, else None."""
    import bz2
    import gzip
    import lzma
    import tarfile

    with open(path, "rb") as f:
        head = f.read(512)
    opener: Callable[[Path], Any]
    if head.startswith(b"\x1f\x8b"):
        opener = gzip.open
    elif head.startswith(b"BZh"):
        opener = bz2.open
    elif head.startswith(b"\xfd7zXZ\x00"):
        opener = lzma.open
    elif len(head) >= 262 and head[257:262] == b"ustar":
        return open(path, "rb")
    else:
        return None
    try:
        with opener(path) as probe:
            block = probe.read(512)
        if len(block) < 262 or block[257:262] != b"ustar":
            tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except Exception:
        return None
    stream: Any = opener(path)
    return stream  # type: ignore[no-any-return]


def _numeric_owner(owner: str) -> tuple[int, int] | None:
    """``UID[:GID]`` by number (no /etc/passwd needed), else None."""
    user, _, group = owner.partition(":")
    if user.isdigit() and (not group or group.isdigit()):
        return int(user), int(group) if group else int(user)
    return None


def _inline_name(name: str) -> str:
    """A heredoc's name as the copy's entry: Dockerfile text, never a host path."""
    return clean_path(name).lstrip("/") or "__unnamed__"


def _resolve_owner(rootfs: Path, owner: str) -> tuple[int, int]:
    """``--chown`` / WORKDIR owner resolved in the destination rootfs (names via its /etc/passwd, /etc/group)."""
    from mason.executor import resolve_user

    user, _, group = owner.partition(":")
    try:
        numeric = _numeric_owner(owner)
        if numeric is not None:
            return numeric
        resolved = resolve_user(rootfs, owner)
    except Exception as exc:
        raise BuildError(
            f"unable to convert uid/gid chown string to host mapping: {exc}",
            reference="chown-failed",
        ) from exc
    gid = resolved.gid
    if not group and user.isdigit():
        gid = int(user)
    return resolved.uid, gid
