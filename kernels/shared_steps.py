"""A SHARED model's chunk split across threads: the chunk loop, run by each thread on its own
part of the batch up to the next point where the weights may change, and the one update of that
point, taken from the parts' gradients summed in part order.

The chunk loop (``chunk.py``) takes up to three stages at every position t: NEXT (NEXT_INPUT: the
pending steps are scored against this input), EVICT (TBPTT with late labels: steps about to
leave the ring are learned) and STEP (the forward, and in EXPLICIT mode the step's loss). Each
stage may end in one summed update, and the next stage must see its weights. Stage i of the
chunk is position i // 3, stage i % 3. ``run_stages`` (``chunk.run_stages``, which is also
the loop of one whole call) runs the stages [i0, i1) of one part: the
forward, the losses, the rules' gradients and the TBPTT windows' backward, with the gradients
left in the part's buffers, not applied; the caller (``service/engine/shared_parts.py``) asks
for no more stages than can pass without an update. ``apply_parts`` then sums the parts in part
order and takes ``_flush_shared``'s one update, so the result depends on the parts (the worker
count), never on which thread finished first.

What comes out equals one call's, counters, skips, clipping and gradient norms included, but
for the order of the gradient sum: a stream's own gradient and its finiteness check are as in
one call; a TBPTT window group (the streams whose windows have the same length) is summed per
part and its parts added in order before the group's finiteness check, which one call makes
on the whole group (kernels/README.md, "Shared weights across threads").

Buffers of one part: acc = (gsum [P], contrib [Bp]) as ``updates._contribute`` takes them;
groups = (gwin [K, P] a window group's sum per window length n (row n - 1), gused [K],
glead [K] the group's first stream (within the part), member [Bp] the n of a stream's group,
0 when none); scratch = (st, st1, cache, Z, x [Bp, *], need_bwd [Bp], dz [1, O], Mtmp,
empty_target [O]): the loop's arrays, kept between calls.
"""
import numpy as np
from numba import njit

# run_stages is the chunk loop itself (chunk.py); the stages' names plan the parts' meeting points
from .chunk import STAGE_EVICT, STAGE_NEXT, STAGE_STEP, STAGES, run_stages  # noqa: F401
from .updates import _contribute_group, _flush_shared


@njit(cache=True, nogil=True)
def apply_parts(model, weights, pool, batch, out, acc, groups, starts):
    """The one update of a stage from every part's gradients: the streams' own gradients
    summed part by part, then each TBPTT window group (in the order one call takes them: by
    its first stream in the batch) summed over the parts, checked whole (a non-finite group
    is skipped, as one call skips it) and added; then ``updates._flush_shared``. Clears the
    parts' buffers. acc = (gsum [parts, P], contrib [B]); groups = (gwin [parts, K, P],
    gused [parts, K], glead [parts, K], member [B]); starts [parts + 1]: the parts' rows."""
    gsum, contrib = acc
    gwin, gused, glead, member = groups
    parts, P = gsum.shape[0], gsum.shape[1]
    K = gwin.shape[1]
    total = np.zeros(P, dtype=gsum.dtype)
    for p in range(parts):
        if contrib[starts[p]:starts[p + 1]].any():
            total += gsum[p]
            gsum[p, :] = 0.0
    first = np.full(K, starts[parts], dtype=np.int64)  # a group's first stream in the batch
    for n in range(K):
        for p in range(parts):
            if gused[p, n]:
                first[n] = starts[p] + glead[p, n]
                break
    for j in np.argsort(first, kind="mergesort"):
        if first[j] == starts[parts]:
            break
        g = np.zeros(P, dtype=gsum.dtype)
        for p in range(parts):
            if gused[p, j]:
                g += gwin[p, j]
                gused[p, j] = False
        members = np.nonzero(member == j + 1)[0]
        member[members] = 0
        # as one call hands a whole group on: into the sum if finite, else skipped per stream
        _contribute_group(model, pool, batch, out, (total, contrib), members, g)
    _flush_shared(model, weights, pool, batch, out, (total, contrib))
