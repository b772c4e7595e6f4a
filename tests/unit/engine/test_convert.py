"""Dockerfile -> graph: vertex names, what makes a layer, image config and history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.unit.engine.convert_helpers import BASE_DIFF, _convert, _resolver

from mason.digest import Digest, sha256_bytes
from mason.dockerfile import parse_dockerfile
from mason.dockerfile.stages import plan_build
from mason.engine.context import DockerIgnore
from mason.engine.convert import convert_plan, final_config
from mason.engine.ops import BuildEnv, StepResult
from mason.engine.state import LayerRef
from mason.solver import compute_key


def _chain(vertex: Any) -> list[str]:
    names = []
    while vertex is not None:
        names.append(vertex.name)
        vertex = vertex.inputs[0] if vertex.inputs else None
    return names[::-1]


DOCKERFILE = """\
ARG BASE=reg.example/base:1
FROM ${BASE} AS build
WORKDIR /src
RUN make
FROM ${BASE}
ENV A=1
COPY --from=build /src/out /app/
CMD ["run"]
ENTRYPOINT ["/entry"]
"""


def test_stage_chains_and_names(tmp_path: Path) -> None:
    """Only RUN/COPY/ADD/WORKDIR make vertices, named [stage i/n] like BuildKit."""
    conv = _convert(tmp_path, DOCKERFILE)
    chain = _chain(conv.target.vertex)
    # one base image shared by two stages is one vertex, named after its first stage (BuildKit)
    assert chain[0] == f"[build 1/3] FROM reg.example/base:1@{sha256_bytes(b'reg.example/base:1')}"
    assert chain[1:] == ["[stage-1 2/2] COPY --from=build /src/out /app/"]
    copy = conv.target.vertex
    assert _chain(copy.inputs[1])[-2:] == ["[build 2/3] WORKDIR /src", "[build 3/3] RUN make"]


def test_unused_stage_is_not_converted(tmp_path: Path) -> None:
    """Stages the target does not need never become vertices."""
    conv = _convert(tmp_path, "FROM a AS unused\nRUN x\nFROM b\nRUN y\n")
    assert sorted(conv.stages) == [1]


def test_final_config_history_and_created_times(tmp_path: Path) -> None:
    """Layer steps take their result's time; config steps the image's; ENTRYPOINT after CMD keeps CMD."""
    conv = _convert(tmp_path, DOCKERFILE)
    top = LayerRef(sha256_bytes(b"l2"), sha256_bytes(b"b2"), 1, "")
    result = StepResult((LayerRef(BASE_DIFF), top), ("", "2024-01-02T03:04:05Z"))
    doc = final_config(conv.target, result, None)
    assert doc["rootfs"]["diff_ids"] == [BASE_DIFF, top.diff_id]
    assert doc["created"] == "2024-01-02T03:04:05Z"
    assert doc["config"]["Env"] == ["PATH=/bin", "A=1"]
    assert doc["config"]["Cmd"] == ["run"] and doc["config"]["Entrypoint"] == ["/entry"]
    by = [(h["created_by"], h.get("empty_layer", False)) for h in doc["history"]]
    assert by == [
        ("base", False),
        ("ENV A=1", True),
        ("COPY /src/out /app/ # buildkit", False),
        ('CMD ["run"]', True),
        ('ENTRYPOINT ["/entry"]', True),
    ]
    assert all(h["comment"] == "buildkit.dockerfile.v0" for h in doc["history"][1:])
    epoch_doc = final_config(conv.target, result, 0)
    assert {h["created"] for h in epoch_doc["history"]} == {"1970-01-01T00:00:00Z"}


def test_entrypoint_resets_inherited_cmd(tmp_path: Path) -> None:
    """ENTRYPOINT clears a CMD inherited from the base image (Docker's rule)."""
    conv = _convert(tmp_path, 'FROM b\nENTRYPOINT ["/e"]\n')
    doc = final_config(conv.target, StepResult((LayerRef(BASE_DIFF),), ("",)), None)
    assert "Cmd" not in doc["config"]


def test_keys_are_stable_and_sensitive(tmp_path: Path) -> None:
    """The same Dockerfile gives the same RUN key; a changed env changes it."""

    def run_key(text: str) -> Digest:
        conv = _convert(tmp_path, text)
        v = conv.target.vertex
        return compute_key(v.op.cache_map(()), ("sha256:" + "0" * 64,), None).digest  # type: ignore[arg-type]

    a = run_key("FROM b\nRUN echo hi\n")
    assert a == run_key("FROM b\nRUN echo hi\n")
    assert a != run_key("FROM b\nENV X=1\nRUN echo hi\n")
    assert a != run_key("FROM b\nRUN --network=none echo hi\n")


def test_secret_contents_never_enter_a_key(tmp_path: Path) -> None:
    """RUN --mount=type=secret keys on the id only."""
    conv = _convert(tmp_path, "FROM b\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n")
    op = conv.target.vertex.op.cache_map(()).op
    assert op["mounts"][0]["id"] == "tok"
    assert "secret" in op["mounts"][0]["type"]


def test_build_args_reach_run_env_and_history(tmp_path: Path) -> None:
    """Declared ARGs are in a RUN's environment and its history entry (|N K=V)."""
    conv = _convert(tmp_path, "FROM b\nARG V=1\nRUN echo $V\n", build_args={"V": "2"})
    op = conv.target.vertex.op
    assert "V=2" in op.environ
    doc = final_config(
        conv.target, StepResult((LayerRef(BASE_DIFF), LayerRef(BASE_DIFF)), ("", "t")), None
    )
    assert doc["history"][-1]["created_by"] == "RUN |1 V=2 /bin/sh -c echo $V # buildkit"


def test_ssh_mount_plan_and_key_hold_id_and_target_only(tmp_path: Path) -> None:
    """dispatchSSH: id ``default``, ``/run/buildkit/ssh_agent.N``, SSH_AUTH_SOCK for that RUN
    only (the first agent); the key changes with the id, never with an agent's socket."""
    text = "FROM b\nRUN --mount=type=ssh --mount=type=ssh,id=gh,required true\nRUN true\n"
    conv = _convert(tmp_path, text)
    run = conv.target.vertex.inputs[0].op
    a, b = run.mounts
    assert (a.secret_id, a.target, a.required) == ("default", "/run/buildkit/ssh_agent.0", False)
    assert (b.secret_id, b.target, b.required) == ("gh", "/run/buildkit/ssh_agent.1", True)
    assert "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0" in run.environ
    assert not any(e.startswith("SSH_AUTH_SOCK=") for e in conv.target.vertex.op.environ)
    key = run.cache_map([]).op
    run.env.ssh_sockets = {"default": "/somewhere/agent.sock"}
    assert run.cache_map([]).op == key and "/somewhere" not in str(key)
    other = _convert(tmp_path, text.replace("id=gh", "id=gl")).target.vertex.inputs[0].op
    assert other.cache_map([]).op != key


@pytest.mark.parametrize("text", ["FROM b\nRUN --mount=type=ssh,source=x true\n"])
def test_unsupported_features_are_clear_errors(tmp_path: Path, text: str) -> None:
    """Unsupported features fail with a Dockerfile error (exit 2), not silently."""
    from mason.dockerfile import DockerfileError

    with pytest.raises(DockerfileError):
        _convert(tmp_path, text)


def test_build_network_flag_is_the_default_for_run(tmp_path: Path) -> None:
    """mason build --network sets RUN's network unless the RUN has its own --network."""
    env = BuildEnv(
        state=None,
        blobs=None,
        snapshots=None,
        executor=None,
        context=tmp_path,  # type: ignore[arg-type]
        ignore=DockerIgnore([]),
        secrets={},
        source_date_epoch=None,
        default_network="none",
    )
    df = parse_dockerfile(b"FROM b\nRUN a\nRUN --network=host b\n")
    conv = convert_plan(env, plan_build(df), _resolver, platform="linux/amd64")
    assert conv.target.vertex.op.network == "host"
    assert conv.target.vertex.inputs[0].op.network == "none"
