"""`mason build`: the flags of `docker buildx build` (docs/architecture.md §1)."""

from __future__ import annotations

import argparse
import os
import sys

# start-up (issue 14): `build --help` and the early pings need neither typing nor pathlib
# nor json (mypy takes TYPE_CHECKING as true whatever its value)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

__all__ = ["register", "run_build"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "build",
        help="build an image from a Dockerfile",
        description="Build an image from a Dockerfile and a context directory.",
    )
    p.add_argument(
        "context",
        metavar="CONTEXT",
        help="build context directory, - for a context tar (or a Dockerfile) on stdin, a git URL "
        "(https://host/repo.git#ref:subdir, git@host:repo) or an http(s) URL of a context tar "
        "(or of a Dockerfile)",
    )
    p.add_argument(
        "-f", "--file", dest="file", metavar="PATH", help="Dockerfile (default: CONTEXT/Dockerfile)"
    )
    p.add_argument(
        "-t",
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="REF",
        help="image name (repeatable)",
    )
    p.add_argument(
        "--push", action="store_true", help="push the image (shorthand for --output type=registry)"
    )
    p.add_argument(
        "-o",
        "--output",
        dest="outputs",
        action="append",
        default=[],
        metavar="SPEC",
        help="type=image|registry|oci|docker|local|tar,... (repeatable)",
    )
    p.add_argument(
        "--cache-to",
        action="append",
        default=[],
        metavar="SPEC",
        help="type=registry|inline|local,... (repeatable)",
    )
    p.add_argument(
        "--cache-from",
        action="append",
        default=[],
        metavar="SPEC",
        help="type=registry|local,... or REF (repeatable)",
    )
    _add_step_flags(p)
    _add_output_flags(p)
    p.set_defaults(handler=run_build)


