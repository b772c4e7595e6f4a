"""Build checks through the CLI: a build prints BuildKit's ``#N WARN:`` lines and buildx's summary,
``--check`` (``--call=check``) runs only the checks with buildx's output and exit codes, ``# check=``
and ``BUILDKIT_DOCKERFILE_CHECK`` configure them, ``error=true`` fails the build before anything runs;
a base image from the registry gives UndefinedVar its environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.cli import mason
from tests.support.registry_server import RegistryServer


def _mason(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    return mason(root, *args)


def _context(tmp_path: Path, dockerfile: str, **files: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (ctx / name.replace("_", ".", 1) if name.startswith("_") else ctx / name).write_text(text)
    return ctx


BAD = "FROM scratch AS Build\nCMD echo hi\nENV A 1\n"
CLEAN = 'FROM scratch AS build\nCMD ["echo", "hi"]\nENV A=1\n'


def test_check_exit_codes_and_buildx_output(tmp_path: Path) -> None:
    ctx = _context(tmp_path, BAD)
    for flag in (["--check"], ["--call=check"], ["--call", "check"]):
        res = _mason(["build", "--progress=plain", *flag, str(ctx)], tmp_path / "root")
        assert res.returncode == 1, res.stderr
        assert res.stdout.startswith(
            "Check complete, 3 warnings have been found!\n\nWARNING: StageNameCasing - "
            "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/\n"
            "Stage name 'Build' should be lowercase\nDockerfile:1\n"
        ), res.stdout
        assert " 2 | >>> CMD echo hi" in res.stdout
        assert "WARNING: LegacyKeyValueFormat" in res.stdout
    ctx = _context(tmp_path, CLEAN)
    res = _mason(["build", "--check", str(ctx)], tmp_path / "root")
    assert (res.returncode, res.stdout) == (0, "Check complete, no warnings found.\n"), res.stderr
    res = _mason(["build", "--call=outline", str(ctx)], tmp_path / "root")
    assert res.returncode == 2 and "--call 'outline'" in res.stderr


def test_check_skip_directive_and_build_arg(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "# check=skip=StageNameCasing,LegacyKeyValueFormat\n" + BAD)
    res = _mason(["build", "--check", str(ctx)], tmp_path / "root")
    assert res.returncode == 1
    assert res.stdout.startswith(
        "Check complete, 1 warning has been found!\n\nWARNING: JSONArgsRecommended"
    )
    ctx = _context(tmp_path, "# check=skip=all\n" + BAD)
    assert _mason(["build", "--check", str(ctx)], tmp_path / "root").returncode == 0
    # the build arg replaces the directive
    res = _mason(
        [
            "build",
            "--check",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=JSONArgsRecommended",
            str(ctx),
        ],
        tmp_path / "root",
    )
    assert res.stdout.startswith("Check complete, 2 warnings have been found!"), res.stdout
    res = _mason(
        ["build", "--check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all", str(ctx)],
        tmp_path / "root",
    )
    assert res.returncode == 0
    res = _mason(
        ["build", "--check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=bogus", str(ctx)],
        tmp_path / "root",
    )
    assert (
        res.returncode == 2
        and "failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: invalid check option"
        in res.stderr
    )


def test_build_prints_warnings_and_builds(tmp_path: Path) -> None:
    ctx = _context(tmp_path, BAD)
    res = _mason(
        ["build", "--progress=plain", "-o", f"type=local,dest={tmp_path / 'out'}", str(ctx)],
        tmp_path / "root",
    )
    assert res.returncode == 0, res.stderr
    assert (
        "#1 WARN: StageNameCasing: Stage name 'Build' should be lowercase (line 1)\n" in res.stderr
    )
    assert (
        "#1 WARN: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior "
        "related to OS signals (line 2)\n"
    ) in res.stderr
    assert "\n 3 warnings found" in res.stderr
    assert (
        ' - LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" format '
        "(line 3)" in res.stderr
    )
    res = _mason(["build", "--progress=plain", str(_context(tmp_path, CLEAN))], tmp_path / "root")
    assert res.returncode == 0 and "WARN:" not in res.stderr and "warning found" not in res.stderr


def test_error_mode_fails_the_build_before_anything_runs(tmp_path: Path) -> None:
    ctx = _context(
        tmp_path, "# check=error=true\nFROM scratch\nCOPY --link a /a\nCMD echo hi\n", a="x"
    )
    res = _mason(
        ["build", "--progress=plain", "-o", f"type=local,dest={tmp_path / 'out'}", str(ctx)],
        tmp_path / "root",
    )
    assert res.returncode == 1, res.stderr
    assert "ERROR: lint violation found for rules: JSONArgsRecommended" in res.stderr
    assert "COPY" not in res.stderr and not (tmp_path / "out").exists()
    res = _mason(
        [
            "build",
            "--progress=plain",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=error=false",
            "-o",
            f"type=local,dest={tmp_path / 'out'}",
            str(ctx),
        ],
        tmp_path / "root",
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "a").read_text() == "x"
    # error mode with nothing to report builds
    ctx = _context(tmp_path, '# check=error=true\nFROM scratch\nCMD ["x"]\n')
    assert _mason(["build", str(ctx)], tmp_path / "root").returncode == 0


def test_copy_ignored_file_and_base_image_env(
    registry: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    ctx = _context(
        tmp_path,
        f"FROM {busybox_image}\nCOPY notes.txt /n\nWORKDIR /w$PATH$NOPE\n",
        **{"notes.txt": "n", "_dockerignore": "*.txt\n"},
    )
    res = _mason(["build", "--check", str(ctx)], tmp_path / "root")
    assert res.returncode == 1, res.stderr
    assert (
        'Attempting to Copy file "notes.txt" that is excluded by .dockerignore\nDockerfile:2\n'
        in res.stdout
    ), res.stdout
    assert "Usage of undefined variable '$NOPE'" in res.stdout
    assert "'$PATH'" not in res.stdout  # the image config defines it
