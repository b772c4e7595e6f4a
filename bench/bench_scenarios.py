"""Build shapes, fifteen per set, each through ``bench_cache.py``'s five phases, mason vs
BuildKit v0.32.2.

Run: BUILDKITD=... BUILDCTL=... .venv/bin/python bench/bench_scenarios.py [--repeat 1]
     [--set core|more|all] [--only NAME ...] [--src OTHER/src]

Issue 14 asks mason to be ahead of BuildKit on every build, not on average: every phase's
total over many scenarios at most 0.8x BuildKit's, and no scenario above 1.2x. This bench
generates small-to-medium builds of different shapes on the busybox base (each a
``Dockerfile`` starting ``ARG BASE`` / ``FROM ${BASE}`` and its context, written here so the
repository holds no data for them), runs each through the phases of ``bench_cache.py``
(``cold+export``, ``warm push``, ``warm oci``, ``re-export``, ``1-file change``; a fresh CNCF
registry per scenario and builder, every phase on an empty builder) and prints, per scenario,
mason's and BuildKit's wall seconds and their ratio, then the totals per phase and how many
scenario-phases are above 1.2x. Without BuildKit binaries only mason's times are printed.
Medians over ``--repeat``; not a test.

Two sets: ``core`` (the default), the shapes mason's start-up and small-build work was measured
on, and ``more``, fifteen shapes written afterwards and not tuned against (twelve RUNs, a bind
mount, ``COPY --from`` a stage of the base, 15 MB of text, a RUN writing 1,500 files, a deep
1,200-file context, labels and ENV, whiteouts, four stages fanned in, tmpfs and shared cache
mounts, USER and WORKDIR, eight ``COPY --link``, ``COPY --exclude``, SHELL and exec form, an
ignored ``node_modules``): the check of issue 14 is on builds nobody tuned for.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from bench.bench_cache import SCENARIOS as PHASES  # noqa: E402
from bench.bench_cache import Samples, _changed_context, run_rep  # noqa: E402
from bench.peers import buildkit_binaries  # noqa: E402

__all__ = ["ALL_SCENARIOS", "MORE_SCENARIOS", "SCENARIOS", "main", "scenario_context"]

_FROM = "ARG BASE\nFROM ${BASE}\n"


def _files(ctx: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _run_steps(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    runs = "".join(f"RUN echo step{i} > /s{i}\n" for i in range(6))
    return _FROM + runs + "COPY a.txt /a.txt\n"


def _multistage(ctx: Path) -> str:
    _files(ctx, {"src/main.sh": "echo main\n", "src/lib.sh": "echo lib\n"})
    return (
        _FROM.replace("FROM ${BASE}", "FROM ${BASE} AS build")
        + "COPY src /src\nRUN cat /src/*.sh > /app.sh\n"
        + 'FROM ${BASE}\nCOPY --from=build /app.sh /usr/local/bin/app.sh\nCMD ["sh", "/usr/local/bin/app.sh"]\n'
    )


def _metadata(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        _FROM
        + 'ARG VERSION=1.2.3\nENV APP_HOME=/srv/app PATH=/srv/app/bin:$PATH\nLABEL org.example.version="$VERSION"\n'
        + 'WORKDIR $APP_HOME\nUSER 1000:1000\nEXPOSE 8080\nCOPY a.txt .\nENTRYPOINT ["sh"]\n'
    )


def _many_files(ctx: Path) -> str:
    _files(ctx, {f"data/f{i:04d}.txt": f"file {i}\n" * 20 for i in range(500)})
    _files(ctx, {"a.txt": "a\n"})
    return _FROM + "COPY data /data\nCOPY a.txt /a.txt\n"


def _big_file(ctx: Path) -> str:
    _files(ctx, {"blob.bin": os.urandom(20 * 1024 * 1024), "a.txt": "a\n"})
    return _FROM + "COPY blob.bin /blob.bin\nCOPY a.txt /a.txt\n"


def _heredoc(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        "# syntax=docker/dockerfile:1\n"
        + _FROM
        + "RUN <<EOF\nmkdir -p /etc/app\necho configured > /etc/app/conf\nEOF\n"
        + "COPY <<EOF /etc/app/extra\nextra=1\nEOF\nCOPY a.txt /a.txt\n"
    )


def _cache_mount(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        _FROM
        + "RUN --mount=type=cache,target=/cache echo hit >> /cache/log && cp /cache/log /log\n"
        + "COPY a.txt /a.txt\n"
    )


def _link(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n", "b/b1.txt": "b1\n", "b/b2.txt": "b2\n"})
    return _FROM + "COPY --link b /b\nRUN ls /b > /b.list\nCOPY --link a.txt /a.txt\n"


def _dockerignore(ctx: Path) -> str:
    _files(
        ctx,
        {
            "a.txt": "a\n",
            "keep/k.txt": "k\n",
            "skip/s.txt": "s\n",
            ".dockerignore": "skip\n*.log\n",
        },
    )
    _files(ctx, {"noise.log": "log\n"})
    return _FROM + "COPY . /ctx\n"


def _add_tar(ctx: Path) -> str:
    payload = ctx / "payload"
    _files(payload, {f"p{i}.txt": f"p{i}\n" for i in range(20)})
    with tarfile.open(ctx / "payload.tar.gz", "w:gz") as tf:
        tf.add(payload, arcname="payload")
    for f in payload.iterdir():
        f.unlink()
    payload.rmdir()
    _files(ctx, {"a.txt": "a\n"})
    return _FROM + "ADD payload.tar.gz /opt/\nCOPY a.txt /a.txt\n"


def _chown_chmod(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n", "bin/tool": "#!/bin/sh\necho tool\n"})
    return (
        _FROM
        + "COPY --chown=1000:1000 --chmod=0755 bin/tool /usr/local/bin/tool\n"
        + "COPY --chown=1000:1000 a.txt /home/a.txt\n"
    )


def _three_stages(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n", "b.txt": "b\n"})
    return (
        _FROM.replace("FROM ${BASE}", "FROM ${BASE} AS one")
        + "RUN echo one > /one\n"
        + "FROM ${BASE} AS two\nCOPY b.txt /b.txt\nRUN cat /b.txt > /two\n"
        + "FROM ${BASE}\nCOPY --from=one /one /one\nCOPY --from=two /two /two\nCOPY a.txt /a.txt\n"
    )


def _run_writes(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        _FROM
        + "RUN mkdir -p /data && for i in $(seq 1 200); do echo $i > /data/f$i; done\n"
        + "RUN dd if=/dev/zero of=/zero bs=1024 count=4096 2>/dev/null\nCOPY a.txt /a.txt\n"
    )


def _wildcards(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n", "conf/x.conf": "x\n", "conf/y.conf": "y\n", "conf/z.txt": "z\n"})
    return _FROM + "COPY conf/*.conf /etc/conf/\nCOPY *.txt /txt/\n"


def _env_run(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        _FROM
        + 'ARG GREETING=hello\nENV NAME=mason\nRUN echo "$GREETING $NAME" > /greeting\n'
        + "WORKDIR /work\nRUN pwd > /pwd\nCOPY a.txt .\n"
    )


# -- the second set: fifteen more shapes, written after the first fifteen were tuned against --


def _many_runs(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return _FROM + "".join(f"RUN echo {i} > /r{i}\n" for i in range(12)) + "COPY a.txt /a.txt\n"


def _bind_mount(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n", "src/x.sh": "echo x\n", "src/y.sh": "echo y\n"})
    return (
        _FROM
        + "RUN --mount=type=bind,source=src,target=/src cat /src/*.sh > /all.sh\n"
        + "COPY a.txt /a.txt\n"
    )


def _copy_from_image(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        "ARG BASE\nFROM ${BASE} AS img\nFROM ${BASE}\n"
        + "COPY --from=img /bin/busybox /opt/bb\nCOPY a.txt /a.txt\n"
    )


def _big_text(ctx: Path) -> str:
    words = [f"w{i}" for i in range(5000)]
    rnd = random.Random(1)  # the same ~15 MB of compressible text in every run
    text = " ".join(rnd.choice(words) for _ in range(3_000_000))
    _files(ctx, {"data.txt": text, "a.txt": "a\n"})
    return _FROM + "COPY data.txt /data.txt\nCOPY a.txt /a.txt\n"


def _run_many_files(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        _FROM
        + "RUN mkdir /d && cd /d && for i in $(seq 1 1500); do echo $i > f$i; done\n"
        + "COPY a.txt /a.txt\n"
    )


def _deep_context(ctx: Path) -> str:
    _files(ctx, {f"t/{i % 5}/{i % 7}/{i % 11}/f{i}.txt": f"{i}\n" for i in range(1200)})
    _files(ctx, {"a.txt": "a\n"})
    return _FROM + "COPY t /t\nCOPY a.txt /a.txt\n"


def _labels_env(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        _FROM
        + "".join(f"LABEL l{i}=v{i}\nENV E{i}=v{i}\n" for i in range(15))
        + 'HEALTHCHECK CMD ["true"]\nSTOPSIGNAL SIGTERM\nVOLUME /data\nCOPY a.txt /a.txt\n'
    )


def _whiteouts(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        _FROM
        + "RUN rm -rf /usr /bin/ls /bin/cat && mkdir /gone\nRUN rmdir /gone\n"
        + "COPY a.txt /a.txt\n"
    )


def _fan_in(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    stages = "".join(f"FROM ${{BASE}} AS s{i}\nRUN echo {i} > /o{i}\n" for i in range(4))
    copies = "".join(f"COPY --from=s{i} /o{i} /o{i}\n" for i in range(4))
    return "ARG BASE\n" + stages + "FROM ${BASE}\n" + copies + "COPY a.txt /a.txt\n"


def _tmpfs_and_cache(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        _FROM
        + "RUN --mount=type=tmpfs,target=/tmp echo t > /tmp/x && cat /tmp/x > /t\n"
        + "RUN --mount=type=cache,target=/c,id=shared,sharing=locked ls /c > /c.list\n"
        + "COPY a.txt /a.txt\n"
    )


def _user_workdir(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n", "b.txt": "b\n"})
    return (
        _FROM
        + "RUN echo app:x:1000:1000::/home/app:/bin/sh >> /etc/passwd && mkdir -p /home/app"
        + " && chown 1000 /home/app\n"
        + "USER app\nWORKDIR /home/app/w\nCOPY --chown=app a.txt .\nRUN cat a.txt > copy.txt\n"
        + "COPY b.txt .\n"
    )


def _many_links(ctx: Path) -> str:
    _files(ctx, {f"d{i}/f.txt": f"{i}\n" for i in range(8)})
    _files(ctx, {"a.txt": "a\n"})
    return _FROM + "".join(f"COPY --link d{i} /d{i}\n" for i in range(8)) + "COPY a.txt /a.txt\n"


def _exclude(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    _files(ctx, {f"s/{i}.{ext}": f"{i}\n" for i in range(30) for ext in ("py", "pyc")})
    return (
        "# syntax=docker/dockerfile:1.7\n"
        + _FROM
        + "COPY --exclude=*.pyc s /s\nCOPY a.txt /a.txt\n"
    )


def _shell_exec(ctx: Path) -> str:
    _files(ctx, {"a.txt": "a\n"})
    return (
        _FROM
        + 'SHELL ["/bin/sh", "-c"]\nARG N=3\nRUN for i in $(seq 1 $N); do echo $i; done > /n\n'
        + 'RUN ["sh", "-c", "echo exec > /e"]\nCOPY a.txt /a.txt\n'
    )


def _ignored_tree(ctx: Path) -> str:
    _files(ctx, {f"node_modules/m{i}/index.js": f"{i}\n" for i in range(800)})
    _files(ctx, {"a.txt": "a\n", "src/app.js": "x\n", ".dockerignore": "node_modules\n"})
    return _FROM + "COPY . /app\n"


#: name -> (writes the context and returns its Dockerfile, the file the 1-file phase changes)
SCENARIOS: dict[str, tuple[Callable[[Path], str], str]] = {
    "run-steps": (_run_steps, "a.txt"),
    "multistage": (_multistage, "src/lib.sh"),
    "metadata": (_metadata, "a.txt"),
    "many-files": (_many_files, "data/f0250.txt"),
    "big-file": (_big_file, "a.txt"),
    "heredoc": (_heredoc, "a.txt"),
    "cache-mount": (_cache_mount, "a.txt"),
    "link": (_link, "a.txt"),
    "dockerignore": (_dockerignore, "keep/k.txt"),
    "add-tar": (_add_tar, "a.txt"),
    "chown-chmod": (_chown_chmod, "bin/tool"),
    "three-stages": (_three_stages, "b.txt"),
    "run-writes": (_run_writes, "a.txt"),
    "wildcards": (_wildcards, "conf/y.conf"),
    "env-run": (_env_run, "a.txt"),
}

#: the second set (``--set more``), same form
MORE_SCENARIOS: dict[str, tuple[Callable[[Path], str], str]] = {
    "many-runs": (_many_runs, "a.txt"),
    "bind-mount": (_bind_mount, "src/x.sh"),
    "copy-from-image": (_copy_from_image, "a.txt"),
    "big-text": (_big_text, "a.txt"),
    "run-many-files": (_run_many_files, "a.txt"),
    "deep-context": (_deep_context, "t/0/0/0/f0.txt"),
    "labels-env": (_labels_env, "a.txt"),
    "whiteouts": (_whiteouts, "a.txt"),
    "fan-in": (_fan_in, "a.txt"),
    "tmpfs-cache": (_tmpfs_and_cache, "a.txt"),
    "user-workdir": (_user_workdir, "b.txt"),
    "many-links": (_many_links, "a.txt"),
    "exclude": (_exclude, "s/1.py"),
    "shell-exec": (_shell_exec, "a.txt"),
    "ignored-tree": (_ignored_tree, "src/app.js"),
}

#: both sets (their names differ)
ALL_SCENARIOS = {**SCENARIOS, **MORE_SCENARIOS}
_SETS = {"core": SCENARIOS, "more": MORE_SCENARIOS, "all": ALL_SCENARIOS}


def scenario_context(top: Path, name: str) -> tuple[Path, Path]:
    """The scenario's context and its copy with the change file changed."""
    write, change = ALL_SCENARIOS[name]
    ctx = top / "contexts" / name
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(write(ctx))
    return ctx, _changed_context(ctx, change, top / "changed" / name)


