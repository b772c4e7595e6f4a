"""``mason registry check``'s probes against the fake registry's quirks (ECR-like refused
index manifests, declined mounts, deletion disabled, If-Match honoured, a refused upload)."""

from __future__ import annotations

from tests.support.fake_registry import FakeRegistry

from mason.oci import mediatypes as mt
from mason.oci.reference import Reference
from mason.registry.auth import CredentialStore
from mason.registry.check import (
    BLOB_UPLOAD,
    CONDITIONAL,
    FEATURES,
    INDEX_FORM,
    MANIFEST_FORM,
    MOUNT,
    REFERRERS,
    TAG_DELETION,
    check_registry,
)
from mason.registry.client import RegistryClient

HOST = "registry.fake.test"


def _check(fake: FakeRegistry) -> dict[str, tuple[bool | None, str]]:
    store = CredentialStore.static({HOST: (fake.username, fake.password)})
    with RegistryClient(store, send=fake, sleep=lambda _s: None) as client:
        report = check_registry(client, Reference.parse(f"{HOST}/team/cache"))
    assert [f.feature for f in report.findings] == list(FEATURES)
    return {f.feature: (f.supported, f.detail) for f in report.findings}


def test_a_registry_with_everything_but_referrers() -> None:
    fake = FakeRegistry(auth="bearer", if_match=True)
    found = _check(fake)
    assert {k for k, (ok, _d) in found.items() if not ok} == {REFERRERS}
    assert found[CONDITIONAL] == (True, "a stale If-Match is refused (412)")
    assert found[TAG_DELETION] == (True, "by tag")
    assert fake.tags.get("team/cache", {}) == {}, "the check's tags are deleted"
    assert fake.count("POST", r"/v2/team/cache-mason-check/blobs/uploads/") == 1


def test_ecr_like_refusals_are_named_with_the_registrys_error() -> None:
    fake = FakeRegistry(
        auth="bearer",
        accepted_manifest_types={mt.OCI_MANIFEST},
        mount_supported=False,
        delete_enabled=False,
    )
    found = _check(fake)
    assert found[MANIFEST_FORM] == (True, "")
    ok, detail = found[INDEX_FORM]
    assert ok is False and "HTTP 400" in detail and "MANIFEST_INVALID" in detail
    assert found[MOUNT][0] is False and "202" in found[MOUNT][1]
    assert found[CONDITIONAL] == (False, "HTTP 201: a stale If-Match was ignored")
    assert found[TAG_DELETION][0] is False and "UNSUPPORTED" in found[TAG_DELETION][1]


def test_a_refused_upload_leaves_the_rest_untried() -> None:
    fake = FakeRegistry(auth="bearer", faults=[("POST", r"/blobs/uploads/", [403])])
    found = _check(fake)
    assert found[BLOB_UPLOAD][0] is False and "HTTP 403" in found[BLOB_UPLOAD][1]
    assert all(found[f][0] is None for f in FEATURES if f != BLOB_UPLOAD)
