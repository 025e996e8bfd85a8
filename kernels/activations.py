"""In-place sigmoid and tanh over contiguous 1-D blocks of pre-activations.

The libm calls behind np.exp and np.tanh are scalar, and in float32 they were most of a
step's time. For float32 these passes use Cephes' expf (range reduction by ln 2 and a
degree-6 polynomial, about 1 ulp; 2^n built from its exponent bits), which LLVM vectorises.
tanh uses an odd Taylor polynomial below |x| = 0.25 (error under 1e-8 relative) and
1 - 2 / (e^{2|x|} + 1) above (a few ulp). float64 arrays, the gradient checks' path, keep
numpy's exact functions.
"""
import numpy as np
from numba import njit, types
from numba.extending import overload

# No reassociation, contraction or reciprocal estimates: a lane's result must not depend on
# where it falls in a vector, or results would change with the batch's shape.
_SAFE_FAST = {"nnan", "ninf", "nsz"}
_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4


def sigmoid_inplace(v):
    """v <- 1 / (1 + exp(-v)), elementwise."""
    for i in range(v.shape[0]):
        v[i] = 1.0 / (1.0 + np.exp(-v[i]))


def tanh_inplace(v):
    """v <- tanh(v), elementwise."""
    for i in range(v.shape[0]):
        v[i] = np.tanh(v[i])


@njit(cache=True, fastmath=_SAFE_FAST)
def _exp32_inplace(v, bits):
    """v <- exp(v) for float32 v; bits is int32 scratch of v's length."""
    n = v.shape[0]
    for i in range(n):
        x = min(max(v[i], np.float32(-87.33)), np.float32(88.72))
        fx = np.floor(x * np.float32(_LOG2E) + np.float32(0.5))
        r = x - fx * np.float32(_LN2_HI) - fx * np.float32(_LN2_LO)
        y = np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)
        y = y * r + np.float32(8.3334519073e-3)
        y = y * r + np.float32(4.1665795894e-2)
        y = y * r + np.float32(1.6666665459e-1)
        y = y * r + np.float32(5.0000001201e-1)
        v[i] = y * r * r + r + np.float32(1.0)
        bits[i] = (np.int32(fx) + np.int32(127)) << np.int32(23)
    scale = bits.view(np.float32)
    for i in range(n):
        v[i] = v[i] * scale[i]


# error_model="numpy": no zero-division check (1 + e >= 1), which would keep the loop scalar
@njit(cache=True, fastmath=_SAFE_FAST, error_model="numpy")
def _sigmoid32(v):
    e = np.empty(v.shape[0], dtype=np.float32)
    for i in range(v.shape[0]):
        e[i] = -v[i]
    _exp32_inplace(e, np.empty(v.shape[0], dtype=np.int32))
    for i in range(v.shape[0]):
        v[i] = np.float32(1.0) / (np.float32(1.0) + e[i])


@njit(cache=True, fastmath=_SAFE_FAST, error_model="numpy")
def _tanh32(v):
    n = v.shape[0]
    e = np.empty(n, dtype=np.float32)
    for i in range(n):
        e[i] = np.float32(2.0) * abs(v[i])
    _exp32_inplace(e, np.empty(n, dtype=np.int32))
    for i in range(n):
        x = v[i]
        x2 = x * x
        small = x + x * x2 * (np.float32(-1.0 / 3.0) + x2 * (np.float32(2.0 / 15.0) + x2 * (
            np.float32(-17.0 / 315.0) + x2 * np.float32(62.0 / 2835.0))))
        big = np.float32(1.0) - np.float32(2.0) / (e[i] + np.float32(1.0))
        if x < 0:
            big = -big
        v[i] = small if abs(x) < np.float32(0.25) else big


@overload(sigmoid_inplace, jit_options={"cache": True})
def _sigmoid_impl(v):
    if isinstance(v, types.Array) and v.dtype == types.float32:
        return lambda v: _sigmoid32(v)

    def exact(v):
        for i in range(v.shape[0]):
            v[i] = 1.0 / (1.0 + np.exp(-v[i]))
    return exact


@overload(tanh_inplace, jit_options={"cache": True})
def _tanh_impl(v):
    if isinstance(v, types.Array) and v.dtype == types.float32:
        return lambda v: _tanh32(v)

    def exact(v):
        for i in range(v.shape[0]):
            v[i] = np.tanh(v[i])
    return exact