def _median(samples: Samples) -> float:
    return statistics.median(samples.seconds)


def _print(results: dict[str, dict[str, dict[str, Samples]]], tools: list[str], note: str) -> None:
    print(f"\n{len(results)} scenarios x {len(PHASES)} phases, wall seconds (median), {note}\n")
    head = f"{'scenario':<14} {'phase':<14}" + "".join(f" {t:>9}" for t in tools)
    print(head + (f" {'ratio':>6}" if "buildkit" in tools else ""))
    over = 0
    totals = {t: dict.fromkeys(PHASES, 0.0) for t in tools}
    for name, per_tool in results.items():
        for phase in PHASES:
            secs = {t: _median(per_tool[t][phase]) for t in tools}
            for t in tools:
                totals[t][phase] += secs[t]
            row = f"{name:<14} {phase:<14}" + "".join(f" {secs[t]:>9.2f}" for t in tools)
            if "buildkit" in tools:
                ratio = secs["mason"] / secs["buildkit"]
                over += ratio > 1.2
                row += f" {ratio:>6.2f}" + (" *" if ratio > 1.2 else "")
            print(row)
    print(f"\n{'phase total':<29}" + "".join(f" {t:>9}" for t in tools))
    for phase in PHASES:
        row = f"{phase:<29}" + "".join(f" {totals[t][phase]:>9.2f}" for t in tools)
        if "buildkit" in tools:
            row += f" {totals['mason'][phase] / totals['buildkit'][phase]:>6.2f}"
        print(row)
    if "buildkit" in tools:
        print(f"\nscenario-phases above 1.2x BuildKit (*): {over} of {len(results) * len(PHASES)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--set", choices=sorted(_SETS), default="core", dest="scenario_set")
    parser.add_argument("--only", nargs="*", choices=sorted(ALL_SCENARIOS), default=None)
    parser.add_argument("--src", type=Path, default=None, help="another checkout's src/")
    args = parser.parse_args(argv)
    tools = ["mason"] + (["buildkit"] if buildkit_binaries() else [])
    names = args.only or list(_SETS[args.scenario_set])
    results = {n: {t: {p: Samples() for p in PHASES} for t in tools} for n in names}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="mason-bench-scenarios-") as tmp:
        top = Path(tmp)
        for name in names:
            ctx, changed = scenario_context(top, name)
            for rep in range(args.repeat):
                for tool in tools:
                    work = top / f"{name}-{tool}-{rep}"
                    work.mkdir()
                    run_rep(tool, work, ctx, changed, results[name][tool], "-", args.src)
                    load.append(os.getloadavg()[0])
            print(f"{name} done", file=sys.stderr)
    _print(results, tools, f"1-min load {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
