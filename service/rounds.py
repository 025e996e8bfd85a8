"""Shared-weight rounds: the replicas' copies of a SHARED model, combined through the store.

Each replica learns locally from the streams it serves. Every ``share_interval_s`` of wall
time (round r ends at (r + 1) x interval; replicas' clocks agree to well under a second, as
NTP keeps them) each replica that made updates in the round writes its weights and its update
count n_i. After a short grace for the others, the first replica to ask combines the round,
once, as the update-weighted mean

    W = sum_i n_i W_i / sum_i n_i      (replicas in a fixed order, float64 sums),

which every replica then adopts, keeping the updates it made meanwhile (``W + (W_now -
W_contributed)``): federated averaging weighted by the work each copy did (McMahan et al.
2017). Optimizer moments stay local. A replica whose contribution arrives after the combine
adopts the result and loses that round's updates (it was paused or cut off).
"""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

log = logging.getLogger(__name__)


def combine(parts: list[tuple[str, int, dict]]) -> dict | None:
    """The update-weighted mean of the contributions (replica, updates, weights); None when
    no replica made an update."""
    parts = [p for p in parts if p[1] > 0]
    total = sum(n for _, n, _ in parts)
    if not total:
        return None
    names = parts[0][2].keys()
    return {k: sum(np.float64(n) / total * w[k].astype(np.float64) for _, n, w in parts).astype(np.float32)
            for k in names}


async def one_round(registry, host, round_no: int, grace_s: float) -> bool:
    """Contribute this replica's copy of ``host``'s weights to ``round_no``, then adopt the
    combination; True when the weights changed."""
    store, engine = registry.store, host.engine
    updates_now = host.updates
    made = updates_now - getattr(host, "round_base_updates", 0)  # 0: created here, counted from its start
    snapshot = await host.serial.call(engine.state_dict, None)
    if made > 0:
        await store.call(store.put_round, host.name, round_no, made, snapshot)
    host.round_base_updates = updates_now
    await asyncio.sleep(grace_s)  # the other replicas' contributions of this round
    combined = await store.call(store.combine_round, host.name, round_no, combine)
    if combined is None or host.closed:
        return False

    def adopt():  # on the model's worker, between chunks: the updates made since the snapshot stay
        now = engine.state_dict(None)
        engine.load_state_dict({k: combined[k] + (now[k] - snapshot[k]) for k in combined}, None)
        host.model_dirty = True

    await host.serial.call(adopt)
    return True


async def run(registry, interval_s: float) -> None:
    """Rounds for every SHARED model of this replica, forever (cancelled at shutdown)."""
    grace_s = min(1.0, interval_s / 4)
    while True:
        round_no = int(time.time() // interval_s)
        await asyncio.sleep(max(0.0, (round_no + 1) * interval_s - time.time()))
        hosts = [h for h in list(registry.hosts.values()) if h.spec.sharing == "shared"]
        results = await asyncio.gather(*(one_round(registry, h, round_no, grace_s) for h in hosts),
                                       return_exceptions=True)
        for host, result in zip(hosts, results):
            if isinstance(result, BaseException):
                log.error("weight round %d of model %s failed", round_no, host.name, exc_info=result)
