"""The CPU side of an Engine: numba's kernels (or, on a cold start, the interpreted build:
``kernel_tier``) run on the engine's own host arrays, so nothing is copied anywhere.

The engine talks to its backend through one interface, which ``cuda_backend.CudaBackend``
implements too: ``push``/``pull`` (streams' columns to/from where the kernels keep them),
``push_shared``/``pull_shared`` (a SHARED model's weights), ``run_chunk``, ``learn_labels`` and
``learn_pending`` (late labels; CPU only, ``Spec`` refuses them on CUDA).
"""
from __future__ import annotations

import functools

import numpy as np

from rnnstream.kernels import codes as kc
from rnnstream.kernels.bundles import BATCH_LEARN, BATCH_SLOTS

from . import kernel_tier, shards, shared_parts


class CpuBackend:
    """``model``: the kernels' model bundle; ``bundles()``: the current (weights, pool)
    bundles (rebuilt by the engine when its pool grows); ``per_stream``: streams own their
    weights, so a large batch may be split across threads (``shards``); a SHARED model's large
    batch is split too, meeting at every update (``shared_parts``)."""

    def __init__(self, model, bundles, per_stream: bool):
        self.model = model
        self.bundles = bundles
        self.per_stream = per_stream

    # the host arrays are the kernels' arrays: nothing to move
    def push(self, slots):
        pass

    def pull(self, slots):
        pass

    def push_shared(self):
        pass

    def pull_shared(self):
        pass

    def learn_labels(self, kbatch, lab, out):
        weights, bundle = self.bundles()
        kernel_tier.active().chunk.learn_labels(self.model, weights, bundle, kbatch, lab, out)

    def learn_pending(self, kbatch, reset, out):
        weights, bundle = self.bundles()
        kernel_tier.active().chunk.learn_pending(self.model, weights, bundle, kbatch, reset, out)

    def run_chunk(self, kbatch, out):
        weights, bundle = self.bundles()
        tier = kernel_tier.active()
        kernels = tier.chunk
        B = kbatch[BATCH_SLOTS].shape[0]
        if self.per_stream:
            runs = shards.parts(B)
        elif tier is kernel_tier.COMPILED:  # the interpreted build: one call
            runs = shards.parts(B, shards.MIN_SHARED_STREAMS_PER_PART)
        else:
            runs = [(0, B)]
        if len(runs) == 1:
            kernels.run_chunk(self.model, weights, bundle, kbatch, out)
        elif self.per_stream:
            self._run_parts(kernels, weights, bundle, kbatch, out, runs)
        else:
            shared_parts.run_chunk(self.model, weights, bundle, kbatch, out, runs)

    def _run_parts(self, kernels, weights, bundle, kbatch, out, runs):
        """run_chunk on disjoint runs of a PER_STREAM batch's streams, side by side: their
        predictions and losses land in ``out``'s rows, the counters add up, and the gradient
        norms follow those already in ``out``'s gnorms, in the runs' order (as one call writes them
        after the ones before it)."""
        preds, losses, res, gnorms = out
        learn = kbatch[BATCH_LEARN]

        def call(start, stop):
            part_res = np.zeros_like(res)
            part_norms = np.empty(2 * (stop - start) * (preds.shape[1] + 1) + 1)
            kernels.run_chunk(self.model, weights, bundle,
                              tuple(a[start:stop] for a in kbatch[:BATCH_LEARN]) + (learn,),
                              (preds[start:stop], losses[start:stop], part_res, part_norms))
            return part_res, part_norms[:part_res[kc.R_UPDATES]]

        results = shards.run([functools.partial(call, start, stop) for start, stop in runs])
        for part_res, norms in results:
            done = res[kc.R_UPDATES]
            gnorms[done:done + norms.shape[0]] = norms
            res += part_res
