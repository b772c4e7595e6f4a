"""Small archives the builder tests ADD."""

from __future__ import annotations

import gzip
import io
import tarfile

__all__ = ["inside_archive_gz"]


def inside_archive_gz() -> bytes:
    """A gzip tar of ``inside/one.txt`` and ``inside/two.txt`` (mode 0640), byte-stable."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("inside/one.txt", b"one\n"), ("inside/two.txt", b"two\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)
