"""How often the server's Python runs its cycle collector.

With thousands of open streams the default thresholds (700, 10, 10) ran a collection every few
hundred calls, and a full one every few seconds that scanned every live object: under a
3000-stream load (``python -m bench.load``) the collector held the GIL for 3.2 s of a 25 s run,
pauses of ~0.4 s that every call and health check waited behind. The server makes little
cyclic garbage, so it collects far less often, and never scans what it loaded before serving.
"""
from __future__ import annotations

import gc

# young-generation allocations between collections, then the older generations' ratios
THRESHOLDS = (50_000, 20, 100)


def collect_less() -> tuple[int, int, int]:
    """Freeze what exists now (kernels, modules, loaded models) out of every later collection
    and raise the thresholds; returns the thresholds in force before."""
    before = gc.get_threshold()
    gc.collect()  # what is garbage now is freed, not frozen
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return before
