"""CUDA twin of ``kernels/optim.py``: torch.optim's SGD (momentum, nesterov), Adam, RMSprop
and Adagrad, clipping by global norm (``clip_grad_norm_``: coef = clip / (norm + 1e-6), applied
when below 1) and weight decay added after clipping.

Per-stream weights: the stream's thread updates its own column (``apply_update``). Shared
weights: the per-stream gradients are summed on the device (``k_reduce_part``, then
``k_reduce_final``: lanes of a warp read consecutive streams of one row), then one block takes the norm
(``k_norm``) and a grid-stride kernel steps every parameter (``k_apply``).

As on the CPU, a step is computed whole before anything is written: one with any non-finite
new weight or moment (float32 overflow of finite gradients) is skipped, W, m, v and the step
count untouched. For the shared update ``k_norm`` makes that check over every parameter
(its one block already reads them all for the norm) and tells ``k_apply`` via ``U_ANY``.
"""
import math

from numba import cuda, float32, float64

from ..codes import (O_ALPHA, O_BETA1, O_BETA2, O_CLIP, O_EPS, O_KIND, O_LR, O_MOMENTUM,
                     O_NESTEROV, O_WD)
from ..elementwise import param_update

# upd[]: the shared update of one position, written by k_norm
# (U_SKIP: 1 when streams contributed but the step overflowed and was skipped)
U_NORM, U_COEF, U_STEP, U_ANY, U_CLIPPED, U_SKIP, U_NFIELDS = 0, 1, 2, 3, 4, 5, 6
# most threads a reduction block may have (its launch uses config.REDUCE_THREADS, a power of 2)
MAX_REDUCE = 1024


_param_update = cuda.jit(device=True)(param_update)  # the CPU's function (kernels/elementwise.py)


@cuda.jit(device=True)
def param_values(w, mo, ve, gp, t, hyp):
    """(new weight, new m, new v) of one parameter with the (clipped) gradient gp at optimizer
    step t, in float32 arithmetic like the CPU twin (hyper-parameters cast once)."""
    c = (float32(1.0), float32(hyp[O_LR]), float32(hyp[O_WD]), float32(hyp[O_EPS]),
         float32(hyp[O_BETA1]), float32(hyp[O_BETA2]),
         float32(hyp[O_LR] / (1.0 - hyp[O_BETA1] ** t)), float32(math.sqrt(1.0 - hyp[O_BETA2] ** t)),
         float32(hyp[O_ALPHA]), float32(hyp[O_MOMENTUM]), hyp[O_NESTEROV] != 0.0)
    return _param_update(int(hyp[O_KIND]), c, t, float32(gp), w, mo, ve)


@cuda.jit(device=True)
def step_finite(W, m, v, p, col, gp, t, hyp):
    """Whether parameter p's step leaves its weight and moments finite (nothing written)."""
    nw, nm, nv = param_values(W[p, col], m[p, col], v[p, col], gp, t, hyp)
    return math.isfinite(nw) and math.isfinite(nm) and math.isfinite(nv)


@cuda.jit(device=True)
def param_step(W, m, v, p, col, gp, t, hyp):
    """One parameter's optimizer step, written."""
    nw, nm, nv = param_values(W[p, col], m[p, col], v[p, col], gp, t, hyp)
    W[p, col] = nw
    m[p, col] = nm
    v[p, col] = nv


@cuda.jit(device=True)
def apply_update(W, m, v, steps, col, G, g0, n, P, hyp):
    """One optimizer step on column ``col`` with the gradient G[g0:g0+P, n] (clipped in
    place). Returns (pre-clip norm, 1 if clipped else 0, 1 if applied else 0); the caller
    checked G is finite, and counts a skip when the step itself overflowed."""
    s = 0.0
    for p in range(P):
        gp = float64(G[g0 + p, n])
        s += gp * gp
    norm = math.sqrt(s)
    clipped = 0
    clip = hyp[O_CLIP]
    if clip > 0.0:
        coef = clip / (norm + 1e-6)
        if coef < 1.0:
            clipped = 1
            c = float32(coef)
            for p in range(P):
                G[g0 + p, n] = G[g0 + p, n] * c
    t = steps[col] + 1
    for p in range(P):
        if not step_finite(W, m, v, p, col, float64(G[g0 + p, n]), t, hyp):
            return norm, clipped, 0
    steps[col] = t
    for p in range(P):
        param_step(W, m, v, p, col, float64(G[g0 + p, n]), t, hyp)
    return norm, clipped, 1


