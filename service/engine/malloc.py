"""Keep freed memory in the process instead of handing it back to the kernel at once.

A batched call over many streams allocates temporaries of megabytes every step (gate blocks,
the TBPTT window). glibc serves blocks above its mmap threshold with fresh mmap'd pages and
unmaps them on free, so every step page-faults and zeroes its memory again: about a fifth of
a 1024-stream LSTM step (bench/bench_engine.py). Raising the mmap threshold to glibc's
ceiling (32 MiB), the trim threshold and the top pad keeps those pages in the heap for the next step.
Process-wide and harmless elsewhere; ``RNNSTREAM_MALLOC_TUNING=0`` leaves glibc's defaults.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 512 * 1024 * 1024
TOP_PAD = 64 * 1024 * 1024  # grow the heap in large steps: fewer brk calls and faults

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process; returns whether it took effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("RNNSTREAM_MALLOC_TUNING", "1") == "0":
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return _done
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = all([mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                 mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                 mallopt(_M_TOP_PAD, TOP_PAD)])
    if not _done:
        log.warning("mallopt refused the engine's settings; glibc's defaults stay")
    return _done
