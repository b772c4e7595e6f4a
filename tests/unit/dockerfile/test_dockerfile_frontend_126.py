"""Frontend 1.26 (BuildKit v0.32.2) rules the golden corpus does not reach:
directives, ``<< EOF`` heredocs, flag unescaping, JSON form, the new flags and
their errors, mount csv and sizes, as BuildKit words them."""

from __future__ import annotations

from typing import Any

import pytest

from mason.dockerfile import (
    AddCommand,
    CopyCommand,
    DockerfileError,
    HealthcheckCommand,
    RunCommand,
    expand_command,
    parse_dockerfile,
    render_debug,
)
from mason.dockerfile.mounts import csv_fields, parse_device, ram_in_bytes


def _first(text: str) -> Any:
    return parse_dockerfile(text.encode()).stages[0].commands[0]


def _error(text: str) -> str:
    doc = render_debug(text.encode())
    for section in ("parse", "instructions", "expandedWithTestEnv"):
        err = (doc[section] or {}).get("error")
        if err:
            return str(err["message"])
    raise AssertionError("no error")


def test_check_directive_is_a_directive_not_a_comment() -> None:
    df = parse_dockerfile(b"# syntax=docker/dockerfile:1\n# check=skip=all\n# doc\nFROM a\n")
    assert [(d.name, d.value) for d in df.directives] == [
        ("syntax", "docker/dockerfile:1"),
        ("check", "skip=all"),
    ]
    assert df.nodes[0].prev_comment == ("doc",)


def test_duplicate_check_directive() -> None:
    with pytest.raises(DockerfileError, match="only one check parser directive can be used"):
        parse_dockerfile(b"# check=skip=all\n# check=error=true\nFROM a\n")


def test_heredoc_with_a_space_after_the_arrows() -> None:
    df = parse_dockerfile(b"FROM a\nRUN << EOF\necho hi\nEOF\nRUN <<-'X'\n\tbody\n\tX\n")
    run, chomped = df.stages[0].commands
    assert isinstance(run, RunCommand) and [f.name for f in run.files] == ["EOF"]
    assert run.cmd_line == ("<< EOF",) and run.files[0].data == "echo hi\n"
    assert isinstance(chomped, RunCommand) and chomped.files[0].chomp and chomped.end_line == 7
    # BuildKit keeps only ``<<`` and its blanks together: ``<<- X`` opens no heredoc
    assert _error("FROM a\nRUN <<- X\n\tbody\n\tX\n").endswith(
        "unknown instruction: body (did you mean copy?)"
    )


def test_flag_values_are_unescaped_with_the_files_escape_character() -> None:
    cmd = _first("# escape=`\nFROM a\nCOPY --chown=a`:b --chmod=\\x a b\n")
    assert isinstance(cmd, CopyCommand) and (cmd.chown, cmd.chmod) == ("a:b", "\\x")
    cmd = _first("FROM a\nCOPY --chown=a\\:b a b\n")
    assert isinstance(cmd, CopyCommand) and cmd.chown == "a:b"


def test_json_form_must_be_json_as_a_whole() -> None:
    cmd = _first('FROM a\nCMD ["a", "b"]  \n')
    assert cmd.cmd_line == ("a", "b") and not cmd.prepend_shell
    cmd = _first('FROM a\nCMD ["a", "b"] && c\n')
    assert cmd.cmd_line == ('["a", "b"] && c',) and cmd.prepend_shell
    assert (
        _error('FROM a\nRUN ["a", 1]\n')
        == "when using JSON array syntax, arrays must be comprised of strings only"
    )
    assert _first('FROM a\nRUN ["a", 1] x\n').prepend_shell  # not JSON at all: shell form


def test_new_copy_and_add_flags() -> None:
    cmd = _first("FROM a\nCOPY --parents --exclude=*.md --exclude=*.txt a/ b/ /dst/\n")
    assert isinstance(cmd, CopyCommand) and cmd.parents and cmd.exclude == ("*.md", "*.txt")
    cmd = _first("FROM a\nADD --unpack=true --keep-git-dir --exclude=x a /d\n")
    assert isinstance(cmd, AddCommand) and (cmd.unpack, cmd.keep_git_dir, cmd.exclude) == (
        True,
        True,
        ("x",),
    )
    cmd = _first("FROM a\nADD a /d\n")
    assert isinstance(cmd, AddCommand) and (cmd.unpack, cmd.keep_git_dir) == (None, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("COPY --parents=maybe a b", "expecting boolean value for flag --parents, not: maybe"),
        ("COPY --exclude a b", "missing a value on flag: --exclude"),
        ("COPY --unpack a b", "unknown flag: --unpack"),
        ("ADD --parents a b", "unknown flag: --parents"),
        ("ADD --unpak a b", "unknown flag: --unpak (did you mean unpack?)"),
        ("ADD --unpack= a b", "missing a value on flag: --unpack"),
        ("RUN --security=root true", 'security "root" is not valid'),
        ("RUN --security true", "missing a value on flag: --security"),
        ("RUN --securty=insecure true", "unknown flag: --securty (did you mean security?)"),
        ("RUN --device=a,b true", "invalid field 'b' must be a key=value pair"),
        ("RUN --device=name=a,name=b true", "device name already set to a"),
        (
            'RUN --device=a\\" true',
            'failed to parse csv devices: parse error on line 1, column 2: bare " in non-quoted-field',
        ),
        (
            "HEALTHCHECK --start-interval=1us CMD true",
            'Interval "start-interval" cannot be less than 1ms',
        ),
        ("HEALTHCHECK --start-interval=x CMD true", 'time: invalid duration "x"'),
    ],
)
def test_new_flag_errors(text: str, message: str) -> None:
    assert _error(f"FROM a\n{text}\n") == f"dockerfile parse error on line 2: {message}"


