"""The per-stream scratch of the CUDA kernels: one float array ``wk`` [rows, slots], each
stream a column; ``so`` [W_NFIELDS] holds the row offset of each named region."""
import numpy as np

from .. import codes as kc

W_ST1 = 0    # state after the step [S]
W_CACHE = 1  # gate activations of the step [C]
W_Z = 2      # logits [O]
W_X = 3      # layer-0 input [I]
W_DZ = 4     # dL/dlogits [O]
W_DS = 5     # dL/dS_t from later steps [S]
W_DS0 = 6    # dL/dS_{t-1} [S]
W_DHS = 7    # total dL/dS_t [S]
W_DA = 8     # gate pre-activation gradients, input side [GH]
W_DAHH = 9   # gate pre-activation gradients, recurrent side [GH]
W_DX = 10    # dL/d(layer input) [WMAX]
W_DR = 11    # dL/d(recurrent input) [WMAX]
W_DCP = 12   # dL/dc_{t-1} [HMAX]
W_DRH = 13   # GRU (Cho): dL/d(r * h_{t-1}) [HMAX]
W_G = 14     # this stream's gradient [P]
W_M = 15     # RTRL: the new sensitivity [S * P]
W_DAI = 16   # RTRL: tangents of the input-side pre-activations (Jordan: of the logits) [GH * P]
W_DAH = 17   # RTRL: tangents of the recurrent-side pre-activations [GH * P]
W_MRH = 18   # RTRL, Cho GRU: tangents of r * h_{t-1} [HMAX * P]
W_NFIELDS = 19


def scratch_offsets(cfg, lay):
    """(so, rows): the region offsets and the scratch height for one model."""
    S, P = int(cfg[kc.C_S]), int(cfg[kc.C_P])
    GH, WM = int(cfg[kc.C_GHMAX]), int(cfg[kc.C_WMAX])
    HM = int(lay[:, kc.L_H].max())
    rtrl = int(cfg[kc.C_RULE]) == kc.RTRL
    sizes = [S, int(cfg[kc.C_CACHE]), int(cfg[kc.C_OUT]), int(cfg[kc.C_IN]), int(cfg[kc.C_OUT]),
             S, S, S, GH, GH, WM, WM, HM, HM, P,
             S * P if rtrl else 0, max(GH, int(cfg[kc.C_OUT])) * P if rtrl else 0,
             GH * P if rtrl else 0,
             HM * P if rtrl else 0]
    so = np.zeros(W_NFIELDS, dtype=np.int64)
    rows = 0
    for f, size in enumerate(sizes):
        so[f] = rows
        rows += size
    return so, max(rows, 1)
