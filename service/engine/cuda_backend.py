"""The CUDA side of an Engine with ``device="cuda"``: device copies of the weights, the
optimizer moments and the stream pool, one launch sequence per chunk, and copies back to the
host pool on demand (state_dict, snapshots, stats, forecast).

Who holds the truth: the device, for every stream and for shared weights. The engine's host
``StreamPool`` (and ``Engine._W`` & co.) are staging areas: ``pull`` refreshes them from the
device before the engine reads them, ``push`` sends them after the engine wrote them. Only
inputs, targets, predictions, losses and a few counters cross the bus per chunk.
"""
from __future__ import annotations

import numpy as np

from rnnstream.kernels import codes as kc
from rnnstream.kernels.cuda import CudaUnavailable, load
from rnnstream.kernels.cuda.scratch import W_G, scratch_offsets

from .pool import WEIGHT_FIELDS

# the pool fields the CUDA kernels keep on the device, in their bundle's order; the CPU
# pool's optional forward-result fields (hc, hz, hs1, hver) are not kept: the CUDA TBPTT
# always recomputes its window
DEVICE_FIELDS = ("state", "sens", "hx", "htok", "hs", "hy", "hcls", "hflag", "cnt", "fst")


def require_cuda():
    """The CUDA kernels' module, or RuntimeError (``CudaUnavailable``) saying why not."""
    try:
        return load()
    except CudaUnavailable as exc:
        raise CudaUnavailable(f"device='cuda' cannot be used on this server: {exc}. "
                              "Use device='cpu'.") from None


def _dev_shape(host_arr):
    """Host [cap, ...] -> device [prod(...), cap] (2D, stream-minor)."""
    return int(np.prod(host_arr.shape[1:], dtype=np.int64)), host_arr.shape[0]


