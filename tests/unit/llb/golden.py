"""BuildKit v0.32.2's golden keys (tests/data/buildkit-keys) and mason.llb's model of each case.

``model_keys(case)`` computes, from the case's LLB (``llb.json``, read into typed
``mason.llb.pb`` ops), its staged context and the base image, every digest mason
knows how to produce, each with its preimage; ``coverage(case)`` compares them with
``keys.json`` and the exported cache config. ``python -m tests.unit.llb.golden``
prints the table.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.support.testdata import TESTDATA

from mason.digest import sha256_bytes, sha256_file
from mason.layer.apply import apply_layer
from mason.llb import pb
from mason.llb.cachemap import (
    CacheMap,
    Selector,
    exec_cache_map,
    file_cache_map,
    merge_cache_map,
)
from mason.llb.contenthash import ContentTree, FileDigests, header_digest
from mason.llb.keys import (
    content_key,
    http_source_key,
    http_source_key_json,
    image_manifest_key_json,
    image_source_keys,
    record_digest,
)
from mason.llb.patterns import PatternMatcher
from mason.structs import replace

ROOT = TESTDATA / "buildkit-keys"
CASES = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name[0].isdigit())
PLATFORM = pb.Platform(architecture="amd64", os="linux")
SESSION_MARKERS = (b"SessionID", b"session:", b"random:")


@dataclass(frozen=True)
class KeyEntry:
    """One preimage of keys.json: its parts (bytes, or the size of skipped content)."""

    digest: str
    type: str
    parts: tuple[bytes | int, ...]

    @property
    def data(self) -> bytes:
        return b"".join(p for p in self.parts if isinstance(p, bytes))

    @property
    def skipped(self) -> int:
        return sum(p for p in self.parts if isinstance(p, int))

    @property
    def session_bound(self) -> bool:
        return any(m in self.data for m in SESSION_MARKERS)


def _entries(raw: list[dict[str, Any]]) -> Iterator[KeyEntry]:
    for e in raw:
        parts: list[bytes | int] = []
        for d in e["data"]:
            b = base64.b64decode(d["data"])
            parts.append(b if d["type"] == 2 else int.from_bytes(b, "little"))
        yield KeyEntry(e["digest"], e["type"], tuple(parts))
        yield from _entries(e.get("subRecords") or [])


@cache
def keys(case: str) -> dict[str, KeyEntry]:
    raw = json.loads((ROOT / case / "keys.json").read_text())
    return {e.digest: e for e in _entries(raw)}


@cache
def cache_config(case: str) -> dict[str, Any]:
    layout = ROOT / case / "cache"
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs/sha256" / manifest_digest).read_text())
    config_digest = manifest["config"]["digest"].split(":")[1]
    return json.loads((layout / "blobs/sha256" / config_digest).read_text())  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Step:
    id: str
    op: pb.Op
    inputs: tuple[tuple[str, int], ...]


@cache
def llb(case: str) -> tuple[dict[str, Step], dict[str, str]]:
    """The case's ops by step id (inputs as step ids) and step id -> vertex digest."""
    raw = json.loads((ROOT / case / "llb.json").read_text())
    steps = {}
    for s in raw["llbDefinition"]:
        inputs = tuple((i.split(":")[0], int(i.split(":")[1])) for i in s.get("inputs", []))
        steps[s["id"]] = Step(s["id"], pb.Op.from_json(s["op"]), inputs)
    vertex = {v: k for k, v in raw["digestMapping"].items()}
    return steps, vertex


def with_inputs(step: Step, vertex: dict[str, str]) -> pb.Op:
    """The op with its inputs' vertex digests filled in, as it was marshalled."""
    ins = tuple(pb.Input(digest=vertex[s], index=i) for s, i in step.inputs)
    return replace(step.op, inputs=ins)


# --- context staging --------------------------------------------------------------------------


