"""Give memory back to the system between cycles.

A cycle over 10,000 contacts allocates some 25 MB of short-lived objects
(planner inputs, rendered blocks). Python frees them, but the C allocator
keeps the freed pages mapped, so a daemon that idles for hours would hold
its peak. After each cycle the daemon collects garbage and asks glibc to
return free heap pages (`malloc_trim(3)`); elsewhere only the collection
runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked = False


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _looked
    if not _looked:
        _looked = True
        name = ctypes.util.find_library("c")
        try:
            fn = ctypes.CDLL(name).malloc_trim if name else None
        except OSError:
            fn = None  # not glibc (musl, macOS): nothing to trim
        if fn is not None:
            fn.argtypes = [ctypes.c_size_t]
            fn.restype = ctypes.c_int
            _trim = fn
    return _trim


def release() -> None:
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