def test_run_security_device_and_start_interval() -> None:
    cmd = _first("FROM a\nRUN --security=insecure --device=vendor.com/gpu=all,required true\n")
    assert isinstance(cmd, RunCommand) and cmd.security == "insecure"
    assert [(d.name, d.required) for d in cmd.devices] == [("vendor.com/gpu=all", True)]
    assert cmd.flags_used == ("device", "security")
    assert _first("FROM a\nRUN true\n").security == "sandbox"
    hc = _first("FROM a\nHEALTHCHECK --start-interval=2s CMD true\n")
    assert isinstance(hc, HealthcheckCommand) and hc.start_interval == 2_000_000_000


def test_secret_mount_env() -> None:
    cmd = expand_command(
        _first("FROM a\nRUN --mount=type=secret,id=tok,env=$V true\n"), {"V": "TOKEN"}
    )
    assert isinstance(cmd, RunCommand) and cmd.mounts is not None
    assert (cmd.mounts[0].type, cmd.mounts[0].cache_id, cmd.mounts[0].env) == (
        "secret",
        "tok",
        "TOKEN",
    )
    plain = expand_command(_first("FROM a\nRUN --mount=type=secret,id=tok true\n"), {})
    assert (
        isinstance(plain, RunCommand) and plain.mounts is not None and plain.mounts[0].env is None
    )


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (
            "type=cache,target=/c,sharing=lockd",
            'unsupported sharing value "lockd" (did you mean locked?)',
        ),
        ("type=secret,id=a,sharing=shared", "secret mount should not define sharing"),
        ("type=bind,target=/c,sharing=shared", "invalid cache sharing set for bind mount"),
        ("type=tmpfs,target=/t,size=10x", "invalid value for size: 10x"),
        ("type=bind,target=/t,mode=0755", 'mode not allowed for "bind" type mounts'),
        (
            'type=bind,\\"target=/a\\"b',
            'failed to parse csv mounts: parse error on line 1, column 21: extraneous or missing " in quoted-field',
        ),
        (
            'type=bind,\\"target=/a',
            'failed to parse csv mounts: parse error on line 1, column 12: extraneous or missing " in quoted-field',
        ),
        ("type=bind,targte=/a", "unexpected key 'targte' in 'targte=/a' (did you mean target?)"),
    ],
)
def test_mount_errors(mount: str, message: str) -> None:
    assert _error(f"FROM a\nRUN --mount={mount} true\n").endswith(message)


def test_csv_fields_as_go_csvvalue() -> None:
    assert csv_fields('a,"b,c","d""e",') == ["a", "b,c", 'd"e', ""]
    assert csv_fields("a,b\n") == ["a", "b"]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("1024", 1024), ("64m", 64 << 20), ("1.5GiB", 3 << 29), ("10 kb", 10240), ("1e3", 1000),
        ("5b", 5), ("+5", 5), (".5k", 512), ("10x", None), ("-1", None), ("k", None), ("1kibb", None),
        ("10KB", 10240), ("1mb", 1 << 20), ("1mx", None),
    ],
)  # fmt: skip
def test_ram_in_bytes(size: str, expected: int | None) -> None:
    assert ram_in_bytes(size) == expected


def test_device_names() -> None:
    d = parse_device("name=vendor.com/gpu=all,required=false")
    assert (d.name, d.required) == ("vendor.com/gpu=all", False)


def test_chmod_is_expanded() -> None:
    cmd = expand_command(_first("FROM a\nCOPY --chmod=$M a b\n"), {"M": "0755"})
    assert isinstance(cmd, CopyCommand) and cmd.chmod == "0755"


def test_env_no_delim_and_dump() -> None:
    doc = render_debug(b"FROM a\nENV A b c\nLABEL x=1 y=2\n")
    assert doc["parse"]["dump"] == '(from "a")\n(env "A" "b c" "")\n(label "x" "1" "=" "y" "2" "=")'
    env = doc["instructions"]["stages"][0]["commands"][0]["Env"]
    assert env == [{"Key": "A", "Value": "b c", "NoDelim": True}]


def test_pattern_matching_stays_fast() -> None:
    word = "${V##" + "*" * 200 + "x}"
    assert (
        expand_command(_first(f"FROM a\nENV A={word}\n"), {"V": "a" * 5000}).env[0].value
        == "a" * 5000
    )  # type: ignore[union-attr]