class CudaBackend:
    """The engine's backend on a GPU (the interface: ``cpu_backend``). ``pool`` is the
    engine's host StreamPool and ``shared`` its SHARED weights' host arrays (W, m, v, steps;
    None for PER_STREAM): the staging areas ``pull`` fills and ``push`` sends."""

    def __init__(self, layout, hyp, dtype, pool, shared):
        self.ck = require_cuda()
        from numba import cuda
        self.cuda = cuda
        self.pool = pool
        self.dtype = np.dtype(dtype)
        self.host_shared = shared
        self.cfg = layout.cfg
        so, self.rows = scratch_offsets(layout.cfg, layout.lay)
        self.g0 = int(so[W_G])
        self.model = (cuda.to_device(layout.cfg), cuda.to_device(layout.lay),
                      cuda.to_device(hyp), cuda.to_device(so))
        P = layout.num_parameters
        self.gsum, self.upd = self.ck.new_update_buffers(P, self.dtype)
        self.per_stream = pool.per_stream
        self.capacity = 0
        self.dev = {}
        self._alloc(pool.capacity)
        if not self.per_stream:
            self.shared = {}
            self.push_shared()

    # memory ---------------------------------------------------------------------------
    def _fields(self):
        return DEVICE_FIELDS + (WEIGHT_FIELDS if self.per_stream else ())

    def _alloc(self, capacity):
        """(Re)allocate every per-stream device array for ``capacity`` slots, keeping the
        columns already there."""
        cuda = self.cuda
        arrays = self.pool.arrays
        old = self.dev
        new = {}
        for name in self._fields():
            rows, _ = _dev_shape(arrays[name])
            new[name] = cuda.to_device(np.zeros((max(rows, 1), capacity), arrays[name].dtype))
        new["wk"] = cuda.to_device(np.zeros((self.rows, capacity), self.dtype))
        for name, src in old.items():
            dst = new[name]
            grid, tpb = self.ck.grid2(src.shape[0], src.shape[1])
            self.ck.k_copy_cols[grid, tpb](src, dst)
        self.dev = new
        self.capacity = capacity

    def _ensure_capacity(self):
        if self.pool.capacity > self.capacity:
            self._alloc(self.pool.capacity)

    # host <-> device ------------------------------------------------------------------
    def push(self, slots):
        """Host pool columns of ``slots`` -> device."""
        slots = [int(s) for s in slots]
        if not slots:
            return
        self._ensure_capacity()
        cuda = self.cuda
        idx = cuda.to_device(np.asarray(slots, np.int64))
        arrays = self.pool.arrays
        for name in self._fields():
            host = arrays[name]
            vals = np.ascontiguousarray(host[slots].reshape(len(slots), -1))
            if vals.shape[1] == 0:
                continue
            grid, tpb = self.ck.grid2(len(slots), vals.shape[1])
            self.ck.k_scatter[grid, tpb](self.dev[name], idx, cuda.to_device(vals))

    def pull(self, slots):
        """Device columns of ``slots`` -> host pool."""
        slots = [int(s) for s in slots]
        if not slots:
            return
        cuda = self.cuda
        idx = cuda.to_device(np.asarray(slots, np.int64))
        arrays = self.pool.arrays
        for name in self._fields():
            host = arrays[name]
            rows, _ = _dev_shape(host)
            if rows == 0:
                continue
            outv = cuda.device_array((len(slots), rows), host.dtype)
            grid, tpb = self.ck.grid2(len(slots), rows)
            self.ck.k_gather[grid, tpb](self.dev[name], idx, outv)
            vals = outv.copy_to_host()
            for i, s in enumerate(slots):
                host[s] = vals[i].reshape(host.shape[1:])
        if "hver" in arrays:
            arrays["hver"][slots] = -1  # no forward results to reuse: recompute

    def push_shared(self):
        W, m, v, steps = self.host_shared
        cuda = self.cuda
        self.shared = {"W": cuda.to_device(np.ascontiguousarray(W.T)),
                       "m": cuda.to_device(np.ascontiguousarray(m.T)),
                       "v": cuda.to_device(np.ascontiguousarray(v.T)),
                       "steps": cuda.to_device(steps.copy())}

    def pull_shared(self):
        W, m, v, steps = self.host_shared
        W[:] = self.shared["W"].copy_to_host().T
        m[:] = self.shared["m"].copy_to_host().T
        v[:] = self.shared["v"].copy_to_host().T
        steps[:] = self.shared["steps"].copy_to_host()

    def learn_labels(self, kbatch, lab, out):
        raise NotImplementedError("late labels run on the CPU only (Spec refuses them with device='cuda')")

    learn_pending = learn_labels

    # the main job ---------------------------------------------------------------------
    def run_chunk(self, kbatch, out):
        """The device twin of ``kernels.chunk.run_chunk``: same arguments, same outputs."""
        cuda = self.cuda
        slots, wrow, inputs, tokens, targets, tclass, lengths, learn = kbatch
        preds, losses, res, gnorms = out
        self._ensure_capacity()
        B, T = tokens.shape
        I, O = inputs.shape[2], preds.shape[2]
        d = self.dev
        if self.per_stream:
            weights = (d["weights"], d["opt_m"], d["opt_v"], d["opt_steps"].reshape(-1))
        else:
            s = self.shared
            weights = (s["W"], s["m"], s["v"], s["steps"])
        pool = tuple(d[name] for name in DEVICE_FIELDS)

        def cols(a, width):  # [B, T, w] -> [T * w, B], at least one row
            if width == 0:
                return np.zeros((1, B), a.dtype)
            return np.ascontiguousarray(a.transpose(1, 2, 0)).reshape(T * width, B)

        batch = (cuda.to_device(slots), cuda.to_device(wrow), cuda.to_device(cols(inputs, I)),
                 cuda.to_device(np.ascontiguousarray(tokens.T)),
                 cuda.to_device(cols(targets, O)),
                 cuda.to_device(np.ascontiguousarray(tclass.T)), cuda.to_device(lengths),
                 cuda.to_device(np.zeros(B, np.int8)), cuda.to_device(np.zeros(B, np.int8)))
        dout = (cuda.device_array((T * O, B), preds.dtype), cuda.device_array((T, B),
                                                                             losses.dtype),
                cuda.to_device(np.zeros((T, B), np.int32)), cuda.device_array((T, B)),
                cuda.to_device(np.zeros(T, np.int32)), cuda.device_array(T))
        self.ck.run_chunk(self.model, weights, pool, batch, d["wk"], dout, self.gsum, self.upd,
                          T, int(learn), (self.cfg, self.g0))
        active = np.arange(T)[None, :] < lengths[:, None]
        p = dout[0].copy_to_host().reshape(T, O, B).transpose(2, 0, 1)
        preds[:] = np.where(active[:, :, None], p, np.nan)
        losses[:] = np.where(active, dout[1].copy_to_host().T, np.nan)
        ev, nrm = dout[2].copy_to_host(), dout[3].copy_to_host()
        ev_s, nrm_s = dout[4].copy_to_host(), dout[5].copy_to_host()
        self._counters(ev, nrm, ev_s, nrm_s, lengths, res, gnorms)

    def _counters(self, ev, nrm, ev_s, nrm_s, lengths, res, gnorms):
        ck = self.ck
        norms = []
        for t in range(ev.shape[0]):
            if self.per_stream:
                for b in np.nonzero(ev[t] & ck.EV_UPDATE)[0]:
                    norms.append(nrm[t, b])
            elif ev_s[t] & ck.EV_UPDATE:
                norms.append(nrm_s[t])
        clipped = (int(np.count_nonzero(ev & ck.EV_CLIPPED)) if self.per_stream
                   else int(np.count_nonzero(ev_s & ck.EV_CLIPPED)))
        res[kc.R_UPDATES] = len(norms)
        res[kc.R_CLIPPED] = clipped
        res[kc.R_SKIP_LOSS] = int(np.count_nonzero(ev & ck.EV_SKIP_LOSS))
        res[kc.R_SKIP_GRAD] = int(np.count_nonzero(ev & ck.EV_SKIP_GRAD))
        res[kc.R_STEPS] = int(lengths.sum())
        gnorms[:len(norms)] = norms
