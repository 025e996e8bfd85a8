"""Per-unit math of the cells, written once and compiled for both targets, like
``elementwise.py``: ``kernels/cells.py``, ``snap.py`` and ``rtrl.py`` compile these functions
inlined into their loops (``numba.njit(inline="always")``), ``kernels/cuda/cells.py``,
``snap.py`` and ``rtrl.py`` as CUDA device functions. Each takes one unit's scalars (gate
activations, pre-activation gradients or tangents, the unit's own weights) and returns
scalars; the snap partials fill the caller's small [4, 2] / [2, 2] / [3, 2] arrays, which both
targets index alike. The loops, the matrix products and the gathering of the scalars from
the target's arrays stay in the callers. No function here calls another (each target compiles
each one on its own; to the compiler a callee would be a plain Python function). No decorator
here, nothing but arithmetic, ``math`` and constants: both compilers and the interpreter
(``kernels/interpreted.py``) must accept every line.

Equations (NNDL ch. 6, References in README): SRN eq. 6.5-6.7; LSTM eq. 6.49-6.56 with the
peephole (6.60), coupled (6.61-6.62) and no-forget variants; GRU eq. 6.64-6.67; their VJPs
(BPTT, eq. 6.29-6.39), their RTRL tangents (eq. 6.42) and SnAp-1's diagonal of it (Menick et
al. 2020). Gates in PyTorch's order: LSTM i, f, g, o; GRU r, z, n.
"""
import math

from .codes import COUPLED, GRU_CHO, NO_FORGET, PEEPHOLE


def sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


def recurrent_weight_at(whh, nrec, diagonal, a, q):
    """Offset of W_hh[a, q] in the flat parameters: row-major [G*H, rec], or for a diagonal
    recurrence the vector [G*H], whose row a holds only q = a mod H (callers ask for no other)."""
    if diagonal:
        return whh + a
    return whh + a * nrec + q


# ----------------------------------------------------------------------------- forward
# The nonlinearities themselves stay target-specific: the CPU's batched forward takes them as
# passes over whole blocks (faster there, kernels/activations.py), CUDA calls ``sigmoid`` and
# math.tanh per unit. Both combine the activated gates with these.

def lstm_forget(variant, i, f_gate):
    """The forget gate the cell uses: 1 - i (coupled), 1 (no forget), else its own gate."""
    if variant == COUPLED:
        return 1.0 - i
    if variant == NO_FORGET:
        return 1.0
    return f_gate


def lstm_cell(f, cp, i, g):
    """c = f c_{t-1} + i g."""
    return f * cp + i * g


def gru_hidden(z, n, hp):
    """h = (1 - z) n + z h_{t-1}."""
    return (1.0 - z) * n + z * hp


# ----------------------------------------------------------------------------- backward
def tanh_unit_backward(h, dh):
    """dL/da of h = tanh(a)."""
    return dh * (1.0 - h * h)


def lstm_unit_backward(variant, i, f, g, o, tc, cp, dh, dc_later, wci, wcf, wco):
    """(da_i, da_f, da_g, da_o, dc_{t-1}) of one LSTM unit from dL/dh and dL/dc of later
    steps and the step's cached gates. The peepholes' own gradients are da_i c_{t-1},
    da_f c_{t-1} and da_o c."""
    dao = dh * tc * o * (1.0 - o)
    dc = dc_later + dh * o * (1.0 - tc * tc)
    if variant == PEEPHOLE:
        dc += dao * wco
    di = dc * g
    df = 0.0
    if variant == COUPLED:
        di -= dc * cp
    elif variant != NO_FORGET:
        df = dc * cp
    dai = di * i * (1.0 - i)
    daf = df * f * (1.0 - f)
    dcp = dc * f
    if variant == PEEPHOLE:
        dcp += dai * wci + daf * wcf
    return dai, daf, dc * i * (1.0 - g * g), dao, dcp


