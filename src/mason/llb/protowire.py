"""A minimal protobuf wire-format writer, deterministic as Go's ``proto.MarshalOptions{Deterministic: true}``.

BuildKit names each LLB vertex by the sha256 of its marshalled ``pb.Op``, so the
bytes must be Go's: fields in field-number order, proto3 scalars left out when
zero (except a set oneof member), messages written when present even if empty,
repeated varints packed, map entries sorted by key with key and value always
written, negative int32/int64 as ten-byte two's-complement varints. Only what
the LLB messages use is here (no groups, fixed-width or zigzag types).
"""

from __future__ import annotations

__all__ = ["encode_varint", "field_bytes", "field_varint", "packed_varints", "tag"]

_WIRE_VARINT = 0
_WIRE_LEN = 2
_MASK64 = (1 << 64) - 1
#: one-byte varints, the most common (tags, short lengths, small numbers), made once
_ONE_BYTE = tuple(bytes((i,)) for i in range(128))


def encode_varint(value: int) -> bytes:
    """Base-128 varint; negatives as their 64-bit two's complement (as Go casts int32/int64)."""
    if 0 <= value < 128:
        return _ONE_BYTE[value]
    if value < 0:
        value &= _MASK64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return encode_varint((number << 3) | wire_type)


def field_varint(number: int, value: int) -> bytes:
    return tag(number, _WIRE_VARINT) + encode_varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    return tag(number, _WIRE_LEN) + encode_varint(len(payload)) + payload


def packed_varints(number: int, values: list[int] | tuple[int, ...]) -> bytes:
    if not values:
        return b""
    return field_bytes(number, b"".join(encode_varint(v) for v in values))
