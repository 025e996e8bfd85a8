"""How the benchmarks time things on a shared, noisy machine: the best of repeated runs, rounds
that take every way compared in turn, and what the machine allows now (its float32 peak, its
two-thread ceiling), measured in the same run as the ratios read against them."""
from __future__ import annotations

import time

import numpy as np


def timed(fn, repeats=3):
    """The best of ``repeats`` runs: these machines are shared and noisy, and the fastest run
    is the one least disturbed. Both sides of every ratio are timed the same way."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def alternating(blocks, ways, run):
    """The best steps/s of each way over ``blocks`` rounds that take every way in turn (a shared,
    noisy machine: the fastest run is the one least disturbed, and both sides see the same load)."""
    best = {}
    for _ in range(blocks):
        for way in ways:
            best[way] = max(best.get(way, 0.0), run(way))
    return best


def measured_peak(threads):
    """float32 GFLOP/s of a 2048^3 matmul with numpy's BLAS at ``threads`` threads."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    with threadpool_limits(threads, user_api="blas"):
        a @ a
        best = min(timed(lambda: a @ a) for _ in range(3))
    return 2 * 2048 ** 3 / best / 1e9


def two_thread_ceiling(n=20_000_000, blocks=3):
    """How much faster two threads run a compiled loop than one thread runs it twice, now: the
    most any 2-worker ratio of this run can show (on a quiet 2-core machine about 2; another
    process's load takes its share)."""
    import threading

    from numba import njit

    @njit(nogil=True)
    def spin(n):
        s = 0.0
        for i in range(n):
            s += np.sqrt(i * 1.0)
        return s

    spin(10)

    def run(threads):
        t0 = time.perf_counter()
        if threads == 1:
            spin(n)
            spin(n)
        else:
            pair = [threading.Thread(target=spin, args=(n,)) for _ in range(2)]
            for t in pair:
                t.start()
            for t in pair:
                t.join()
        return 1.0 / (time.perf_counter() - t0)

    best = alternating(blocks, (1, 2), run)
    return best[2] / best[1]