def gru_unit_backward(variant, r, z, n, hn, hp, dh):
    """(da_r, da_z, dL/d(input n pre-activation), dL/d(recurrent n pre-activation)) of one
    GRU unit; hn: the cached W_hn h + b_hn (PyTorch's form). Cho's da_r needs dL/d(r h),
    a product over all units: ``gru_cho_reset_backward`` gives it after; here it is 0."""
    dnp = dh * (1.0 - z) * (1.0 - n * n)
    daz = dh * (hp - n) * z * (1.0 - z)
    if variant == GRU_CHO:
        return 0.0, daz, dnp, dnp
    return dnp * hn * r * (1.0 - r), daz, dnp, dnp * r


def gru_cho_reset_backward(drh, hp, r):
    """da_r of a Cho GRU unit from dL/d(r h_{t-1})."""
    return drh * hp * r * (1.0 - r)


# ----------------------------------------------------------------------------- SnAp-1
def snap_update(j00, j01, j10, j11, mh, mc, ih, ic):
    """One parameter's new (h_j, c_j) influence: m <- J_jj m + I (J_jj = [[j00, j01],
    [j10, j11]], I = (ih, ic))."""
    return j00 * mh + j01 * mc + ih, j10 * mh + j11 * mc + ic


def snap_update_h(j00, mh, ih):
    """``snap_update`` of a unit without a cell state (tanh, GRU): J_jj = [[j00, 0], [0, 0]]
    and I = (ih, 0), so the c influence stays 0 and is not touched."""
    return j00 * mh + ih


def snap_clear(d_ih, d_hh, J, d_pe):
    for a in range(4):
        for c in range(2):
            d_ih[a, c] = 0.0
            d_hh[a, c] = 0.0
    for a in range(3):
        for c in range(2):
            d_pe[a, c] = 0.0
    for a in range(2):
        for c in range(2):
            J[a, c] = 0.0


def snap_tanh_partials(h, loop):
    """A tanh unit (Elman, Jordan, IndRNN): (d, j00), its pre-activation's partial dh/da (the
    same from the input and the recurrent side) and its own-loop Jacobian; ``loop`` is
    d(recurrent pre-activation)/dh_{t-1} along the unit's own loop (W_hh[j, j]; IndRNN: u_j;
    Jordan: through y_{t-1}). Unlike the gated units' it returns scalars: the CPU runs tanh
    units in a loop of their own, without the [4, 2] partials arrays."""
    d = 1.0 - h * h
    return d, d * loop


def snap_lstm_partials(variant, i, f, g, o, tc, cp, c, wi, wf, wg, wo, wci, wcf, wco,
                       d_ih, d_hh, J, d_pe):
    """LSTM unit: wi..wo its diagonal recurrent weights W_hh[x H + j, j]; wci..wco its
    peepholes (PEEPHOLE only); c its new cell value."""
    si = i * (1.0 - i)
    sf = f * (1.0 - f)
    so = o * (1.0 - o)
    if variant != PEEPHOLE:
        wco = 0.0
    dhdc = o * (1.0 - tc * tc) + tc * so * wco
    dc_i = si * g
    if variant == COUPLED:
        dc_i = si * (g - cp)
    dc_f = 0.0
    if variant != COUPLED and variant != NO_FORGET:
        dc_f = sf * cp
    dc_g = (1.0 - g * g) * i
    d_ih[0, 0] = dhdc * dc_i
    d_ih[0, 1] = dc_i
    d_ih[1, 0] = dhdc * dc_f
    d_ih[1, 1] = dc_f
    d_ih[2, 0] = dhdc * dc_g
    d_ih[2, 1] = dc_g
    d_ih[3, 0] = tc * so
    d_ih[3, 1] = 0.0
    for x in range(4):
        d_hh[x, 0] = d_ih[x, 0]
        d_hh[x, 1] = d_ih[x, 1]
    dcdh = 0.0
    dcdh += dc_i * wi
    dcdh += dc_f * wf
    dcdh += dc_g * wg
    dhdh = 0.0
    dhdh += d_ih[0, 0] * wi
    dhdh += d_ih[1, 0] * wf
    dhdh += d_ih[2, 0] * wg
    dhdh += d_ih[3, 0] * wo
    dcdc = f
    if variant == PEEPHOLE:
        dcdc += dc_i * wci + dc_f * wcf
        d_pe[0, 0] = d_ih[0, 0] * cp
        d_pe[0, 1] = dc_i * cp
        d_pe[1, 0] = d_ih[1, 0] * cp
        d_pe[1, 1] = dc_f * cp
        d_pe[2, 0] = tc * so * c
    J[0, 0] = dhdh
    J[0, 1] = dhdc * dcdc
    J[1, 0] = dcdh
    J[1, 1] = dcdc


