"""``mason registry check REF``: what a registry supports, before a build relies on it.

Each probe does the real thing in REF's repository (uploads, manifest pushes, a mount, a
conditional update, a referrers query, a tag deletion) with small throw-away content under
tags named ``mason-check-<run>…``, and reports the registry's own answer. Registries differ
on exactly these points (Harbor, Quay, Nexus, Artifactory, ECR and ACR users hit them): the
index form of a registry cache, the cache config media type, mounts, chunked uploads, tag
deletion, conditional updates and the referrers API.
"""

from __future__ import annotations

import gzip
import io
import json
import secrets
import tarfile
from collections.abc import Callable
from typing import IO

from mason.digest import sha256_bytes
from mason.oci import mediatypes as mt
from mason.oci.descriptor import Descriptor
from mason.oci.reference import Reference
from mason.registry.auth import pull_scope, push_scope
from mason.registry.client import RegistryClient
from mason.registry.errors import RegistryError
from mason.structs import Struct, field, replace

__all__ = ["CACHE_CONFIG_MEDIA_TYPE", "Finding", "RegistryReport", "check_registry"]

CACHE_CONFIG_MEDIA_TYPE = "application/vnd.buildkit.cacheconfig.v0"


class Finding(Struct, frozen=True):
    """One feature: ``supported`` is None when it could not be tried (an earlier probe it
    needs failed); ``detail`` is what the registry answered, in one line."""

    feature: str
    supported: bool | None
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {"feature": self.feature, "supported": self.supported, "detail": self.detail}


class RegistryReport(Struct):
    ref: Reference
    tag_prefix: str
    findings: list[Finding] = field(default_factory=list)
    #: tags the check made and could not delete (the registry refuses deletion)
    left_behind: list[str] = field(default_factory=list)

    def supported(self, feature: str) -> bool | None:
        return next((f.supported for f in self.findings if f.feature == feature), None)

    @property
    def cache_usable(self) -> bool:
        """A registry cache can be stored here in at least one of its two forms."""
        return bool(self.supported(MANIFEST_FORM) or self.supported(INDEX_FORM))


BLOB_UPLOAD = "blob upload"
CHUNKED_UPLOAD = "chunked blob upload"
MANIFEST_FORM = (
    f"cache as an image manifest (image-manifest=true, config {CACHE_CONFIG_MEDIA_TYPE})"
)
INDEX_FORM = "cache as an index (image-manifest=false)"
MOUNT = "cross-repository blob mount"
CONDITIONAL = "conditional manifest update (If-Match)"
REFERRERS = "referrers API"
TAG_DELETION = "tag deletion"
FEATURES = (
    BLOB_UPLOAD,
    CHUNKED_UPLOAD,
    MANIFEST_FORM,
    INDEX_FORM,
    MOUNT,
    CONDITIONAL,
    REFERRERS,
    TAG_DELETION,
)


def _reason(exc: RegistryError) -> str:
    """The registry's own error, in one line."""
    codes = "; ".join(
        f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in exc.errors
    )
    status = f"HTTP {exc.status}" if exc.status is not None else "no response"
    return f"{status}: {codes}" if codes else f"{status}: {exc.message.splitlines()[0]}"


