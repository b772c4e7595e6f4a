"""RuncExecutor's use of runc, checked against a fake runc script."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from mason.executor import ExecCancelledError, ExecSpec, RuncExecutor, SecretMount

FAKE_RUNC = """#!/bin/sh
log="{log}"
echo "$*" >> "$log"
while [ "$1" = "--root" ] || [ "$1" = "--log" ] || [ "$1" = "--log-format" ]; do
  [ "$1" = "--root" ] && root="$2"
  shift 2
done
case "$1" in
  run)
    bundle="$3"
    # runc keeps a directory per container in its root; its run removes it at the end,
    # unless it failed (this fake: unless FAKE_CLEAN is set)
    [ -z "$FAKE_CLEAN" ] && mkdir -p "$root/$4"
    cp "$bundle/config.json" "{log}.config.json"
    ls "$bundle" > "{log}.bundle"
    echo "container says hi"
    echo "and on stderr" >&2
    [ -n "$FAKE_HANG" ] && exec sleep 600
    exit 3 ;;
  kill) exit 1 ;;
  delete) rm -rf "$root/$3"; exit 0 ;;
esac
"""


@pytest.fixture
def fake_runc(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "runc.calls"
    script = tmp_path / "runc"
    script.write_text(FAKE_RUNC.format(log=log))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


def make_rootfs(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return rootfs


def test_run_writes_bundle_streams_output_and_deletes(
    tmp_path: Path, fake_runc: tuple[Path, Path]
) -> None:
    script, log = fake_runc
    rootfs = make_rootfs(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    executor = RuncExecutor(
        runc=str(script), state_dir=tmp_path / "state", work_dir=tmp_path / "work"
    )
    chunks: list[bytes] = []
    spec = ExecSpec(
        rootfs=rootfs,
        args=("make",),
        env=("PATH=/bin",),
        cwd="/src",
        mounts=(SecretMount(secret, "/run/secrets/token"),),
    )
    status = executor.run(spec, chunks.append)

    assert status.code == 3 and status.signal is None and status.error is None
    assert b"".join(chunks) == b"container says hi\nand on stderr\n"
    assert status.last_lines == ("container says hi", "and on stderr")
    calls = log.read_text().splitlines()
    run_call = calls[0].split()
    assert run_call[:2] == ["--root", str(tmp_path / "state")]
    assert run_call[4:7] == ["--log-format", "json", "run"]
    container_id = run_call[-1]
    assert container_id.startswith("mason-")
    assert calls[-1] == f"--root {tmp_path / 'state'} delete --force {container_id}"
    assert os.listdir(tmp_path / "state") == []  # the container runc left was deleted
    config = json.loads(Path(f"{log}.config.json").read_text())
    assert config["process"]["env"] == ["PATH=/bin", "HOME=/root"]
    assert config["root"]["path"] == str(rootfs)
    assert {"config.json", "hosts", "resolv.conf"} <= set(Path(f"{log}.bundle").read_text().split())
    # Bundle removed, cwd kept, mountpoint stubs gone.
    assert os.listdir(tmp_path / "work") == []
    assert sorted(os.listdir(rootfs)) == ["etc", "src"]
    assert sorted(os.listdir(rootfs / "etc")) == ["passwd"]


def test_a_container_runc_already_removed_is_not_deleted_again(
    tmp_path: Path, fake_runc: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # no directory for it in runc's root: nothing left to delete, no runc process for it
    script, log = fake_runc
    monkeypatch.setenv("FAKE_CLEAN", "1")
    executor = RuncExecutor(
        runc=str(script), state_dir=tmp_path / "state", work_dir=tmp_path / "work"
    )
    status = executor.run(ExecSpec(rootfs=make_rootfs(tmp_path), args=("make",)), lambda _: None)
    assert status.code == 3
    verbs = [line.split()[2] for line in log.read_text().splitlines()]
    assert verbs == ["--log"] and "run" in log.read_text()
    assert os.listdir(tmp_path / "state") == []


def test_cancel_kills_and_deletes(
    tmp_path: Path, fake_runc: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    script, log = fake_runc
    monkeypatch.setenv("FAKE_HANG", "1")
    executor = RuncExecutor(
        runc=str(script), state_dir=tmp_path / "state", work_dir=tmp_path / "work"
    )
    cancel = threading.Event()

    def on_output(data: bytes) -> None:
        cancel.set()

    with pytest.raises(ExecCancelledError) as info:
        executor.run(
            ExecSpec(rootfs=make_rootfs(tmp_path), args=("sleep",)), on_output, cancel=cancel
        )
    assert "container says hi" in info.value.context
    verbs = [line.split()[2] for line in log.read_text().splitlines()]
    assert verbs[0] == "--log"
    assert "kill" in verbs
    assert verbs[-1] == "delete"
