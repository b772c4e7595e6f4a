"""`mason cache inspect DIR` on BuildKit's local caches and on one mason wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.cache.cache_fakes import FakeBlobStore, key

from mason.cache import export_cache
from mason.cache.model import SolvedRecord
from mason.cache.options import parse_cache_to
from mason.cli.main import main


@pytest.mark.parametrize("name", ["zstd", "zstd-docker", "estargz", "estargz-oci-force"])
def test_inspect_buildkit_local_cache(
    testdata: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "inspect", str(testdata / "compression" / name), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["records"], summary["recordsWithResults"], len(summary["layers"])) == (11, 7, 8)
    expected = {"zstd", "gzip"} if name.startswith("zstd") and "force" not in name else None
    compressions = {layer["compression"] for layer in summary["layers"]}
    if expected:
        assert compressions == expected
    if name == "estargz-oci-force":
        assert compressions == {"estargz"}
    assert summary["totalSize"] == sum(layer["size"] for layer in summary["layers"])
    assert summary["writtenBy"].startswith("unknown")


def test_inspect_shows_mason_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = FakeBlobStore()
    base = store.add_layer(b"base")
    run = store.add_layer(b"run")
    records = [
        SolvedRecord(key("from"), (), (base,), step="[1/2] FROM base"),
        SolvedRecord(key("run"), (key("from"),), (base, run), step="[2/2] RUN make"),
    ]
    [opts] = parse_cache_to(f"type=local,dest={tmp_path},mode=max")
    export_cache(opts, records, blobs=store, image_diff_ids=None)
    assert main(["cache", "inspect", f"oci-layout://{tmp_path}:latest"]) == 0
    text = capsys.readouterr().out
    assert "Written by: mason" in text
    assert "[2/2] RUN make" in text and "2 with results" in text


def test_inspect_missing_dir_tag_fails_clearly(
    testdata: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "inspect", str(testdata / "compression" / "zstd"), "--tag", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
