"""Docker compatibility of the conversion and of the ops' pure parts: COPY --link's graph,
WORKDIR /, ADD with URLs, BuildKit's history texts, cache-mount sharing locks."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.support.engine_parts import run_true
from tests.unit.engine.convert_helpers import BASE_DIFF, _convert

from mason.digest import sha256_bytes
from mason.dockerfile import DockerfileError
from mason.engine.cachemounts import CacheMounts
from mason.engine.imageconfig import go_duration, go_healthcheck_text
from mason.engine.ops import ExecOp, FileOp, MergeOp, MountPlan, StepResult
from mason.engine.state import LayerRef, StateRoot
from mason.solver import compute_key


def _history(conv: Any) -> list[str]:
    return [h.created_by for h in conv.target.history if h.fixed is None]


def test_copy_link_is_a_base_free_copy_plus_a_merge(tmp_path: Path) -> None:
    """COPY --link: the copy vertex has no base input (its key cannot follow the base); a merge
    vertex named LINK puts its layer on the chain. With --chmod, v0.11 ignores --link."""
    conv = _convert(tmp_path, "FROM b\nCOPY --link a /a\n")
    merge = conv.target.vertex
    assert isinstance(merge.op, MergeOp) and merge.name.endswith("LINK COPY --link a /a")
    copy = merge.inputs[1]
    assert isinstance(copy.op, FileOp) and copy.inputs == () and copy.op.action.link
    staged = _convert(
        tmp_path, "FROM a AS s\nRUN x\nFROM b\nCOPY --link --from=s /o /o\n"
    ).target.vertex.inputs[1]
    assert len(staged.inputs) == 1 and staged.op.action.from_input == 0
    plain = _convert(tmp_path, "FROM b\nCOPY --link --chmod=644 a /a\n").target.vertex
    assert isinstance(plain.op, FileOp) and not plain.op.action.link


def test_merge_appends_the_linked_layers_with_their_times() -> None:
    base = StepResult((LayerRef(BASE_DIFF),), ("",))
    layer = LayerRef(sha256_bytes(b"linked"))
    merged = MergeOp().execute(None, [base, StepResult((layer,), ("t1",))])  # type: ignore[arg-type]
    assert merged.layers == (LayerRef(BASE_DIFF), layer) and merged.created == ("", "t1")
    assert compute_key(MergeOp().cache_map(()), (), None).digest  # keyed by its inputs only


def test_workdir_root_makes_no_layer(tmp_path: Path) -> None:
    conv = _convert(tmp_path, "FROM b\nWORKDIR /\nWORKDIR app\n")
    plans = [h for h in conv.target.history if h.fixed is None]
    assert [(h.created_by, h.empty_layer) for h in plans] == [
        ("WORKDIR /", True),
        ("WORKDIR /app", False),
    ]
    assert len(conv.target.layer_vertices) == 1


def test_add_with_several_urls_and_local_sources(tmp_path: Path) -> None:
    conv = _convert(tmp_path, "FROM b\nADD http://h/x.txt https://h/dir/ local.txt /d/\n")
    action = conv.target.vertex.op.action
    assert action.urls == ("http://h/x.txt", "https://h/dir/") and action.sources == ("local.txt",)


@pytest.mark.parametrize(
    "text",
    [
        "FROM b\nCOPY http://h/x /x\n",  # "source can't be a URL for COPY"
        "FROM b\nADD --checksum=sha256:" + "0" * 64 + " local.txt /x\n",  # checksum only for URLs
    ],
)
def test_url_rules_are_dockerfile_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(DockerfileError):
        _convert(tmp_path, text)


def test_history_texts_follow_buildkit(tmp_path: Path) -> None:
    text = (
        'FROM b\nARG A\nARG B=1\nSHELL ["/bin/bash", "-c"]\nCMD echo hi\nEXPOSE 90 80/udp 7000-7001\n'
        "HEALTHCHECK --interval=90s --retries=3 CMD true\nONBUILD RUN x\nRUN echo\n"
    )
    conv = _convert(tmp_path, text)
    hist = _history(conv)
    assert hist == [
        "ARG A",
        "ARG B=1",
        "SHELL [/bin/bash -c]",
        'CMD ["/bin/bash" "-c" "echo hi"]',
        "EXPOSE map[7000/tcp:{} 7001/tcp:{} 80/udp:{} 90/tcp:{}]",
        "HEALTHCHECK {Test:[CMD-SHELL true] Interval:1m30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}",
        "RUN |2 A= B=1 /bin/bash -c echo # buildkit",  # every declared ARG, unset ones empty
    ]
    cfg = conv.target.config.config
    assert cfg["ArgsEscaped"] is True and cfg["OnBuild"] == ["RUN x"]
    assert sorted(cfg["ExposedPorts"]) == ["7000/tcp", "7001/tcp", "80/udp", "90/tcp"]


def test_shebang_heredoc_runs_through_the_shell(tmp_path: Path) -> None:
    conv = _convert(tmp_path, "FROM b\nRUN <<EOT\n#!/bin/sh\necho hi\nEOT\n")
    op = conv.target.vertex.op
    assert op.args == ("/bin/sh", "-c", "/dev/pipes/EOT") and op.files == {
        "EOT": "#!/bin/sh\necho hi\n"
    }


def test_secret_id_defaults_to_the_target_basename(tmp_path: Path) -> None:
    conv = _convert(tmp_path, "FROM b\nRUN --mount=type=secret,target=/etc/tok cat /etc/tok\n")
    assert conv.target.vertex.op.mounts[0].secret_id == "tok"


def test_go_durations() -> None:
    assert [
        go_duration(n) for n in (0, 1_000_000, 1_500_000_000, 61_000_000_000, 7_200_000_000_000)
    ] == ["0s", "1ms", "1.5s", "1m1s", "2h0m0s"]
    assert (
        go_healthcheck_text(["NONE"], 0, 0, 0, 0, 0)
        == "{Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}"
    )
    assert (
        go_healthcheck_text(
            ["CMD-SHELL", "curl -f x || exit 1"], 30_000_000_000, 0, 0, 2_000_000_000, 3
        )
        == "{Test:[CMD-SHELL curl -f x || exit 1] Interval:30s Timeout:0s StartPeriod:0s StartInterval:2s Retries:3}"
    )


def _exec_op(tmp_path: Path) -> ExecOp:
    state = StateRoot(tmp_path)  # not opened: its directories and temp_dir only
    state.tmp.mkdir(exist_ok=True)
    env: Any = SimpleNamespace(state=state, cache_mounts=CacheMounts())
    return run_true(env)


def _mount(sharing: str) -> MountPlan:
    return MountPlan(type="cache", target="/c", cache_id="c", sharing=sharing, readonly=False)


def test_private_cache_mounts_get_a_fresh_directory_while_one_is_in_use(tmp_path: Path) -> None:
    op = _exec_op(tmp_path)
    with contextlib.ExitStack() as first, contextlib.ExitStack() as second:
        d1 = op._cache_dir(_mount("private"), first, None, None)
        (d1 / "f").write_text("x")
        d2 = op._cache_dir(_mount("private"), second, None, None)
        assert d1 != d2 and not any(d2.iterdir())
    with contextlib.ExitStack() as third:
        assert op._cache_dir(_mount("private"), third, None, None) == d1  # free again: reused


@pytest.mark.skipif(shutil.which("flock") is None, reason="util-linux flock is not installed")
def test_locked_cache_mount_excludes_other_processes_and_threads(tmp_path: Path) -> None:
    op = _exec_op(tmp_path)
    with contextlib.ExitStack() as held:
        d = op._cache_dir(_mount("locked"), held, None, None)
        lock_file = tmp_path / "cachemount-locks" / d.name
        # another process cannot take the lock while this RUN holds it
        assert subprocess.run(["flock", "-n", str(lock_file), "true"]).returncode != 0
        got = threading.Event()

        def other() -> None:
            with contextlib.ExitStack() as stack:
                op._cache_dir(_mount("locked"), stack, None, None)
                got.set()

        t = threading.Thread(target=other)
        t.start()
        assert not got.wait(0.2)  # a second locked user in this process waits too
    t.join(5)
    assert got.is_set()
    assert subprocess.run(["flock", "-n", str(lock_file), "true"]).returncode == 0


def test_cache_seeded_from_a_stage_starts_as_its_copy(tmp_path: Path) -> None:
    op = _exec_op(tmp_path)
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "s.txt").write_text("seed")
    chain = StepResult((LayerRef(BASE_DIFF),))
    with contextlib.ExitStack() as stack:
        d = op._cache_dir(_mount("shared"), stack, seed, chain)
        plain = op._cache_dir(_mount("shared"), stack, None, None)
    assert (d / "s.txt").read_text() == "seed" and d != plain
