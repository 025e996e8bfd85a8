"""The server's memory budget: what a model and each of its streams really hold.

Streams are counted by the engine's own pool arrays (bytes per slot), not by a formula, so
a TBPTT window or an RTRL sensitivity counts at its allocated size; a model by its weights,
optimizer state and start template. Buffered request bytes come from the servicer's gauge.
"""
from __future__ import annotations

import os
import pathlib

DEFAULT_SHARE = 0.8  # of the cgroup limit or of RAM: the rest is the interpreter, gRPC, temporaries
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory_bytes() -> int:
    """The memory this process may use: its cgroup's limit when it has one, else physical RAM."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_LIMITS:
        try:
            text = pathlib.Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < ram:  # "max", or v1's huge "no limit" value
            return int(text)
    return ram


def default_budget() -> int:
    return int(machine_memory_bytes() * DEFAULT_SHARE)


def _engines(engine) -> list:
    return list(getattr(engine, "members", None) or [engine])


def stream_bytes(engine, estimate: int) -> int:
    """Bytes one stream takes in ``engine``'s pools (at least ``estimate``). Read once, when
    the engine is new and no worker uses it: the pool grows later, its slots do not."""
    real = 0
    for e in _engines(engine):
        pool = getattr(e, "pool", None)
        if pool is None or not pool.capacity:
            return estimate
        real += sum(a.nbytes for a in pool.arrays.values()) // pool.capacity
    return max(real, estimate)


def model_bytes(num_parameters: int, shared: bool) -> int:
    """Weights, optimizer moments and the start template (float32); PER_STREAM: the template."""
    return 4 * num_parameters * (4 if shared else 1)
