"""mason.engine.llbplan: the LLB built from each golden case's Dockerfile is BuildKit's.

Every op equals llb.json's field by field, in definition order, and every vertex digest
equals its ``digestMapping`` (the context source's own digest includes the session id,
which llb.json leaves out, so the golden one is passed in). The keys computed from the
planned ops are those computed from llb.json. A few rules no golden case exercises are
checked directly.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.llb import golden

from mason.dockerfile import parse_dockerfile
from mason.dockerfile.stages import plan_build
from mason.engine.llbplan import BaseImage, LLBDefinition, go_clean, go_join, plan_llb
from mason.llb import pb

CASES = golden.CASES


@pytest.mark.parametrize("case", CASES)
def test_planned_ops_are_llb_json(case: str) -> None:
    m = golden.compare_planned(case)
    assert m.differences == []
    assert m.ops_equal == m.digests_equal == m.total


@pytest.mark.parametrize("case", golden.model_cases())
def test_planned_ops_give_the_same_keys(case: str) -> None:
    planned, read = golden.coverage(case, from_dockerfile=True), golden.coverage(case)
    assert planned.wrong == []
    assert planned.keys_reproduced == read.keys_reproduced
    assert planned.records_missing == read.records_missing


# --- rules beyond the golden cases ----------------------------------------------------------

_CONFIG: dict[str, Any] = {
    "config": {"Env": ["PATH=/bin", "A=1"]},
    "rootfs": {"diff_ids": ["sha256:" + "1" * 64]},
}


def _plan(text: str, **kw: Any) -> LLBDefinition:
    def resolve(ref: str, platform: pb.Platform) -> BaseImage:
        return BaseImage("sha256:" + "a" * 64, _CONFIG)

    plan = plan_build(parse_dockerfile(text.encode()), build_args=kw.pop("build_args", {}))
    return plan_llb(plan, resolve=resolve, platform="linux/amd64", **kw)


def _ops(d: LLBDefinition, kind: str) -> list[Any]:
    return [getattr(v.op, kind) for v in d.vertices if getattr(v.op, kind) is not None]


def test_go_paths() -> None:
    assert go_clean("//a/./b/../c/") == "/a/c"
    assert go_join("/", "", "x") == "/x"


def test_env_reset_moves_to_the_end_and_proxies_stay_out() -> None:
    d = _plan("FROM img\nENV B=2\nENV A=3\nRUN true\n", build_args={"HTTP_PROXY": "http://p"})
    (ex,) = _ops(d, "exec")
    assert ex.meta.env == ("PATH=/bin", "B=2", "A=3")
    assert ex.meta.proxy_env == pb.ProxyEnv(http_proxy="http://p")


def test_session_id_is_the_context_source_attribute() -> None:
    text = "FROM img\nCOPY a /a\n"
    plain, with_session = _plan(text), _plan(text, session_id="s1")
    assert plain.context is not None and with_session.context is not None
    assert with_session.context.op.source is not None
    assert with_session.context.op.source.attrs["local.session"] == "s1"
    assert plain.context.digest != with_session.context.digest
    assert not with_session.target.session_bound and plain.target.session_bound


def test_cache_mount_owner_makes_a_cache_directory() -> None:
    d = _plan("FROM img\nRUN --mount=type=cache,target=/c,uid=5,mode=0700 true\n")
    (fo,) = _ops(d, "file")
    mkdir = fo.actions[0].mkdir
    assert (mkdir.path, mkdir.mode, mkdir.owner.user.by_id) == ("/cache", 0o700, 5)
    (ex,) = _ops(d, "exec")
    cache = ex.mounts[1]
    assert (cache.selector, cache.cache_opt.id, cache.input) == ("/cache", "//c", 1)


def test_ssh_mounts_follow_secrets_and_set_ssh_auth_sock() -> None:
    """ExecOp.Marshal: ssh mounts after the secrets, the id as written (empty: the agent
    ``default``), mode 0600, optional unless required; SSH_AUTH_SOCK is the first one's."""
    d = _plan(
        "FROM img\nRUN --mount=type=ssh,id=gh,required --mount=type=secret,id=s"
        " --mount=type=ssh,target=/a.sock,uid=7 true\n"
    )
    (ex,) = _ops(d, "exec")
    assert [m.mount_type for m in ex.mounts] == [
        pb.MountType.BIND,
        pb.MountType.SECRET,
        pb.MountType.SSH,
        pb.MountType.SSH,
    ]
    gh, other = ex.mounts[2], ex.mounts[3]
    assert (gh.dest, gh.ssh_opt) == (
        "/run/buildkit/ssh_agent.0",
        pb.SSHOpt(id="gh", mode=0o600, optional=False),
    )
    assert (other.dest, other.ssh_opt) == ("/a.sock", pb.SSHOpt(uid=7, mode=0o600, optional=True))
    assert ex.meta.env[-1] == "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"