def _add_step_flags(p: argparse.ArgumentParser) -> None:
    """What the steps see: build args, target, cache use, secrets, the RUN sandbox."""
    p.add_argument("--build-arg", dest="build_args", action="append", default=[], metavar="K=V")
    p.add_argument("--label", dest="labels", action="append", default=[], metavar="K=V")
    p.add_argument(
        "--annotation",
        dest="annotations",
        action="append",
        default=[],
        metavar="[TYPE[PLATFORM]:]K=V",
        help="an annotation of the image manifest (TYPE manifest) or its descriptor "
        "(manifest-descriptor) (repeatable)",
    )
    p.add_argument("--target", metavar="STAGE")
    p.add_argument("--no-cache", action="store_true", help="do not use any cache")
    p.add_argument(
        "--no-cache-filter",
        action="append",
        default=[],
        metavar="STAGE",
        help="do not use the cache for the steps of these stages (repeatable, comma-separated)",
    )
    p.add_argument(
        "--build-context",
        dest="build_contexts",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a named context replacing a stage or image NAME: a local directory, "
        "docker-image://REF or oci-layout://DIR[:TAG][@DIGEST] (repeatable)",
    )
    p.add_argument(
        "--pull",
        action="store_true",
        help="resolve base images in their registry (mason always does: tags are never taken from "
        "a local copy)",
    )
    p.add_argument(
        "--secret", dest="secrets", action="append", default=[], metavar="id=ID,src=FILE"
    )
    p.add_argument(
        "--ssh",
        action="append",
        default=[],
        metavar="default|ID[=SOCKET|KEY[,KEY]]",
        help="an ssh agent for RUN --mount=type=ssh (repeatable)",
    )
    p.add_argument("--network", default="default", choices=("default", "none", "host"))
    p.add_argument(
        "--add-host",
        dest="add_hosts",
        action="append",
        default=[],
        metavar="HOST:IP",
        help="a line for /etc/hosts of every RUN (repeatable)",
    )
    p.add_argument("--shm-size", metavar="SIZE", help="size of /dev/shm in every RUN (default 64m)")
    p.add_argument(
        "--ulimit",
        dest="ulimits",
        action="append",
        default=[],
        metavar="NAME=SOFT[:HARD]",
        help="a resource limit of every RUN, e.g. nofile=1024:2048 (repeatable)",
    )


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    """How the build reports and what else it writes; mason's own choices."""
    p.add_argument(
        "--progress", default="auto", choices=("auto", "tty", "plain", "quiet", "rawjson")
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image digest")
    p.add_argument("--metadata-file", metavar="FILE")
    p.add_argument(
        "--iidfile", metavar="FILE", help="write the image ID (its config digest) to FILE"
    )
    p.add_argument(
        "--load",
        action="store_true",
        help="docker buildx's load into the Docker daemon: mason has none (says what to run instead)",
    )
    p.add_argument(
        "--platform",
        metavar="PLATFORM",
        action="append",
        default=[],
        help="target platforms, comma-separated or repeated (default: the host's); several "
        "make an image index",
    )
    p.add_argument(
        "--snapshotter",
        choices=("auto", "overlay", "copy"),
        default=None,
        help="filesystem snapshots: overlayfs, or plain copies where overlayfs is unavailable "
        "(default: $MASON_SNAPSHOTTER or auto)",
    )
    p.add_argument(
        "--runtime",
        choices=("auto", "runc", "chroot"),
        default="auto",
        help="RUN sandbox: runc, or the built-in unshare+chroot (default: auto)",
    )
    p.add_argument(
        "--allow",
        dest="allow",
        action="append",
        default=[],
        metavar="ENTITLEMENT",
        help="grant an entitlement: security.insecure (RUN --security=insecure), network.host",
    )
    p.add_argument(
        "--explain-cache",
        action="store_true",
        help="for every step that runs, say why it missed the cache (first differing input)",
    )
    p.add_argument(
        "--call",
        default="build",
        metavar="METHOD",
        help="build (default), or check: run only the build checks (exit 1 when any fails)",
    )
    p.add_argument(
        "--check",
        dest="call",
        action="store_const",
        const="check",
        help='shorthand for "--call=check"',
    )


def _kv(items: list[str], what: str, env: dict[str, str]) -> dict[str, str]:
    from mason.errors import UsageError

    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not k:
            raise UsageError(
                f"invalid {what} {item!r}: expected KEY=VALUE", reference="invalid-argument"
            )
        if not sep:
            # buildx: --build-arg NAME takes the value from the environment
            if k in env:
                out[k] = env[k]
            continue
        out[k] = v
    return out


def _snapshotter(flag: str | None, env: dict[str, str]) -> str:
    from mason.errors import UsageError

    value = flag or env.get("MASON_SNAPSHOTTER") or "auto"
    if value not in ("auto", "overlay", "copy"):
        raise UsageError(
            f"MASON_SNAPSHOTTER={value!r}: expected auto, overlay or copy",
            reference="invalid-argument",
        )
    return value


def run_build(args: argparse.Namespace) -> int:
    _preflight(args)
    mode = "quiet" if args.quiet else args.progress
    early = _early_pings(args) if args.call == "build" else None
    from mason.cli.rebuild import prepare_rebuild

    rebuild = prepare_rebuild(args, mode, args.context != "-" and not _may_be_remote(args.context))
    if rebuild is not None and (memo := rebuild.replay(early)) is not None:
        sys.stderr.write(memo["progress"])  # an unchanged rebuild (mason.engine.rebuilds)
        return _report_outcome(args, _Replayed(memo["image_digest"], memo["metadata"]), mode)
    from mason.cli.progress_render import make_renderer

    opts = _build_options(args)
    if args.call == "build":  # the first reads (caches, base images) while the engine imports
        from mason.cli.early_reads import start_reads

        early = start_reads(opts, early)
    if rebuild is None:
        renderer = make_renderer(mode, sys.stderr)
        if args.call == "check":
            return _run_check(opts, renderer)
        outcome = _build(opts, renderer, mode, early)
    else:
        outcome = _build_recorded(opts, mode, early, rebuild, args.tags)
    if isinstance(outcome, int):
        return outcome
    return _report_outcome(args, outcome, mode)


class _Replayed:
    """What ``_report_outcome`` reports of a memoised build."""

    def __init__(self, image_digest: str, metadata: dict[str, Any]) -> None:
        self.image_digest = image_digest
        self.metadata = metadata


def _build_recorded(opts: Any, mode: str, early: Any, rebuild: Any, names: list[str]) -> Any:
    """``_build`` with its progress text kept, and its memo recorded when it may answer the
    next identical build."""
    from mason.cli.progress_render import make_renderer
    from mason.cli.rebuild import Tee

    stderr = sys.stderr
    tee = Tee(stderr)
    sys.stderr = tee.as_stream()  # the check summary prints to sys.stderr
    try:
        outcome = _build(opts, make_renderer(mode, tee.as_stream()), mode, early)
    finally:
        sys.stderr = stderr
    if not isinstance(outcome, int):
        rebuild.record(outcome, tee.text(), names)
    return outcome


def _preflight(args: argparse.Namespace) -> None:
    """What buildx refuses before anything is read: the mode, --load, a stale --iidfile."""
    from mason.errors import UsageError

    if args.call not in ("build", "check"):
        raise UsageError(
            f"--call {args.call!r}: mason builds (build) or runs the build checks (check)",
            reference="invalid-argument",
            hint="use --call=build or --call=check (--check)",
        )
    if args.load:
        raise UsageError(
            "--load: mason has no daemon to load the image into",
            reference="load-unsupported",
            hint="pipe a docker archive into docker: mason build -o type=docker,dest=- … | docker load",
        )
    if args.iidfile:
        _remove_stale(
            args.iidfile, "--iidfile"
        )  # as buildx: a failed build leaves no old ID behind


def _build_options(args: argparse.Namespace) -> Any:
    """The command line as ``BuildOptions`` (every value parsed and checked, nothing built)."""
    from pathlib import Path

    from mason.cache.options import check_cache_exports, parse_cache_from, parse_cache_to
    from mason.engine.annotations import parse_annotation_flag
    from mason.engine.namedcontexts import parse_no_cache_filter
    from mason.engine.options import BuildOptions, parse_output, parse_secret
    from mason.engine.sshagent import parse_ssh
    from mason.errors import UsageError
    from mason.oci.platform import parse_platforms

    env = dict(os.environ)
    tags = tuple(args.tags)
    platforms = _platforms(args.platform, parse_platforms)
    cache_to = [c for text in args.cache_to for c in parse_cache_to(text, image_refs=tags)]
    check_cache_exports(cache_to)  # two --cache-to writing one place: exit 2 before building
    cache_from = [c for text in args.cache_from for c in parse_cache_from(text)]
    epoch_text = env.get("SOURCE_DATE_EPOCH")
    build_args = _kv(args.build_args, "--build-arg", env)
    epoch = None
    if "SOURCE_DATE_EPOCH" in build_args:
        epoch_text = build_args["SOURCE_DATE_EPOCH"]
    if epoch_text:
        try:
            epoch = int(epoch_text)
        except ValueError:
            raise UsageError(
                f"SOURCE_DATE_EPOCH={epoch_text!r} is not an integer", reference="invalid-epoch"
            ) from None
        build_args.setdefault("SOURCE_DATE_EPOCH", str(epoch))
    annotations = _checked_annotations(
        args, tuple(a for t in args.annotations for a in parse_annotation_flag(t)), platforms
    )
    context, stdin_dockerfile = _context(args, build_args)  # a remote one is fetched last
    return BuildOptions(
        context=context,
        dockerfile=Path(args.file) if args.file and args.file != "-" else None,
        dockerfile_text=sys.stdin.buffer.read() if args.file == "-" else stdin_dockerfile,
        tags=tags,
        push=args.push,
        outputs=tuple(parse_output(o) for o in args.outputs),
        cache_to=tuple(cache_to),
        cache_from=tuple(cache_from),
        build_args=build_args,
        target=args.target,
        no_cache=args.no_cache,
        no_cache_filter=parse_no_cache_filter(args.no_cache_filter),
        build_contexts=_build_contexts(args.build_contexts),
        secrets=tuple(parse_secret(s, env) for s in args.secrets),
        ssh=tuple(parse_ssh(s) for s in args.ssh),
        annotations=annotations,
        network=args.network,
        platforms=platforms,
        source_date_epoch=epoch,
        labels=_kv(args.labels, "--label", env),
        docker_config_dir=env.get("DOCKER_CONFIG"),
        registry_auth_file=env.get("REGISTRY_AUTH_FILE"),
        snapshotter=_snapshotter(args.snapshotter, env),
        runtime=args.runtime,
        explain_cache=args.explain_cache,
        allow=_allow(args.allow),
        **_sandbox_flags(args),
    )


def _early_pings(args: argparse.Namespace) -> Any:
    """Ping the registries the command line names (``--cache-from``/``--cache-to`` refs, pushed
    tags and names) from background threads, before the engine and the HTTP client are imported
    (start-up, issue 14): the build's registry client takes their answers."""
    from mason.registry.early import ref_host, start_pings

    refs = [_spec_value(t, "ref", bare=True) for t in (*args.cache_from, *args.cache_to)]
    refs += args.tags if args.push else []
    refs += [_spec_value(o, "name") for o in args.outputs if "type=registry" in o]
    hosts = [h for h in (ref_host(r) for r in refs if r) if h]
    return start_pings(hosts) if hosts else None


def _spec_value(text: str, key: str, *, bare: bool = False) -> str | None:
    """``key``'s value in a simple ``k=v,...`` flag (``text`` itself for a bare REF when
    ``bare``); None for anything quoted or of a type that is not a registry."""
    if "=" not in text:
        return text if bare else None
    if '"' in text:
        return None
    items = dict(item.partition("=")[::2] for item in text.split(","))
    if items.get("type", "registry") != "registry":
        return None
    return items.get(key)


def _build(opts: Any, renderer: Any, mode: str, early: Any = None) -> Any:
    """Run the build with its progress; a failure is printed and becomes its exit status."""
    from mason.cli.state_cmd import resolve_root
    from mason.engine.builder import build
    from mason.errors import DiagnosticError, MasonError
    from mason.solver import SolveError

    checks = _CheckWarnings(renderer)
    try:
        outcome = build(
            opts, root=resolve_root(), progress=checks, stdout=sys.stdout.buffer, early=early
        )
    except MasonError as exc:
        renderer.close()
        checks.print_summary(mode)
        if isinstance(exc, SolveError) and not isinstance(exc.cause, MasonError):
            # a step raised what no layer translated: a bug, which main reports as one (exit 70,
            # MASON_DEBUG=1 for the traceback) instead of passing it off as a failed build
            exc.cause.add_note(f"in build step {exc.vertex.name}")
            raise exc.cause from None
        _print_error(exc)
        return exc.exit_code if isinstance(exc, DiagnosticError) or exc.exit_code else 1
    except BaseException:
        renderer.close()  # finish the progress output before main prints the error
        raise
    renderer.close()
    checks.print_summary(mode)
    return outcome


def _report_outcome(args: argparse.Namespace, outcome: Any, mode: str) -> int:
    """--metadata-file, --iidfile and the image digest, after a build that worked."""
    import json
    from pathlib import Path

    from mason.errors import DiagnosticError

    if args.metadata_file:
        try:
            Path(args.metadata_file).write_text(
                json.dumps(outcome.metadata, indent=2, sort_keys=True) + "\n"
            )
        except OSError as exc:
            _print_error(
                DiagnosticError(
                    f"cannot write --metadata-file {args.metadata_file}: {exc.strerror}",
                    reference="metadata-file",
                    hint="the image was built; give a writable path",
                )
            )
            return 1
    if args.iidfile and not _write_iidfile(args.iidfile, outcome.metadata):
        return 1
    if mode == "quiet":
        if outcome.image_digest:
            print(outcome.image_digest)
    elif outcome.image_digest:
        print(f"image {outcome.image_digest}", file=sys.stderr)
    return 0


def _build_contexts(values: list[str]) -> tuple[Any, ...]:
    """``--build-context`` values, checked (form, scheme, directory, an oci-layout's tag in its
    index.json) before anything is fetched."""
    from mason.engine.namedcontexts import parse_build_context

    return tuple(parse_build_context(v) for v in values)


def _platforms(values: list[str], parse: Any) -> tuple[Any, ...]:
    """``--platform`` values (an invalid one is a usage error naming it)."""
    from mason.errors import UsageError
    from mason.oci.platform import PlatformError

    try:
        platforms: tuple[Any, ...] = parse(values)
    except PlatformError as exc:
        raise UsageError(
            f"--platform: {exc.message}", reference="invalid-platform", hint=exc.hint
        ) from None
    os_names = sorted({p.os for p in platforms if p.os != "linux"})
    if os_names:
        raise UsageError(
            f"--platform: mason builds linux images only, not {', '.join(os_names)}",
            reference="platform-unsupported",
        )
    return platforms


def _checked_annotations(
    args: argparse.Namespace, annotations: tuple[Any, ...], platforms: tuple[Any, ...]
) -> tuple[Any, ...]:
    """``--annotation``s, checked with each output's own before anything is built: a level or
    platform the export cannot write is a usage error (``mason.engine.annotations``)."""
    from mason.engine.exporters import output_annotations
    from mason.engine.options import outputs_for, parse_output
    from mason.oci.platform import host_platform

    outputs = outputs_for(
        args.tags, args.push, [parse_output(o) for o in args.outputs], annotations
    )
    built = platforms or (host_platform(),)
    for out in outputs:
        if out.type in ("image", "oci", "docker"):
            for p in built:
                output_annotations(out, p, built)
    return annotations


def _allow(values: list[str]) -> tuple[str, ...]:
    """``--allow`` values (repeatable, or comma-separated as buildx takes them), checked."""
    from mason.engine.options import ENTITLEMENTS
    from mason.errors import UsageError

    out: list[str] = []
    for value in values:
        for name in (v.strip() for v in value.split(",")):
            if name not in ENTITLEMENTS:
                raise UsageError(
                    f"invalid --allow {value!r}: unknown entitlement {name!r}",
                    reference="invalid-allow",
                    hint="--allow takes " + ", ".join(ENTITLEMENTS),
                )
            out.append(name)
    return tuple(out)


def _sandbox_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``--add-host``, ``--shm-size``, ``--ulimit`` as BuildOptions fields (parsed only when given)."""
    if not (args.add_hosts or args.shm_size or args.ulimits):
        return {}
    from mason.engine.runflags import parse_add_host, parse_shm_size, parse_ulimit

    return {
        "add_hosts": tuple(parse_add_host(h) for h in args.add_hosts),
        "shm_size": parse_shm_size(args.shm_size) if args.shm_size else None,
        "ulimits": tuple(parse_ulimit(u) for u in args.ulimits),
    }


class _CheckWarnings:
    """Passes progress on and keeps the build checks' warnings for the summary at the end."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.warnings: list[str] = []

    def emit(self, event: Any) -> None:
        if event.extra.get("check"):
            self.warnings.append(event.text.removeprefix("WARN: "))
        self.sink.emit(event)

    def print_summary(self, mode: str) -> None:
        """buildx's summary after the progress (none in quiet or rawjson mode)."""
        if not self.warnings or mode in ("quiet", "rawjson"):
            return
        n = len(self.warnings)
        lines = [
            f"\n {'1 warning' if n == 1 else f'{n} warnings'} found (use --check for details):"
        ]
        lines += [f" - {w}" for w in self.warnings]
        print("\n".join(lines), file=sys.stderr)


def _run_check(opts: Any, renderer: Any) -> int:
    """``--check``: buildx's output on stdout; exit 1 when a rule fired (or failed the build), else 0."""
    from mason.cli.state_cmd import resolve_root
    from mason.dockerfile.checks import format_check_output
    from mason.engine.builder import check
    from mason.errors import BuildError, DiagnosticError, MasonError

    try:
        report, df = check(opts, root=resolve_root(), progress=renderer)
    except MasonError as exc:
        renderer.close()
        _print_error(exc)
        return exc.exit_code if isinstance(exc, DiagnosticError) or exc.exit_code else 1
    renderer.close()
    sys.stdout.write(format_check_output(report, df))
    sys.stdout.flush()
    if report.error_message:
        _print_error(BuildError(report.error_message, reference="build-checks"))
    return 1 if report.warnings else 0


def _context(args: argparse.Namespace, build_args: dict[str, str]) -> tuple[Path, bytes | None]:
    """The context directory, and the Dockerfile when ``-`` or a URL brought one with it."""
    from pathlib import Path

    if args.context != "-":
        if not _may_be_remote(args.context):
            return Path(args.context), None
        from mason.cli.remote_context import remote_context

        remote = remote_context(args.context, args.file, build_args)
        return remote or (Path(args.context), None)
    from mason.cli.stdin_context import read_stdin_context

    return read_stdin_context(args.file)


def _may_be_remote(context: str) -> bool:
    """False when ``context`` is certainly a local path: a URL (``mason.cli.remote_context``)
    has ``://``, is an scp-like git address (``user@host:path``) or starts with ``github.com/``.
    A local context then needs no git nor download code."""
    return "://" in context or "@" in context or context.startswith("github.com/")


def _remove_stale(path: str, flag: str) -> None:
    from mason.errors import UsageError

    try:
        if os.path.isfile(path) or os.path.islink(path):
            os.unlink(path)
    except OSError as exc:
        raise UsageError(
            f"{flag} {path}: cannot remove the old file: {exc.strerror}",
            reference="invalid-argument",
        ) from None


def _write_iidfile(path: str, metadata: dict[str, Any]) -> bool:
    """The image ID as buildx writes it: the config digest, else the manifest's (an empty file
    when the build made no image, as buildx leaves it)."""
    from pathlib import Path

    from mason.errors import DiagnosticError

    image_id = (
        metadata.get("containerimage.config.digest") or metadata.get("containerimage.digest") or ""
    )
    try:
        Path(path).write_text(str(image_id))
    except OSError as exc:
        _print_error(
            DiagnosticError(
                f"cannot write --iidfile {path}: {exc.strerror}",
                reference="iidfile",
                hint="the image was built; give a writable path",
            )
        )
        return False
    return True


def _print_error(exc: Exception) -> None:
    from mason.cli._format import error_lines

    print("\n".join(error_lines(exc)), file=sys.stderr)