@cache
def staged_context(case: str) -> Path:
    """``stage-context.sh`` in Python: copy, dirs 0755, files 0644, then ``prepare.sh``."""
    dest = _new_dir(case) / "ctx"
    src = ROOT / case / "context"
    if src.is_dir():
        shutil.copytree(src, dest, symlinks=True)
    else:
        dest.mkdir()
    for dirpath, _dirnames, filenames in os.walk(dest):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
    prepare = ROOT / case / "prepare.sh"
    if prepare.exists():
        subprocess.run(["sh", str(prepare), str(dest)], check=True, capture_output=True)
    return dest


def context_tree(case: str, source: pb.SourceOp, digests: FileDigests | None = None) -> ContentTree:
    excludes = json.loads(source.attrs.get("local.excludepatterns", "[]"))
    matcher = PatternMatcher(excludes) if excludes else None

    def excluded(rel: str, is_dir: bool) -> bool:
        return matcher is not None and matcher.matches_using_parent(rel, None)[0]

    return ContentTree.for_context(staged_context(case), excluded=excluded, digests=digests)


# --- the model --------------------------------------------------------------------------------


@dataclass
class Model:
    """What mason computes for one case: digest -> (kind, preimage) and the cache records."""

    preimages: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)  # record digest -> what

    def add(self, kind: str, preimage: bytes) -> str:
        dgst = sha256_bytes(preimage)
        self.preimages[dgst] = (kind, preimage)
        return dgst

    def add_cache_map(self, kind: str, cm: CacheMap, outputs: tuple[int, ...], what: str) -> None:
        self.preimages[cm.digest] = (kind, cm.preimage)
        for out in outputs:
            rec = record_digest(cm.digest, out)
            self.preimages[rec] = ("string", f"{cm.digest}@{out}".encode())
            self.records[rec] = what


def _image_config(manifest_digest: str) -> dict[str, Any]:
    blobs = ROOT / "base-busybox/blobs/sha256"
    manifest = json.loads((blobs / manifest_digest.split(":")[1]).read_text())
    return json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())  # type: ignore[no-any-return]


def _source(
    model: Model,
    case: str,
    step: Step,
    trees: dict[str, ContentTree],
    digests: FileDigests | None = None,
) -> None:
    src = step.op.source
    assert src is not None
    ident = src.identifier
    if ident.startswith("docker-image://"):
        manifest = ident.rsplit("@", 1)[1]
        diff_ids = _image_config(manifest)["rootfs"]["diff_ids"]
        platform = step.op.platform or PLATFORM
        model.add("json", image_manifest_key_json(manifest, platform))
        by_manifest, by_layers = image_source_keys(manifest, platform, diff_ids)
        model.add_cache_map("string", by_manifest, (0,), f"{step.id} FROM (manifest)")
        model.add_cache_map("string", by_layers, (0,), f"{step.id} FROM (layers)")
    elif ident.startswith("http://") or ident.startswith("https://"):
        filename, checksum = src.attrs["http.filename"], src.attrs["http.checksum"]
        model.add("json", http_source_key_json(filename, checksum))
        model.add_cache_map(
            "string", http_source_key(filename, checksum), (0,), f"{step.id} {ident}"
        )
    elif ident == "local://context":
        trees[step.id] = context_tree(case, src, digests)


def _outputs(step_id: str, steps: dict[str, Step]) -> tuple[int, ...]:
    used = {i for s in steps.values() for sid, i in s.inputs if sid == step_id}
    return tuple(sorted(used)) or (0,)