@cuda.jit
def k_reduce_part(wk, g0, slots, contrib, part):
    """part[p, c] = sum of W_G[p] over the contributing streams b = c, c + L, c + 2L, ...
    (L lanes: the threads of a warp read consecutive streams of one row: coalesced)."""
    L = part.shape[1]
    B = slots.shape[0]
    for i in range(cuda.grid(1), part.shape[0] * L, cuda.gridsize(1)):
        p = i // L
        c = i - p * L
        acc = 0.0
        for b in range(c, B, L):
            if contrib[b] != 0:
                acc += wk[g0 + p, slots[b]]
        part[p, c] = acc


@cuda.jit
def k_reduce_final(part, gsum):
    """gsum[p] = sum_c part[p, c], in a fixed order (deterministic)."""
    for p in range(cuda.grid(1), gsum.shape[0], cuda.gridsize(1)):
        acc = 0.0
        for c in range(part.shape[1]):
            acc += part[p, c]
        gsum[p] = acc


@cuda.jit
def k_norm(gsum, contrib, hyp, steps, upd, W, m, v):
    """One block: the global norm of gsum, the clip coefficient, the optimizer step, and
    whether that step stays finite for every parameter (``U_ANY`` 0 and ``U_SKIP`` 1 if not)."""
    buf = cuda.shared.array(MAX_REDUCE, float64)
    shared = cuda.shared.array(4, float64)  # coef, clipped, step t, any non-finite
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    anyc = 0
    for b in range(contrib.shape[0]):
        if contrib[b] != 0:
            anyc = 1
    acc = 0.0
    for p in range(tid, gsum.shape[0], nt):
        g = float64(gsum[p])
        acc += g * g
    buf[tid] = acc
    cuda.syncthreads()
    half = nt // 2
    while half > 0:
        if tid < half:
            buf[tid] += buf[tid + half]
        cuda.syncthreads()
        half //= 2
    norm = math.sqrt(buf[0])
    if tid == 0:
        coef = 1.0
        clipped = 0.0
        if hyp[O_CLIP] > 0.0:
            c = hyp[O_CLIP] / (norm + 1e-6)
            if c < 1.0:
                coef = c
                clipped = 1.0
        shared[0] = coef
        shared[1] = clipped
        shared[2] = steps[0] + 1
        shared[3] = 0.0 if math.isfinite(norm) else 1.0
    cuda.syncthreads()
    if anyc:
        t = int(shared[2])
        for p in range(tid, gsum.shape[0], nt):
            g = float32(gsum[p])  # as k_apply will use it
            if shared[1] != 0.0:
                g = g * float32(shared[0])
            if not step_finite(W, m, v, p, 0, g, t, hyp):
                shared[3] = 1.0  # benign race: every writer writes 1
    cuda.syncthreads()
    if tid == 0:
        ok = anyc != 0 and shared[3] == 0.0
        upd[U_ANY] = 1 if ok else 0
        upd[U_SKIP] = 1 if anyc != 0 and not ok else 0
        if ok:
            steps[0] += 1
            upd[U_NORM] = norm
            upd[U_COEF] = shared[0]
            upd[U_CLIPPED] = shared[1]
            upd[U_STEP] = steps[0]


@cuda.jit
def k_apply(W, m, v, gsum, hyp, upd):
    """Every parameter of the shared column takes its step (grid-stride)."""
    if upd[U_ANY] == 0:
        return
    t = int(upd[U_STEP])
    clipped = upd[U_CLIPPED] != 0.0
    coef = upd[U_COEF]
    start = cuda.grid(1)
    for p in range(start, gsum.shape[0], cuda.gridsize(1)):
        g = float32(gsum[p])  # the summed gradient in the weights' precision, as on the CPU
        if clipped:
            g = g * float32(coef)
        param_step(W, m, v, p, 0, g, t, hyp)