def _tiny_layer(run: str) -> bytes:
    """A gzip'd tar holding one file: a real layer, unique to this run."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = f"mason registry check {run}\n".encode()
        info = tarfile.TarInfo("mason-check")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


class _Probe:
    def __init__(self, client: RegistryClient, ref: Reference) -> None:
        self.client = client
        self.ref = ref
        self.run = secrets.token_hex(4)
        self.report = RegistryReport(ref, f"mason-check-{self.run}")
        layer = _tiny_layer(self.run)
        self.layer = (Descriptor(mt.OCI_LAYER_GZIP, sha256_bytes(layer), len(layer)), layer)
        config = json.dumps(
            {"layers": [{"blob": self.layer[0].digest, "parent": -1}], "records": []}
        ).encode()
        self.config = (
            Descriptor(CACHE_CONFIG_MEDIA_TYPE, sha256_bytes(config), len(config)),
            config,
        )

    def note(self, feature: str, supported: bool | None, detail: str = "") -> None:
        self.report.findings.append(Finding(feature, supported, detail))

    def _tag(self, suffix: str = "") -> Reference:
        return self.ref.with_tag(self.report.tag_prefix + suffix)

    def _push(self, blob: tuple[Descriptor, bytes], *, chunked: bool) -> str:
        data = blob[1]
        opener: Callable[[], IO[bytes]] = lambda: io.BytesIO(data)  # noqa: E731
        return self.client.push_blob_outcome(self.ref, blob[0], opener, chunked=chunked)

    def blobs(self) -> bool:
        try:
            self._push(self.config, chunked=False)
            self.note(BLOB_UPLOAD, True)
        except RegistryError as exc:
            self.note(BLOB_UPLOAD, False, _reason(exc))
            return False
        try:
            self._push(self.layer, chunked=True)
            self.note(CHUNKED_UPLOAD, True)
        except RegistryError as exc:
            self.note(CHUNKED_UPLOAD, False, _reason(exc))
            self._push(self.layer, chunked=False)  # the manifests below still need the layer
        return True

    def manifests(self) -> tuple[Reference, str, bytes] | None:
        """Both cache forms; the pushed image-manifest form (tag, digest, bytes), if any."""
        layer, config = self.layer[0].to_json(), self.config[0].to_json()
        manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": [layer]}
        ).encode()
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [layer, config]}
        ).encode()
        pushed: tuple[Reference, str, bytes] | None = None
        for feature, raw, media_type, suffix in (
            (MANIFEST_FORM, manifest, mt.OCI_MANIFEST, ""),
            (INDEX_FORM, index, mt.OCI_INDEX, "-index"),
        ):
            tag = self._tag(suffix)
            try:
                digest = self.client.put_manifest(tag, raw, media_type)
            except RegistryError as exc:
                self.note(feature, False, _reason(exc))
                continue
            self.note(feature, True)
            self.report.left_behind.append(tag.tag or "")
            if media_type == mt.OCI_MANIFEST:
                pushed = (tag, digest, raw)
        return pushed

    def mount(self) -> None:
        other = replace(self.ref, repository=f"{self.ref.repository}-mason-check", tag=None)
        try:
            mounted = self.client.mount_blob(other, self.config[0].digest, self.ref.repository)
        except RegistryError as exc:
            self.note(MOUNT, False, _reason(exc))
            return
        detail = "" if mounted else "declined: the registry opened an upload instead (202)"
        self.note(MOUNT, mounted, detail)

    def conditional(self, tag: Reference, raw: bytes) -> None:
        """A PUT with a stale ``If-Match``: 412 means concurrent writers can be detected."""
        path = f"/v2/{tag.repository}/manifests/{tag.tag}"
        try:
            status, _h = self.client.probe(
                "PUT",
                tag,
                path,
                operation=f"conditional update of {tag}",
                scopes=[push_scope(tag.repository)],
                headers={"Content-Type": mt.OCI_MANIFEST, "If-Match": '"mason-check-stale"'},
                body=raw,
                ok=(200, 201, 202, 204, 412),
            )
        except RegistryError as exc:
            self.note(CONDITIONAL, False, _reason(exc))
            return
        if status == 412:
            self.note(CONDITIONAL, True, "a stale If-Match is refused (412)")
        else:
            self.note(CONDITIONAL, False, f"HTTP {status}: a stale If-Match was ignored")

    def referrers(self, tag: Reference, digest: str) -> None:
        try:
            _s, headers = self.client.probe(
                "GET",
                tag,
                f"/v2/{tag.repository}/referrers/{digest}",
                operation=f"list referrers of {digest}",
                scopes=[pull_scope(tag.repository)],
                headers={"Accept": mt.OCI_INDEX},
            )
        except RegistryError as exc:
            plain_404 = exc.status == 404 and not exc.errors
            self.note(REFERRERS, False, "HTTP 404: no such endpoint" if plain_404 else _reason(exc))
            return
        served = headers.get("content-type", "").split(";")[0].strip()
        self.note(REFERRERS, served == mt.OCI_INDEX, "" if served == mt.OCI_INDEX else served)

    def delete_tags(self) -> None:
        """Delete the check's tags: by tag (OCI distribution 1.1), else by manifest digest
        (the tag goes with its manifest); what stays is reported as left behind."""
        ways: list[str] = []
        for name in list(self.report.left_behind):
            tag = self.ref.with_tag(name)
            try:
                ways.append(self._delete_tag(tag))
            except RegistryError as exc:
                self.note(TAG_DELETION, False, _reason(exc))
                return
            self.report.left_behind.remove(name)
        if ways:
            by_tag = all(w == "tag" for w in ways)
            self.note(TAG_DELETION, True, "by tag" if by_tag else "by manifest digest only")

    def _delete_tag(self, tag: Reference) -> str:
        scopes = [f"repository:{tag.repository}:delete"]
        try:
            self.client.probe(
                "DELETE",
                tag,
                f"/v2/{tag.repository}/manifests/{tag.tag}",
                operation=f"delete tag {tag}",
                scopes=scopes,
                ok=(200, 202),
            )
            return "tag"
        except RegistryError:
            pass  # distribution 2.x deletes by digest only; a refusal shows there
        desc = self.client.head_manifest(tag)
        if desc is not None:
            self.client.delete_manifest(tag, desc.digest)
        return "digest"


def check_registry(client: RegistryClient, ref: Reference) -> RegistryReport:
    """Probe every feature in ``FEATURES`` in ``ref``'s repository; what could not be tried
    (the uploads or manifests it needs failed) is reported with ``supported=None``."""
    probe = _Probe(client, ref)
    if probe.blobs():
        pushed = probe.manifests()
        probe.mount()
        if pushed is not None:
            tag, digest, raw = pushed
            probe.conditional(tag, raw)
            probe.referrers(tag, digest)
        probe.delete_tags()
    tried = {f.feature for f in probe.report.findings}
    for feature in FEATURES:
        if feature not in tried:
            probe.note(feature, None, "not tried: an upload or manifest it needs failed")
    order = {f: i for i, f in enumerate(FEATURES)}
    probe.report.findings.sort(key=lambda f: order[f.feature])
    return probe.report