def test_shebang_heredoc_runs_from_dev_pipes() -> None:
    d = _plan("FROM img\nRUN <<EOT\n#!/bin/sh\necho hi\nEOT\n")
    (ex,) = _ops(d, "exec")
    assert ex.meta.args == ("/bin/sh", "-c", "/dev/pipes/EOT")
    pipes = ex.mounts[1]
    assert (pipes.dest, pipes.selector, pipes.readonly, pipes.output) == (
        "/dev/pipes/",
        "/",
        True,
        -1,
    )


def test_link_on_scratch_is_the_copy_itself_and_chmod_strings_pass() -> None:
    d = _plan("FROM scratch\nCOPY --link a /a\nCOPY --chmod=u+x b /b\n")
    assert _ops(d, "merge") == []
    copies = [fo.actions[0].copy for fo in _ops(d, "file")]
    assert copies[0].mode == -1 and copies[1].mode_str == "u+x"


def test_workdir_timestamp_follows_source_date_epoch() -> None:
    d = _plan("FROM img\nUSER app\nWORKDIR /w\n", build_args={"SOURCE_DATE_EPOCH": "7"})
    (fo,) = _ops(d, "file")
    mkdir = fo.actions[0].mkdir
    assert mkdir.timestamp == 7_000_000_000
    assert mkdir.owner.user.by_name == pb.NamedUserOpt(name="app", input=0)


def test_command_line_run_options_are_in_every_exec_op() -> None:
    from mason.engine.llbplan import RunDefaults
    from mason.llb.cachemap import op_cache_map

    def planned(ip: str, network: pb.NetMode = pb.NetMode.HOST) -> LLBDefinition:
        run = RunDefaults(
            network=network,
            extra_hosts=(pb.HostIP("db.local", ip),),
            ulimits=(pb.Ulimit("nofile", 1024, 2048),),
            shm_size=64 << 20,
        )
        return _plan("FROM img\nRUN a\nRUN --network=none b\n", run_defaults=run)

    d = planned("10.0.0.5")
    first, second = _ops(d, "exec")
    assert first.network == pb.NetMode.HOST and second.network == pb.NetMode.NONE
    assert first.meta.extra_hosts == (pb.HostIP("db.local", "10.0.0.5"),)
    assert first.meta.ulimit == (pb.Ulimit("nofile", 1024, 2048),)
    (shm,) = [m for m in first.mounts if m.dest == "/dev/shm"]
    assert shm.mount_type == pb.MountType.TMPFS and shm.tmpfs_opt == pb.TmpfsOpt(size=64 << 20)
    assert shm.input == pb.EMPTY and [m.dest for m in first.mounts] == ["/", "/dev/shm"]

    def cache_map(d: LLBDefinition) -> str:
        (v,) = [
            v for v in d.vertices if v.op.exec is not None and v.op.exec.network == pb.NetMode.HOST
        ]
        cm = op_cache_map(v.op, len(v.op.inputs), pb.Platform("linux", "amd64"))
        assert cm is not None
        return cm.digest

    # as BuildKit: the host's address is cleared from the key, the name and network are not
    assert cache_map(d) == cache_map(planned("10.9.9.9"))
    assert _ops(planned("10.0.0.5", pb.NetMode.UNSET), "exec")[0].network == pb.NetMode.UNSET
