"""How a foreign platform's RUN runs (``mason.executor.emulation``), on fake binfmt_misc trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from mason.executor.emulation import EMULATOR_MOUNT, EmulatorMissingError, Emulators
from mason.oci.platform import Platform

HOST = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
_LINE = ":qemu-aarch64:M::\\x7fELF:\\xff\\xff:{interp}:{flags}\n"


def _tree(tmp: Path, *, entry: str | None = None, emulator: bool = True) -> dict[str, Path]:
    binfmt, bins, conf = tmp / "binfmt", tmp / "bin", tmp / "conf"
    for d in (binfmt, bins, conf):
        d.mkdir()
    if entry is not None:
        (binfmt / "qemu-aarch64").write_text(entry)
    if emulator:
        qemu = bins / "qemu-aarch64-static"
        qemu.write_text("#!/bin/sh\n")
        qemu.chmod(0o755)
    return {"binfmt_dir": binfmt, "bin_dirs": (bins,), "conf_dirs": (conf,)}


def test_the_hosts_own_platform_runs_natively(tmp_path: Path) -> None:
    e = Emulators(HOST, may_register=False, **_tree(tmp_path, emulator=False))  # type: ignore[arg-type]
    run = e.for_platform(Platform("linux", "amd64"))
    assert run.emulator is None and run.note == ""
    assert run.args(("/bin/sh", "-c", "x")) == ("/bin/sh", "-c", "x")


def test_a_fix_binary_registration_is_used(tmp_path: Path) -> None:
    entry = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: POF\noffset 0\n"
    e = Emulators(HOST, may_register=False, **_tree(tmp_path, entry=entry))  # type: ignore[arg-type]
    run = e.for_platform(ARM64)
    assert run.emulator is None and "binfmt_misc" in run.note
    assert run.args(("/bin/true",)) == ("/bin/true",)


@pytest.mark.parametrize(
    "entry",
    [
        "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: P\n",  # no F: not in runc
        "disabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\n",
    ],
)
def test_an_unusable_registration_falls_back_to_the_explicit_emulator(
    tmp_path: Path, entry: str
) -> None:
    tree = _tree(tmp_path, entry=entry)
    e = Emulators(HOST, may_register=False, **tree)  # type: ignore[arg-type]
    run = e.for_platform(ARM64)
    assert run.emulator == tree["bin_dirs"][0] / "qemu-aarch64-static"  # type: ignore[index]
    assert run.args(("/bin/sh", "-c", "x")) == (EMULATOR_MOUNT, "/bin/sh", "-c", "x")
    assert "run explicitly" in run.note


def test_registering_writes_the_packages_line_with_the_fix_binary_flag(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    interp = tree["bin_dirs"][0] / "qemu-aarch64-static"  # type: ignore[index]
    (tree["conf_dirs"][0] / "qemu-aarch64.conf").write_text(  # type: ignore[index]
        _LINE.format(interp=interp, flags="OP")
    )
    register = tree["binfmt_dir"] / "register"  # type: ignore[operator]
    register.write_text("")

    class Kernel(Emulators):
        """binfmt_misc's register file: a written line makes the entry."""

        def _registered(self, arch: str) -> bool:
            line = register.read_text()
            return line.startswith(f":qemu-{arch}:") and line.rstrip().endswith("F")

    run = Kernel(HOST, may_register=True, **tree).for_platform(ARM64)  # type: ignore[arg-type]
    assert register.read_text() == _LINE.format(interp=interp, flags="OPF").rstrip()
    assert run.emulator is None and "registered with binfmt_misc by mason" in run.note


def test_without_root_nothing_is_registered(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    interp = tree["bin_dirs"][0] / "qemu-aarch64-static"  # type: ignore[index]
    (tree["conf_dirs"][0] / "qemu-aarch64.conf").write_text(  # type: ignore[index]
        _LINE.format(interp=interp, flags="F")
    )
    (tree["binfmt_dir"] / "register").write_text("")  # type: ignore[operator]
    run = Emulators(HOST, may_register=False, **tree).for_platform(ARM64)  # type: ignore[arg-type]
    assert (tree["binfmt_dir"] / "register").read_text() == ""  # type: ignore[operator]
    assert run.emulator is not None and "needs root" in run.note


def test_no_emulator_names_the_package(tmp_path: Path) -> None:
    e = Emulators(HOST, may_register=False, **_tree(tmp_path, emulator=False))  # type: ignore[arg-type]
    with pytest.raises(EmulatorMissingError) as err:
        e.for_platform(Platform("linux", "arm", "v7"))
    assert err.value.exit_code == 1
    assert "no emulator for linux/arm/v7" in err.value.message
    assert "apt-get install qemu-user-static" in (err.value.hint or "")
