"""A PER_STREAM model's batch split across threads: its streams are independent models (their
own weights, optimizer state and statistics), so a large batch runs as a few kernel calls on
disjoint runs of streams, side by side (the kernels release the GIL). Each stream's numbers are
bit for bit those of one call: nothing in a PER_STREAM call depends on the other streams.

A SHARED model's batch is split too, but its parts meet at every update
(``shared_parts.py``): the parts' gradients are summed in part order and one update applied.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading

# below this many streams per part, handing a part to a thread costs more than it saves
MIN_STREAMS_PER_PART = 16
# a SHARED model's parts also meet at every update (RTRL, SnAp-1, TBPTT(1, k2): every step),
# ~70 us of thread hand-off and kernel calls each: 2 parts of LSTM(32) streams ran TBPTT(16,16)
# 1.73x one call from 32 streams per part, TBPTT(1,1) only 1.05x at 64 and 1.18x at 128
# (bench.bench_engine --shared-parts)
MIN_SHARED_STREAMS_PER_PART = 128

_lock = threading.Lock()
_threads = 0
_executor: concurrent.futures.ThreadPoolExecutor | None = None


class _ThisThread(threading.local):
    parts = 0  # > 0: split every batch of at least this many streams into this many parts


_this_thread = _ThisThread()


def cores() -> int:
    """The cores this process may run on (its CPU affinity), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def set_threads(threads: int) -> None:
    """How many parts a batch may be split into (the server passes ``--workers``); 0: the cores
    this process may use."""
    global _threads, _executor
    with _lock:
        _threads = threads if threads > 0 else cores()
        if _executor is not None:
            _executor.shutdown(wait=False)
            _executor = None


def parts(B: int, min_per_part: int | None = None) -> list[tuple[int, int]]:
    """The runs [start, stop) of a B-stream batch, one per thread, each of at least
    ``min_per_part`` streams (default ``MIN_STREAMS_PER_PART``); one run when not worth it."""
    if _this_thread.parts:
        n = min(_this_thread.parts, B)
    else:
        most = B // (min_per_part or MIN_STREAMS_PER_PART)
        # a batch too small to split (every 1-step call of one stream) asks the OS nothing
        n = min(_threads or cores(), most) if most > 1 else 1
    if n <= 1:
        return [(0, B)]
    edges = [B * i // n for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


@contextlib.contextmanager
def split_in_this_thread(n: int = 2):
    """Calls from this thread split every batch of n or more streams into n parts, whatever
    its size: ``warm_up`` compiles the split kernels with a tiny model."""
    _this_thread.parts = n
    try:
        yield
    finally:
        _this_thread.parts = 0


def run(calls) -> list:
    """Each callable of ``calls`` on the part threads; their results in order. These threads
    never wait on anything, so a call made from a worker thread cannot deadlock."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=_threads or cores(),
                                                              thread_name_prefix="engine-part")
        executor = _executor
    futures = [executor.submit(call) for call in calls[1:]]
    first = calls[0]()  # the caller's thread takes the first part
    return [first] + [f.result() for f in futures]
