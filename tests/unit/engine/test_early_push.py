"""``mason.engine.earlypush``: with a registry cache that takes every layer (``mode=max``), the
layers a build makes go up to the cache's repository as the steps commit them; the export
then finds them there, and the image push mounts them from there."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.engine_parts import stored_layer
from tests.unit.cache.cache_fakes import FakeRegistry

from mason.cache.options import parse_cache_to
from mason.engine.blobs import Blobs
from mason.engine.earlypush import EarlyPush
from mason.engine.exporters import ImageResult, assemble_manifest, open_pushes_ahead, push_image
from mason.engine.options import outputs_for
from mason.engine.state import StateRoot
from mason.oci.descriptor import Descriptor
from mason.oci.platform import Platform
from mason.oci.reference import Reference
from mason.registry.errors import RegistryError
from mason.registry.push import push_blob


@pytest.fixture
def blobs(tmp_path: Path) -> Iterator[Blobs]:
    with StateRoot.open(tmp_path / "root") as state:
        yield Blobs(state, None)


@pytest.mark.parametrize(
    ("cache_to", "sends"),
    [
        ("type=registry,ref=early1.test/app-cache,mode=max", True),
        ("type=registry,ref=early1.test/app-cache", False),  # mode=min: not every layer goes
        ("type=registry,ref=early1.test/app-cache,mode=max,compression=zstd", False),
        ("type=registry,ref=early1.test/app-cache,mode=max,force-compression=true", False),
        ("type=local,dest=/tmp/mason-early-test,mode=max", False),
    ],
)
def test_only_a_registry_cache_shipping_every_layer_as_made_gets_them_early(
    blobs: Blobs, cache_to: str, sends: bool
) -> None:
    early = EarlyPush.for_build(parse_cache_to(cache_to), FakeRegistry(), blobs)
    assert (early is not None) == sends
    if early is not None:
        early.close()


def test_each_layer_goes_to_the_cache_repository_and_the_image_push_mounts_it(
    blobs: Blobs,
) -> None:
    registry = FakeRegistry()
    early = EarlyPush.for_build(
        parse_cache_to("type=registry,ref=early2.test/app-cache,mode=max"), registry, blobs
    )
    assert early is not None
    layers = [stored_layer(blobs, f"f{i}") for i in range(3)]
    for lr in layers:
        early.layer_made(lr)
    wanted = sorted(str(lr.blob) for lr in layers)
    deadline = time.monotonic() + 10
    while sorted(registry.blobs.get("app-cache", {})) != wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    early.close()
    assert sorted(registry.blobs["app-cache"]) == wanted
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [lr.diff_id for lr in layers]},
    }
    exported = assemble_manifest(
        blobs, ImageResult(tuple(layers), config, Platform("linux", "amd64"))
    )
    lines: list[str] = []
    push_image(blobs, registry, exported, [Reference.parse("early2.test/app:latest")], lines.append)
    for lr in layers:  # mounted from where the early upload put it, and the log says so
        assert f"mounted {lr.blob} (known in app-cache)" in lines
    sent_to_app = {c[2] for c in registry.ops("push_blob") if c[1] == "app"}
    assert sent_to_app == {exported.manifest.config.digest}  # the layers not sent twice


class _RefusingOnce(FakeRegistry):
    """Refuses the first put (a registry that was down for a moment)."""

    refused = False

    def push_blob_outcome(self, ref: Reference, desc: Descriptor, *args: Any, **kw: Any) -> Any:
        if not self.refused:
            self.refused = True
            raise RegistryError("denied", status=403, operation="push blob")
        return super().push_blob_outcome(ref, desc, *args, **kw)


def test_a_failed_upload_is_left_to_the_export(blobs: Blobs) -> None:
    registry = _RefusingOnce()
    early = EarlyPush.for_build(
        parse_cache_to("type=registry,ref=early3.test/app-cache,mode=max"), registry, blobs
    )
    assert early is not None
    layer = stored_layer(blobs, "f")
    early.layer_made(layer)
    deadline = time.monotonic() + 10
    while not registry.refused and time.monotonic() < deadline:
        time.sleep(0.01)
    early.close()  # the failure is not raised: the export's own put reports what fails
    assert registry.refused and registry.blobs.get("app-cache", {}) == {}
    # nothing claims the layer is there: the export's put uploads it
    cache = Reference.parse("early3.test/app-cache:latest")
    desc = blobs.descriptor(layer, oci=True)
    assert push_blob(registry, cache, desc, blobs.opener(layer)) == "uploaded"
    assert list(registry.blobs["app-cache"]) == [layer.blob]


def test_an_upload_session_is_kept_open_from_the_first_layer_until_the_export(
    blobs: Blobs,
) -> None:
    """The cache's config, put by the export after the last step, takes the session kept open
    (``RegistryClient.keep_upload_ahead``); a build that makes no layer opens none."""
    registry = FakeRegistry()
    early = EarlyPush.for_build(
        parse_cache_to("type=registry,ref=early4.test/app-cache,mode=max"), registry, blobs
    )
    assert early is not None
    assert registry.ops("keep_upload_ahead") == []
    early.layer_made(stored_layer(blobs, "f"))
    assert registry.ops("keep_upload_ahead") == [("keep_upload_ahead", "app-cache", "")]
    assert registry.ops("stop_upload_ahead") == []
    early.stop_queued()
    assert registry.ops("stop_upload_ahead") == [("stop_upload_ahead", "app-cache", "")]
    early.close()


def test_a_push_of_a_new_image_opens_an_upload_session_in_each_target_repository(
    blobs: Blobs,
) -> None:
    """``exporters.open_pushes_ahead``: a layer no registry holds makes the image new, so its
    config will be uploaded where it is pushed; an image every layer of which some registry
    holds may be there already (its push may send nothing), and an unpushed one goes nowhere."""
    layer = stored_layer(blobs, "f")
    image = ImageResult((layer,), {"os": "linux"}, Platform("linux", "amd64"))
    pushed = outputs_for(["early5.test/app:v1", "early5.test/other:v1"], True, ())
    registry = FakeRegistry()
    open_pushes_ahead(blobs, registry, [image], outputs_for(["early5.test/app:v1"], False, ()))
    assert registry.ops("open_upload_ahead") == []
    open_pushes_ahead(blobs, registry, [image], pushed)
    assert registry.ops("open_upload_ahead") == [
        ("open_upload_ahead", "app", ""),
        ("open_upload_ahead", "other", ""),
    ]
    assert layer.blob is not None
    blobs.note_stored(layer.blob, Reference.parse("early5.test/cache"), layer.media_type, 1)
    again = FakeRegistry()
    open_pushes_ahead(blobs, again, [image], pushed)
    assert again.ops("open_upload_ahead") == []
