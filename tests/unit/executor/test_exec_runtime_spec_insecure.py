"""RUN --security=insecure in the runc spec: BuildKit v0.32.2's WithInsecureSpec."""

from __future__ import annotations

from tests.unit.executor.spec_helpers import APP, by_destination, config_for, spec_with

from mason.executor.runtime_spec import DEFAULT_CAPABILITIES, MASKED_PATHS, host_capabilities


def test_sandbox_is_the_default() -> None:
    config = config_for(spec_with())
    assert config["process"]["capabilities"]["bounding"] == list(DEFAULT_CAPABILITIES)
    assert config["linux"]["maskedPaths"] == list(MASKED_PATHS)
    assert "ro" in by_destination(config)["/sys"]["options"]
    assert config["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]


def test_insecure_has_every_capability_and_nothing_masked() -> None:
    config = config_for(spec_with(insecure=True), user=APP)
    caps = config["process"]["capabilities"]
    every = list(host_capabilities())
    assert set(DEFAULT_CAPABILITIES) <= set(every) or every == list(DEFAULT_CAPABILITIES)
    for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        assert caps[kind] == every, kind  # a non-root user too, as BuildKit adds them to every set
    assert config["linux"]["maskedPaths"] == [] and config["linux"]["readonlyPaths"] == []
    mounts = by_destination(config)
    assert "ro" not in mounts["/sys"]["options"] and "rw" in mounts["/sys"]["options"]
    assert "ro" not in mounts["/sys/fs/cgroup"]["options"]
    assert config["linux"]["resources"]["devices"] == [
        {"allow": True, "type": "c", "access": "rwm"},
        {"allow": True, "type": "b", "access": "rwm"},
    ]
    assert "seccomp" not in config["linux"]
