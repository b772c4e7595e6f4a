"""Small engine parts the unit tests build: a one-file layer stored in a content store, a
``RUN true`` step."""

from __future__ import annotations

import io
import tarfile
from typing import Any, BinaryIO

from mason.digest import Digest, sha256_bytes
from mason.engine.blobs import Blobs
from mason.engine.ops import ExecOp
from mason.engine.state import LayerRef

__all__ = ["one_file_tar", "run_true", "stored_layer"]


def one_file_tar(name: str) -> bytes:
    """A layer tar holding one 4-byte file ``name``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.size = 4
        tf.addfile(info, io.BytesIO(b"data"))
    return buf.getvalue()


def stored_layer(blobs: Blobs, name: str) -> LayerRef:
    """``one_file_tar(name)`` stored as a layer the build made."""
    tar = one_file_tar(name)

    def write(stream: BinaryIO) -> Digest:
        stream.write(tar)
        return sha256_bytes(tar)

    return blobs.store_layer(write)


def run_true(env: Any) -> ExecOp:
    """``RUN true`` in ``env`` (a stand-in is enough where nothing runs)."""
    return ExecOp(
        env,
        args=("true",),
        environ=(),
        cwd="/",
        user="",
        network="default",
        mounts=(),
        files={},
        lines=(1,),
        display="RUN true",
    )
