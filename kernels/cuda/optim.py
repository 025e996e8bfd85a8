"""CUDA twin of ``kernels/optim.py``: torch.optim's SGD (momentum, nesterov), Adam, RMSprop
and Adagrad, clipping by global norm (``clip_grad_norm_``: coef = clip / (norm + 1e-6), applied
when below 1) and weight decay added after clipping.

Per-stream weights: the stream's thread updates its own column (``apply_update``). Shared
weights: the per-stream gradients are summed on the device (``k_reduce_part``, then
``k_reduce_final``: lanes of a warp read consecutive streams of one row), then one block takes the norm
(``k_norm``) and a grid-stride kernel steps every parameter (``k_apply``).
"""
import math

from numba import cuda, float32, float64

from ..codes import (ADAGRAD, ADAM, O_ALPHA, O_BETA1, O_BETA2, O_CLIP, O_EPS, O_KIND, O_LR,
                     O_MOMENTUM, O_NESTEROV, O_WD, RMSPROP)

# upd[]: the shared update of one position, written by k_norm
U_NORM, U_COEF, U_STEP, U_ANY, U_CLIPPED, U_NFIELDS = 0, 1, 2, 3, 4, 5
# most threads a reduction block may have (its launch uses config.REDUCE_THREADS, a power of 2)
MAX_REDUCE = 1024


@cuda.jit(device=True)
def param_step(W, m, v, p, col, gp, t, hyp):
    """One parameter's optimizer step with the (clipped) gradient gp at optimizer step t, in
    float32 arithmetic like the CPU twin (hyper-parameters cast once)."""
    kind = int(hyp[O_KIND])
    one = float32(1.0)
    lr = float32(hyp[O_LR])
    eps = float32(hyp[O_EPS])
    w = W[p, col]
    gp = float32(gp) + float32(hyp[O_WD]) * w
    if kind == ADAM:
        b1 = float32(hyp[O_BETA1])
        b2 = float32(hyp[O_BETA2])
        step_size = float32(hyp[O_LR] / (1.0 - hyp[O_BETA1] ** t))
        bc2_sqrt = float32(math.sqrt(1.0 - hyp[O_BETA2] ** t))
        mm = m[p, col] + (one - b1) * (gp - m[p, col])
        m[p, col] = mm
        vv = b2 * v[p, col] + (one - b2) * gp * gp
        v[p, col] = vv
        W[p, col] = w - step_size * m[p, col] / (math.sqrt(v[p, col]) / bc2_sqrt + eps)
    elif kind == RMSPROP:
        alpha = float32(hyp[O_ALPHA])
        mom = float32(hyp[O_MOMENTUM])
        v[p, col] = alpha * v[p, col] + (one - alpha) * gp * gp
        avg = math.sqrt(v[p, col]) + eps
        if mom > 0.0:
            m[p, col] = mom * m[p, col] + gp / avg
            W[p, col] = w - lr * m[p, col]
        else:
            W[p, col] = w - lr * gp / avg
    elif kind == ADAGRAD:
        v[p, col] = v[p, col] + gp * gp
        W[p, col] = w - lr * gp / (math.sqrt(v[p, col]) + eps)
    else:  # SGD
        mom = float32(hyp[O_MOMENTUM])
        if mom != 0.0:
            if t == 1:
                m[p, col] = gp
            else:
                m[p, col] = mom * m[p, col] + gp
            if hyp[O_NESTEROV] != 0.0:
                gp = gp + mom * m[p, col]
            else:
                gp = float32(m[p, col])
        W[p, col] = w - lr * gp


@cuda.jit(device=True)
def apply_update(W, m, v, steps, col, G, g0, n, P, hyp):
    """One optimizer step on column ``col`` with the gradient G[g0:g0+P, n] (clipped in
    place). Returns (pre-clip norm, 1 if clipped else 0); the caller checked G is finite."""
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
    steps[col] += 1
    t = steps[col]
    for p in range(P):
        param_step(W, m, v, p, col, float64(G[g0 + p, n]), t, hyp)
    return norm, clipped


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
def k_norm(gsum, contrib, hyp, steps, upd):
    """One block: the global norm of gsum, the clip coefficient and the optimizer step."""
    buf = cuda.shared.array(MAX_REDUCE, float64)
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
    if tid == 0:
        upd[U_ANY] = anyc
        if anyc:
            norm = math.sqrt(buf[0])
            coef = 1.0
            clipped = 0.0
            if hyp[O_CLIP] > 0.0:
                c = hyp[O_CLIP] / (norm + 1e-6)
                if c < 1.0:
                    coef = c
                    clipped = 1.0
            steps[0] += 1
            upd[U_NORM] = norm
            upd[U_COEF] = coef
            upd[U_CLIPPED] = clipped
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
