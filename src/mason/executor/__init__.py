"""mason.executor: run one process in a sandbox on a prepared rootfs.

The builder decides *what* to run; this package only runs it, isolated.

Public API
----------
Data (mason.executor.types):

- ``ExecSpec(rootfs, args, env=(), cwd="/", user="", hostname="mason",
  network="default", mounts=())``: frozen. ``rootfs`` is an already mounted,
  writable directory. ``user`` is a Dockerfile USER value ("", "name", "uid",
  "name:group", "uid:gid") resolved against the rootfs' /etc/passwd and
  /etc/group like Docker (unknown names fail with ``UserResolutionError``,
  numeric ids may be absent; supplementary groups only without an explicit
  group). ``cwd`` is created when missing, owned by the user. HOME is added
  from /etc/passwd when ``env`` has none. ``network``: "default" and "host"
  share the host's network namespace, "none" gets a new one with loopback up.
  stdin is always empty; /etc/hosts (localhost + hostname) and the host's
  /etc/resolv.conf are bound in as per-run copies.
- Mounts: ``BindMount(source, target, readonly=False)``,
  ``TmpfsMount(target, size=None)``, ``CacheMount(source, target,
  readonly=False)`` (a persistent host directory, bound read-write),
  ``SecretMount(source, target)`` (a host file outside the rootfs, bound
  read-only, nosuid/nodev/noexec). Mountpoints that had to be created in the
  rootfs are removed after the run, so neither a secret's path nor an empty
  mountpoint lands in a layer.
- ``ExitStatus(code, signal=None, last_lines=(), error=None)``: ``code`` is
  shell style (128+N for signal N, then ``signal`` is N); ``error`` is the
  runtime's message when the command could not even start (e.g. not found);
  ``ok``; ``describe()``.
- ``Executor`` protocol: ``run(spec, on_output, *, cancel=None, timeout=None)
  -> ExitStatus``. ``on_output(bytes)`` receives stdout and stderr merged, as
  they arrive (with runc, which copies the two streams separately, only the
  order within each stream is guaranteed). Setting the ``threading.Event`` ``cancel``, passing
  ``timeout`` seconds, a KeyboardInterrupt or an exception from
  ``on_output`` kills the sandbox and removes it before ``run`` raises
  (``ExecCancelledError`` / ``ExecTimeoutError`` carry the last output lines
  as context; the others propagate).
- Errors: ``ExecutorError`` (a DiagnosticError) and its subclasses
  ``UserResolutionError``, ``ExecCancelledError``, ``ExecTimeoutError``.

Executors:

- ``RuncExecutor(*, runc="runc", state_dir=Path("/run/mason/runc"),
  work_dir=None, host_resolv_conf=Path("/etc/resolv.conf"), no_pivot=False)``:
  writes an OCI bundle (config.json from ``build_runtime_config``) and runs
  ``runc --root STATE run --bundle DIR mason-<random>``; always ends with
  ``runc delete --force``. ``list_containers()`` lists runc's state dir.
- ``ChrootExecutor(*, unshare="unshare", python=sys.executable, work_dir=None,
  host_resolv_conf=...)``: the fallback without runc: ``unshare`` mount, pid,
  uts, ipc (and net for "none") namespaces + chroot, same ExecSpec semantics;
  no cgroups, masked paths or seccomp.
- ``choose_executor(*, state_dir, work_dir, runc="runc", host_resolv_conf,
  on_the_way=False)``: runc when it is on PATH and ``probe_runc`` shows it can
  create a container, else the chroot executor; ``on_the_way``: an
  ``AutoExecutor``, which runs the first RUN with runc and probes only when
  runc could not start it (``mason build --runtime auto``).

Lifetime: a sandbox never outlives the mason process that started it.
Every launcher (runc, unshare) runs under a guard (``_guard.py``) that holds
the read end of a lifeline pipe whose only write end is mason's: when mason
dies, however and from whichever thread it ran the step, the guard SIGKILLs
the launcher (which also has PR_SET_PDEATHSIG(SIGKILL) on the guard) and, for
runc, whose container init survives ``runc run``, runs ``runc kill`` and
``runc delete --force``. The chroot tree dies with unshare (``--kill-child``
and the pid namespace). Each runc bundle holds ``owner.lock``, flock'ed by
its mason process; ``reap_orphans(*, runc="runc", state_dir) -> list[str]``
(run by ``RuncExecutor`` before its first run and by the builder at start)
removes the containers whose owner lock is free (guard killed too), and never
a live process's container, whichever root it builds on.

Helpers: ``build_runtime_config(spec, user, env, *, hosts_file, resolv_file,
nofile)`` -> dict (pure), ``resolve_user(rootfs, user)`` -> ``ResolvedUser(uid,
gid, additional_gids, home, name)``, ``secure_join(root, path)`` (symlinks
resolved as if ``root`` were ``/``), ``DEFAULT_CAPABILITIES``,
``MASKED_PATHS``, ``READONLY_PATHS``.
"""

from mason.executor.choose import AutoExecutor, choose_executor, probe_runc
from mason.executor.chroot import ChrootExecutor
from mason.executor.orphans import reap_orphans
from mason.executor.rootfs import secure_join
from mason.executor.runc import RuncExecutor
from mason.executor.runtime_spec import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    READONLY_PATHS,
    build_runtime_config,
)
from mason.executor.types import (
    BindMount,
    CacheMount,
    ExecCancelledError,
    ExecSpec,
    ExecTimeoutError,
    Executor,
    ExecutorError,
    ExitStatus,
    Mount,
    NetworkMode,
    OutputCallback,
    SecretMount,
    TmpfsMount,
    Ulimit,
    UserResolutionError,
)
from mason.executor.users import ResolvedUser, resolve_user

__all__ = [
    "DEFAULT_CAPABILITIES",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "AutoExecutor",
    "BindMount",
    "CacheMount",
    "ChrootExecutor",
    "ExecCancelledError",
    "ExecSpec",
    "ExecTimeoutError",
    "Executor",
    "ExecutorError",
    "ExitStatus",
    "Mount",
    "NetworkMode",
    "OutputCallback",
    "ResolvedUser",
    "RuncExecutor",
    "SecretMount",
    "TmpfsMount",
    "Ulimit",
    "UserResolutionError",
    "build_runtime_config",
    "choose_executor",
    "probe_runc",
    "reap_orphans",
    "resolve_user",
    "secure_join",
]