def model_keys(
    case: str, from_dockerfile: bool = False, digests: FileDigests | None = None
) -> Model:
    """Every key mason computes for the case, from llb.json's ops or (``from_dockerfile``)
    from the ops ``mason.engine.llbplan`` builds from the case's Dockerfile; ``digests``: the
    context's kept per-file digests (``mason.engine.filedigests``)."""
    steps, _ = planned_steps(case) if from_dockerfile else llb(case)
    model = Model()
    trees: dict[str, ContentTree] = {}
    cache_maps: dict[str, CacheMap] = {}
    for step in steps.values():
        if step.op.source is not None:
            _source(model, case, step, trees, digests)
    for step in steps.values():
        op = step.op
        n = len(step.inputs)
        if op.exec is not None:
            cm = exec_cache_map(op.exec, op.platform or PLATFORM, n)
        elif op.file is not None:
            cm = file_cache_map(op.file, n)
        elif op.merge is not None:
            cm = merge_cache_map(op.merge)
        else:
            continue
        cache_maps[step.id] = cm
        model.add_cache_map("json", cm, _outputs(step.id, steps), f"{step.id} {_describe(op)}")
        for (src_id, out), dep in zip(step.inputs, cm.deps, strict=True):
            if dep.selector is not None:
                paths = _selector_preimage(step, cm, dep)
                if paths is not None:
                    model.add("string-list", paths)
            if dep.content is not None:
                tree = trees.get(src_id) or output_tree(case, steps[src_id], cache_maps, out)
                _content(model, step, tree, dep.content)
    _dockerfile(model, case)
    return model


def _content(model: Model, step: Step, tree: ContentTree, selectors: tuple[Selector, ...]) -> None:
    root = content_key(tree, selectors)
    for dgst, (kind, preimage) in tree.trace.items():
        model.preimages.setdefault(dgst, (kind, preimage))
    model.preimages[root.digest] = ("digest-list", root.preimage)
    model.preimages[root.record] = ("string", f"{root.digest}@-1".encode())
    model.records[root.record] = f"{step.id} content of {[s.path for s in selectors]}"


def reads_op_outputs(case: str) -> bool:
    """Whether the case has a content key over another op's output: its model rebuilds
    that output with its owners, which takes root (as a real build does)."""
    steps, _ = llb(case)
    for step in steps.values():
        op, n = step.op, len(step.inputs)
        cm = exec_cache_map(op.exec, op.platform or PLATFORM, n) if op.exec else None
        cm = file_cache_map(op.file, n) if op.file else cm
        for (src_id, _), dep in zip(step.inputs, cm.deps if cm else (), strict=False):
            src = steps[src_id].op.source
            if dep.content is not None and (src is None or src.identifier != "local://context"):
                return True
    return False


def model_cases() -> list[Any]:
    """``CASES`` for tests that build the model: those reading op outputs skip when not root."""
    import pytest

    not_root = os.geteuid() != 0
    reason = "rebuilding an op's output with its owners needs root"
    return [
        pytest.param(c, marks=pytest.mark.skipif(not_root and reads_op_outputs(c), reason=reason))
        for c in CASES
    ]


# --- other ops' outputs as snapshots ------------------------------------------------------------

_OUTPUT_TREES: dict[tuple[str, str], ContentTree] = {}


def output_tree(case: str, step: Step, cache_maps: dict[str, CacheMap], output: int) -> ContentTree:
    """Output ``output`` of ``step`` as the snapshot BuildKit checksums, rebuilt from what the
    case stores: an HTTP source's file from ``served/``, a file op on scratch from its own
    actions, any other op from its result's layers in the exported cache."""
    src = step.op.source
    key = src.identifier if src is not None else record_digest(cache_maps[step.id].digest, output)
    tree = _OUTPUT_TREES.get((case, key))
    if tree is None:
        if src is not None:
            root = _http_output(case, src)
        elif step.op.file is not None and not step.inputs:
            root = _scratch_file_output(step.op.file)
        else:
            root = _layers_output(case, key)
        tree = _OUTPUT_TREES[(case, key)] = ContentTree.for_snapshot(root)
    return tree


# One directory for every tree staged in this process, removed when the process ends.
_SCRATCH = tempfile.TemporaryDirectory(prefix="mason-llb-")


