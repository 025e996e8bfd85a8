"""Integer codes shared by the kernels and their drivers.

The kernels receive a model's shape as two small int64 arrays instead of long argument
lists: ``cfg`` (model-wide fields, indexed by ``C_*``) and ``lay`` (one row per layer,
indexed by ``L_*``). Numba folds these module globals into constants.
"""

# cells (per layer: the layers above a Jordan layer 0 are Elman layers)
ELMAN, JORDAN, LSTM, GRU, INDRNN = 0, 1, 2, 3, 4
# the unit a cell's layer is built of (lay[k, L_UNIT]): the loops branch on it, not on the cell
TANH_UNIT, LSTM_UNIT, GRU_UNIT = 0, 1, 2
# LSTM variants
STANDARD, PEEPHOLE, COUPLED, NO_FORGET = 0, 1, 2, 3
# GRU variants
GRU_PYTORCH, GRU_CHO = 0, 1
# learning rules
RTRL, TBPTT, SNAP1 = 0, 1, 2
# optimizers
SGD, ADAM, RMSPROP, ADAGRAD = 0, 1, 2, 3

# cfg fields
C_CELL = 0       # cell of layer 0
C_VARIANT = 1    # LSTM or GRU variant
C_NL = 2         # number of layers
C_IN = 3         # width of the layer-0 input (features or embedding width)
C_OUT = 4        # head outputs
C_CLASSIFY = 5   # 1: softmax head + cross-entropy, 0: linear head + MSE
C_VOCAB = 6      # > 0: token input through the embedding
C_EMB = 7        # offset of embedding.weight
C_HW = 8         # offset of head.weight
C_HB = 9         # offset of head.bias
C_S = 10         # state size per stream
C_P = 11         # parameter count
C_Y = 12         # offset of y_{t-1} in the state (Jordan), else -1
C_HTOP = 13      # offset of the top layer's h in the state
C_HLAST = 14     # width of the top layer
C_CACHE = 15     # per-step cache size per stream
C_GHMAX = 16     # largest G*H over layers
C_WMAX = 17      # largest layer width (inputs and states)
C_HIST = 18      # capacity of the per-stream history ring
C_RULE = 19
C_NEXT = 20      # 1: NEXT_INPUT target mode
C_K1 = 21
C_SHARED = 22    # 1: every stream trains the one weight row 0
C_DELAY = 23     # max_label_delay: how many steps back a late label may name
C_SKIP = 24      # offset of skip.weight [O, C_IN] (linear skip to the head), else -1
C_NFIELDS = 25

# layer fields
L_CELL = 0
L_H = 1
L_IN = 2
L_REC = 3        # width of the recurrent input (H, or O for Jordan layer 0)
L_WIH = 4
L_WHH = 5
L_BIH = 6
L_BHH = 7
L_WCH = 8        # peephole weights, -1 when absent
L_SH = 9         # offset of h in the state
L_SC = 10        # offset of c in the state, -1 when absent
L_CG = 11        # offset of this layer's gate activations in the cache
L_CX = 12        # offset of this layer's extra cache (tanh(c) for LSTM, W_hn h + b_hn for GRU)
L_UNIT = 13      # TANH_UNIT, LSTM_UNIT or GRU_UNIT
L_DIAG = 14      # 1: the recurrent weights are a vector [G*H] (unit a sees only its own h)
L_NFIELDS = 15

# per-stream int64 counters
K_STEPS = 0      # steps run
K_UPDATES = 1    # updates this stream contributed to
K_SKIPPED = 2    # updates skipped for this stream
K_HCOUNT = 3     # entries written to the history ring (capped at its capacity)
K_HPOS = 4       # next write position in the ring
K_NLOSS = 5      # TBPTT: losses pending since the last update
K_PENDING = 6    # NEXT_INPUT: the last step still waits for its target
K_NONFINITE = 7  # TBPTT: a pending loss was not finite
K_NFIELDS = 8

# history-ring flags (hflag): whether a step has a target, and whether it was learned yet
FLAG_NONE = 0     # no target (yet): predicted only, or waiting for a late label
FLAG_PENDING = 1  # TBPTT: target known, its loss waits for the next update
FLAG_DONE = 2     # max_label_delay > 0: target known and learned (a second label is refused)

# per-stream float64 stats
F_RUNNING = 0    # running loss (exponential average, decay 0.99)
F_GNORM = 1      # last pre-clip gradient norm
F_HASLOSS = 2    # 1 once the running loss has a value
F_NFIELDS = 3

# optimizer hyper-parameters (float64 array)
O_KIND = 0
O_LR = 1
O_MOMENTUM = 2
O_NESTEROV = 3
O_BETA1 = 4
O_BETA2 = 5
O_EPS = 6
O_ALPHA = 7
O_WD = 8
O_CLIP = 9
O_NFIELDS = 10

# skip reasons, in the order of the engine's skip counters
SKIP_NONFINITE_LOSS = 0
SKIP_NONFINITE_GRADIENT = 1
SKIP_NREASONS = 2

# call-wide counters returned by a chunk kernel
R_UPDATES = 0
R_CLIPPED = 1
R_SKIP_LOSS = 2
R_SKIP_GRAD = 3
R_STEPS = 4
R_NFIELDS = 5
