"""Racy files (as in git's index): when a file's ``lstat`` may be trusted to say that its bytes
did not change since a moment. A file whose mtime or ctime is not safely older than the moment
its stat was taken could change again within the same timestamp tick without any of them
changing. ctime cannot be set from user space: ``touch -d`` can put an mtime back, never a
ctime."""

from __future__ import annotations

import os

__all__ = ["file_identity", "racy_margin_ns", "settled"]

_SECOND = 1_000_000_000
#: The smallest margin: a timestamp is the kernel's coarse clock, at most a tick (10 ms at
#: HZ=100) behind the clock ``time.time_ns`` reads.
_MIN_MARGIN = 50_000_000


def racy_margin_ns(st: os.stat_result) -> int:
    """How much older than the recording moment the file's times must be to be trusted: twice
    the timestamps' apparent granularity (the largest power of ten up to a second dividing
    both: 2 s on a filesystem with whole seconds, FAT's 2 s included), at least 50 ms."""
    unit = _SECOND
    while unit > 1 and (st.st_mtime_ns % unit or st.st_ctime_ns % unit):
        unit //= 10
    return max(_MIN_MARGIN, 2 * unit)


def file_identity(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    """What an entry is keyed by: the file (device, inode) and every stat field a change of
    its bytes or its header moves (size, mtime, ctime, mode)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def settled(st: os.stat_result, recorded_ns: int) -> bool:
    """The file's times are safely older than ``recorded_ns`` (a clock read before its stat)."""
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    # most files are older than the largest margin: no need to work out theirs
    return newest + 2 * _SECOND <= recorded_ns or newest + racy_margin_ns(st) <= recorded_ns