def _new_dir(what: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{what}-", dir=_SCRATCH.name))


def _http_output(case: str, src: pb.SourceOp) -> Path:
    """BuildKit's HTTP source result: one file, ``http.perm`` (default 0600), owned
    ``http.uid``:``http.gid``; its bytes are the case's ``served/`` file, checked
    against ``http.checksum``."""
    assert src.identifier.startswith(("http://", "https://")), src.identifier
    served = ROOT / case / "served" / src.identifier.rsplit("/", 1)[1]
    assert sha256_file(str(served))[0] == src.attrs["http.checksum"], served
    dest = _new_dir("http") / src.attrs["http.filename"]
    shutil.copyfile(served, dest)
    os.chmod(dest, int(src.attrs.get("http.perm", "0")) or 0o600)
    os.chown(dest, int(src.attrs.get("http.uid", "0")), int(src.attrs.get("http.gid", "0")))
    return dest.parent


def _scratch_file_output(op: pb.FileOp) -> Path:
    """A file op with no input (a heredoc's ``mkfile``): its mkfile/mkdir actions applied
    to an empty directory, owned 0:0 (no ``owner`` in these cases)."""
    root = _new_dir("mkfile")
    for action in op.actions:
        body = action.action
        if isinstance(body, pb.FileActionMkFile | pb.FileActionMkDir) and body.owner is None:
            target = root / body.path.lstrip("/")
            if isinstance(body, pb.FileActionMkFile):
                target.write_bytes(body.data)
            else:
                target.mkdir(parents=body.make_parents)
            os.chmod(target, body.mode)
        else:
            raise AssertionError(f"{body!r} on scratch is not modelled")
    return root


def _base_layers() -> set[str]:
    blobs = ROOT / "base-busybox/blobs/sha256"
    index = json.loads((ROOT / "base-busybox/index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    return {layer["digest"] for layer in manifest["layers"]}


def _layers_output(case: str, record: str) -> Path:
    """A result's layer chain from the exported cache, applied in order by mason's own
    layer applier. The base image's layer is not stored (1 MB): the cases' selections
    read only what later layers wrote, and a path only the base had would be missing
    and fail the checksum."""
    config = cache_config(case)
    rec = next((r for r in config["records"] if r["digest"] == record), None)
    assert rec is not None and rec.get("layers"), f"{case}: no result exported for {record}"
    chain = []
    index = rec["layers"][0]["layer"]
    while index != -1:
        layer = config["layers"][index]
        chain.append(layer["blob"])
        index = layer.get("parent", 0)  # Go's omitempty: a missing parent is layer 0
    root = _new_dir("layers")
    base = _base_layers()
    for blob in reversed(chain):
        if blob in base:
            continue
        with gzip.open(ROOT / case / "cache/blobs/sha256" / blob.split(":")[1]) as f:
            apply_layer(f, str(root))
    return root


def _selector_preimage(step: Step, cm: CacheMap, dep: Any) -> bytes | None:
    # The selector digest's preimage: file ops hash the reverse-sorted NUL-joined
    # paths, exec ops the NUL-joined mount paths; rebuild it to record the preimage.
    op = step.op
    paths: list[bytes] = []
    if op.file is not None:
        for a in op.file.actions:
            if a.copy is not None and a.secondary_input != -1:
                paths.append(a.copy.src.encode())
        candidates = [b"\0".join(sorted(paths, reverse=True))] + [p for p in paths]
    else:
        assert op.exec is not None
        candidates = [("/" + m.selector.lstrip("/")).encode() for m in op.exec.mounts]
    for c in candidates:
        if sha256_bytes(c) == dep.selector:
            return c
    return None


def _dockerfile(model: Model, case: str) -> None:
    # The Dockerfile is sent like a context file (0:0): its checksum is in keys.json too.
    model.add("file", b"")  # placeholder removed below; keeps the helper's shape simple
    model.preimages.pop(sha256_bytes(b""), None)
    dgst = header_digest(str(ROOT / case / "Dockerfile"), uid=0, gid=0)
    model.preimages[dgst] = ("file", b"")


def _describe(op: pb.Op) -> str:
    if op.exec is not None and op.exec.meta is not None:
        return "RUN " + " ".join(op.exec.meta.args)[:40]
    if op.file is not None:
        return "FILE " + ",".join(type(a.action).__name__ for a in op.file.actions)
    return "MERGE"


# --- comparison -------------------------------------------------------------------------------


@dataclass
class Coverage:
    case: str
    keys_total: Counter[str]
    keys_reproduced: Counter[str]
    keys_session: Counter[str]
    missing: list[KeyEntry]
    records_total: int
    records_reproduced: int
    records_missing: list[str]
    wrong: list[str]  # digests mason produced whose preimage differs from BuildKit's


def coverage(case: str, from_dockerfile: bool = False) -> Coverage:
    golden = keys(case)
    model = model_keys(case, from_dockerfile)
    total: Counter[str] = Counter()
    done: Counter[str] = Counter()
    session: Counter[str] = Counter()
    missing: list[KeyEntry] = []
    wrong = []
    for dgst, entry in golden.items():
        total[entry.type] += 1
        if entry.session_bound:
            session[entry.type] += 1
            continue
        got = model.preimages.get(dgst)
        if got is None:
            missing.append(entry)
            continue
        kind, preimage = got
        if entry.type == "file" or kind == "file":
            done[entry.type] += (
                1  # a file digest is header + content: equal digest is equal preimage
            )
        elif preimage == entry.data:
            done[entry.type] += 1
        else:
            wrong.append(dgst)
    records = [r["digest"] for r in cache_config(case)["records"]]
    rec_missing = [r for r in records if r not in model.records]
    return Coverage(
        case,
        total,
        done,
        session,
        missing,
        len(records),
        len(records) - len(rec_missing),
        rec_missing,
        wrong,
    )


def main(argv: list[str] | None = None) -> None:
    """The coverage table; ``--from-dockerfile`` builds each case's LLB from its Dockerfile
    (``mason.engine.llbplan``) instead of reading llb.json, and first compares the two."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.unit.llb.golden")
    parser.add_argument(
        "--from-dockerfile",
        action="store_true",
        help="build the LLB from the Dockerfile (mason.engine.llbplan), not llb.json",
    )
    from_dockerfile = parser.parse_args(argv).from_dockerfile
    if from_dockerfile:
        for case in CASES:
            m = compare_planned(case)
            print(
                f"{case:28} ops {m.ops_equal:2}/{m.total:2}  vertex digests {m.digests_equal:2}/{m.total:2}"
                + (f"  {m.differences}" if m.differences else "")
            )
    rows = []
    grand: Counter[str] = Counter()
    grand_done: Counter[str] = Counter()
    grand_session: Counter[str] = Counter()
    for case in CASES:
        c = coverage(case, from_dockerfile)
        grand += c.keys_total
        grand_done += c.keys_reproduced
        grand_session += c.keys_session
        n_total = sum(c.keys_total.values())
        n_sess = sum(c.keys_session.values())
        n_done = sum(c.keys_reproduced.values())
        rows.append(
            f"{case:28} keys {n_done:3}/{n_total - n_sess:3} (+{n_sess} session-bound)  "
            f"records {c.records_reproduced:2}/{c.records_total:2}  wrong {len(c.wrong)}"
            + (f"  missing {[(m.type, m.digest[:19]) for m in c.missing]}" if c.missing else "")
        )
    print("\n".join(rows))
    for t in sorted(grand):
        print(
            f"{t:12} {grand_done[t]:4}/{grand[t] - grand_session[t]:4} (+{grand_session[t]} session-bound)"
        )


# --- the LLB built from the Dockerfile (mason.engine.llbplan) ----------------------------------


def build_json(case: str) -> dict[str, Any]:
    return json.loads((ROOT / case / "build.json").read_text())  # type: ignore[no-any-return]


def context_excludes(case: str) -> list[str]:
    from mason.dockerfile.dockerignore import read_ignore_file

    ignore = ROOT / case / "context" / ".dockerignore"
    return read_ignore_file(ignore.read_bytes()) if ignore.exists() else []


@cache
def planned(case: str) -> Any:
    """``plan_llb`` for the case: its Dockerfile, build args, target and the golden base image.

    The context source's vertex digest includes ``local.session`` (the client's session
    id), which llb.json leaves out: the golden digest is passed in for it."""
    from mason.dockerfile import parse_dockerfile
    from mason.dockerfile.stages import plan_build
    from mason.engine.llbplan import BaseImage, plan_llb

    info = build_json(case)
    base = info["baseImage"]

    def resolve(ref: str, platform: pb.Platform) -> BaseImage:
        assert ref == base["ref"], ref
        assert platform == PLATFORM
        return BaseImage(base["manifestDigest"], _image_config(base["manifestDigest"]))

    df = parse_dockerfile((ROOT / case / "Dockerfile").read_bytes())
    args = dict(info["buildArgs"])
    plan = plan_build(df, build_args=args, target=info["target"])
    steps, vertex = llb(case)
    ctx = [
        vertex[s.id]
        for s in steps.values()
        if s.op.source and s.op.source.identifier.startswith("local://")
    ]
    return plan_llb(
        plan,
        resolve=resolve,
        platform=PLATFORM,
        build_args=args,
        exclude_patterns=context_excludes(case),
        context_digest=ctx[0] if ctx else None,
    )


def planned_steps(case: str) -> tuple[dict[str, Step], dict[str, str]]:
    """``llb(case)``'s shape for the planned ops: step ids by position, inputs as step ids."""
    definition = planned(case)
    ids = {v.digest: f"step{i}" for i, v in enumerate(definition.vertices)}
    steps = {}
    for v in definition.vertices:
        inputs = tuple((ids[i.digest], i.index) for i in v.op.inputs)
        steps[ids[v.digest]] = Step(ids[v.digest], replace(v.op, inputs=()), inputs)
    return steps, {sid: d for d, sid in ids.items()}


def _without_session(op: pb.Op) -> pb.Op:
    """The op as llb.json renders it: a local source without ``local.session``."""
    if op.source is None or "local.session" not in op.source.attrs:
        return op
    attrs = {k: v for k, v in op.source.attrs.items() if k != "local.session"}
    return replace(op, source=replace(op.source, attrs=attrs))


@dataclass
class OpsMatch:
    case: str
    total: int
    ops_equal: int
    digests_equal: int
    differences: list[str]


def compare_planned(case: str) -> OpsMatch:
    """The planned ops against llb.json, position by position: each op field by field
    (inputs as the golden step ids) and each vertex digest against ``digestMapping``."""
    gsteps, gvertex = llb(case)
    psteps, pvertex = planned_steps(case)
    golden_list, planned_list = list(gsteps.values()), list(psteps.values())
    diffs: list[str] = []
    if len(golden_list) != len(planned_list):
        diffs.append(f"{len(planned_list)} ops planned, llb.json has {len(golden_list)}")
    rename = {p.id: g.id for g, p in zip(golden_list, planned_list, strict=False)}
    ops_equal = digests_equal = 0
    for g, p in zip(golden_list, planned_list, strict=False):
        p_inputs = tuple((rename.get(s, s), i) for s, i in p.inputs)
        if _without_session(p.op) == g.op and p_inputs == g.inputs:
            ops_equal += 1
        else:
            diffs.append(
                f"{g.id}: planned {_brief(p.op)} inputs {p_inputs}; "
                f"golden {_brief(g.op)} inputs {g.inputs}"
            )
        if pvertex[p.id] == gvertex[g.id]:
            digests_equal += 1
        else:
            diffs.append(f"{g.id}: vertex digest {pvertex[p.id][:19]} != {gvertex[g.id][:19]}")
    return OpsMatch(case, len(golden_list), ops_equal, digests_equal, diffs)


def _brief(op: pb.Op) -> str:
    from mason.llb.gojson import go_json

    return go_json(op).decode()[:400]


if __name__ == "__main__":
    main()