def snap_gru_partials(variant, r, z, n, hn, hp, wr, wz, wn, cross, d_ih, d_hh, J):
    """GRU unit: wr, wz, wn its diagonal recurrent weights W_hh[x H + j, j]; hn the cached
    W_hn h + b_hn (PyTorch's form); ``cross`` (Cho only) sum over k != j of
    W_hn[j, k] h_k r_k (1 - r_k) W_hr[k, j]: n_j reads every r_k h_k, and each r_k reads h_j."""
    q = (1.0 - z) * (1.0 - n * n)
    sr = r * (1.0 - r)
    if variant == GRU_CHO:
        dr = q * wn * hp * sr
        d_hh[2, 0] = q
        own_n = q * wn * r
    else:
        dr = q * hn * sr
        d_hh[2, 0] = q * r
        own_n = d_hh[2, 0] * wn
    dz = (hp - n) * z * (1.0 - z)
    d_ih[0, 0] = dr
    d_hh[0, 0] = dr
    d_ih[1, 0] = dz
    d_hh[1, 0] = dz
    d_ih[2, 0] = q
    J[0, 0] = z + dr * wr + dz * wz + own_n
    if variant == GRU_CHO:
        J[0, 0] += q * cross


def gru_cho_cross_term(w_nk, hk, rk, w_rk):
    """One k's term of ``snap_gru_partials``'s cross."""
    return w_nk * hk * rk * (1.0 - rk) * w_rk


# ----------------------------------------------------------------------------- RTRL
# One parameter's tangent through one unit: t_* are the tangents of the unit's gate
# pre-activations (input and recurrent side summed), m_* the unit's previous tangents.

def tanh_unit_tangent(h, t):
    return (1.0 - h * h) * t


def lstm_unit_tangent(variant, i, f, g, o, tc, cp, wci, wcf, wco, ti, tf, tg, to, mcp):
    """(dc, dh) of one LSTM unit for one parameter."""
    di = i * (1.0 - i) * (ti + wci * mcp)
    dg = (1.0 - g * g) * tg
    if variant == COUPLED:
        dc = f * mcp + (g - cp) * di + i * dg
    elif variant == NO_FORGET:
        dc = mcp + g * di + i * dg
    else:
        df = f * (1.0 - f) * (tf + wcf * mcp)
        dc = f * mcp + cp * df + g * di + i * dg
    dao = o * (1.0 - o) * (to + wco * dc)
    return dc, o * (1.0 - tc * tc) * dc + tc * dao


def gru_cho_reset_tangent(r, hp, tr, mhp):
    """(dr pre-activation tangent, tangent of r h_{t-1}) of a Cho GRU unit."""
    dar = r * (1.0 - r) * tr
    return dar, dar * hp + r * mhp


def gru_unit_tangent(variant, r, z, n, hn, hp, tr, tz, tn_ih, tn_hh, mhp):
    """dh of one GRU unit for one parameter: tn_ih / tn_hh the n gate's input / recurrent
    tangents (Cho: tn_hh already through r h_{t-1}; tr unused)."""
    daz = z * (1.0 - z) * tz
    if variant == GRU_CHO:
        npre = tn_ih + tn_hh
    else:
        dar = r * (1.0 - r) * tr
        npre = tn_ih + r * tn_hh + hn * dar
    return (1.0 - z) * (1.0 - n * n) * npre + (hp - n) * daz + z * mhp
