from __future__ import annotations

import hashlib
import io
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mason import digest as digest_module
from mason.digest import (
    Digest,
    HashingWriter,
    VerifyingReader,
    canonical_json,
    digest_of,
    hasher_for,
    parse_digest,
    sha256_bytes,
    verify_chunks,
)
from mason.errors import DigestMismatchError


def test_sha256_bytes_known_value() -> None:
    assert sha256_bytes(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_parse_digest_rejects_uppercase_and_short() -> None:
    with pytest.raises(Exception, match="invalid digest"):
        parse_digest("sha256:ABC")


def test_verifying_reader_accepts_matching_content() -> None:
    data = b"hello" * 1000
    reader = VerifyingReader(io.BytesIO(data), sha256_bytes(data), len(data))
    out = b""
    while chunk := reader.read(333):
        out += chunk
    assert out == data


def test_verifying_reader_names_both_digests_on_mismatch() -> None:
    expected = sha256_bytes(b"good")
    reader = VerifyingReader(io.BytesIO(b"evil"), expected, 4)
    with pytest.raises(DigestMismatchError) as info:
        while reader.read(2):
            pass
    assert expected in str(info.value)
    assert sha256_bytes(b"evil") in str(info.value)


def test_verifying_reader_rejects_oversized_stream() -> None:
    reader = VerifyingReader(io.BytesIO(b"toolong"), sha256_bytes(b"to"), 2)
    with pytest.raises(DigestMismatchError, match="more data than announced"):
        reader.read()


def test_verify_chunks_detects_truncation() -> None:
    data = b"abcdef"
    with pytest.raises(DigestMismatchError):
        list(verify_chunks([b"abc"], sha256_bytes(data), len(data)))


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == canonical_json({"a": [1, "é"], "b": 1})


def test_hashing_writer_passes_through_and_hashes() -> None:
    sink = io.BytesIO()
    w = HashingWriter(sink)
    assert w.write(b"hello ") == 6
    assert w.write(memoryview(b"world")) == 5
    w.write(bytearray(b"!"))
    w.flush()
    assert sink.getvalue() == b"hello world!"
    assert w.size == 12
    assert w.digest == sha256_bytes(b"hello world!")


def test_hashing_writer_without_inner_only_hashes_and_supports_sha512() -> None:
    w = HashingWriter(None, "sha512")
    w.write(b"abc")
    assert w.digest == "sha512:" + hashlib.sha512(b"abc").hexdigest()
    assert parse_digest(w.digest) == w.digest
    with pytest.raises(Exception, match="unsupported digest algorithm"):
        HashingWriter(None, "md5")


def test_verifying_reader_is_a_raw_stream_for_buffered_readers() -> None:
    data = bytes(range(256)) * 300
    buffered = io.BufferedReader(
        VerifyingReader(io.BytesIO(data), sha256_bytes(data), len(data)), 4096
    )
    assert buffered.read() == data


def test_verifying_reader_reports_a_mismatch_before_raising() -> None:
    seen: list[DigestMismatchError] = []
    reader = VerifyingReader(io.BytesIO(b"evil"), sha256_bytes(b"good"), 4, on_mismatch=seen.append)
    with pytest.raises(DigestMismatchError):
        io.BufferedReader(reader).read()
    assert len(seen) == 1 and sha256_bytes(b"good") in str(seen[0])


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=3000), max_size=8),
    budget=st.integers(min_value=0, max_value=12000),
    algorithm=st.sampled_from(["sha256", "sha512"]),
)
def test_a_running_hash_is_hashlibs_whichever_implementation_takes_it(
    chunks: list[bytes], budget: int, algorithm: str
) -> None:
    """The interpreter's own hash takes the bytes while the budget lasts, OpenSSL's the rest
    (kept bytes first): the digest is hashlib's either way, and one past the budget switches."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(digest_module, "_openssl_loaded", lambda: False)
        mp.setattr(digest_module, "_builtin_left", budget)
        h = hasher_for(Digest(f"{algorithm}:"))
        for chunk in chunks:
            h.update(memoryview(chunk) if len(chunk) % 2 else chunk)
        assert digest_of(h) == f"{algorithm}:{hashlib.new(algorithm, b''.join(chunks)).hexdigest()}"
        assert h.digest() == hashlib.new(algorithm, b"".join(chunks)).digest()
        switched = sum(len(c) for c in chunks) > budget
        assert (h._h is not None) == switched  # which one hashed


def test_a_fresh_interpreter_loads_openssls_hashes_only_past_the_budget() -> None:
    """Documents and small files are hashed with no ``hashlib`` (libcrypto, ~3 ms to load);
    more than the budget loads it, and the digests are the same."""
    script = (
        "import sys\n"
        "from mason.digest import sha256_bytes, new_sha256, _BUILTIN_BYTES\n"
        "small = [sha256_bytes(b'%d' % i * 100) for i in range(50)]\n"
        "before = 'hashlib' in sys.modules\n"
        "h = new_sha256()\n"
        "for _ in range(4):\n"
        "    h.update(b'x' * (_BUILTIN_BYTES // 3))\n"
        "print(before, 'hashlib' in sys.modules, small[7], h.hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    from mason.digest import _BUILTIN_BYTES

    assert out[:2] == ["False", "True"]
    assert out[2] == "sha256:" + hashlib.sha256(b"7" * 100).hexdigest()
    assert out[3] == hashlib.sha256(b"x" * (_BUILTIN_BYTES // 3) * 4).hexdigest()
