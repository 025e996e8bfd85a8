"""Hand-written PyTorch training loops, the second oracle of the engine (float64).

The model: ``torch.nn.RNN``(tanh)/``LSTM``/``GRU`` via ``torch.func.functional_call`` for the
cells PyTorch has, torch ops by hand for Jordan, IndRNN, the peephole/coupled/no-forget LSTMs
and Cho's GRU; ``nn.Linear`` head, ``nn.Embedding`` for tokens, the linear skip as an ``nn.Linear`` without
bias from the input row (embedded for tokens) added to the head; all loaded from
``Engine.state_dict()``.
Shared weights, B streams run as one batch with the per-stream losses summed.

- TBPTT(k, k): sum k steps' losses, backward, clip_grad_norm_, optimizer step, detach.
- RTRL (update every step): every step runs on a fresh leaf copy of the weights in force; the
  graph of the state reaches back through all earlier copies, and the gradient of the step's
  loss w.r.t. all copies, summed, is the RTRL gradient of the current weights.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from rnnstream.kernels import registry

DTYPE = torch.float64


def uses_torch_module(spec):
    """torch.nn's module computes this cell and variant as is (the registry's torch_exact)."""
    return registry.CELLS[spec.cell].torch_exact(spec)


class TorchModel:
    """The spec's model as stateless torch code over a dict of named tensors."""

    def __init__(self, spec):
        self.spec = spec
        self.L = len(spec.hidden_sizes)
        self.H = spec.hidden_sizes[0]
        self.out = spec.num_classes if spec.num_classes > 0 else spec.output_size
        if uses_torch_module(spec):
            assert len(set(spec.hidden_sizes)) == 1, "nn.RNN/LSTM/GRU stack equal layers"
            kw = {"nonlinearity": "tanh"} if spec.cell == "elman" else {}
            self.rnn = getattr(torch.nn, registry.CELLS[spec.cell].torch_module)(spec.input_size, self.H, num_layers=self.L,
                                               batch_first=True, **kw).to(DTYPE)
        self.head = torch.nn.Linear(spec.hidden_sizes[-1], self.out).to(DTYPE)
        if spec.vocab_size > 0:
            self.embedding = torch.nn.Embedding(spec.vocab_size, spec.input_size).to(DTYPE)
        if getattr(spec, "linear_skip", False):
            self.skip = torch.nn.Linear(spec.input_size, self.out, bias=False).to(DTYPE)

    def zero_state(self, B):
        s = {"h": [torch.zeros(B, H, dtype=DTYPE) for H in self.spec.hidden_sizes]}
        if self.spec.cell == "lstm":
            s["c"] = [torch.zeros(B, H, dtype=DTYPE) for H in self.spec.hidden_sizes]
        if self.spec.cell == "jordan":
            s["y"] = torch.zeros(B, self.out, dtype=DTYPE)
        return s

    @staticmethod
    def detach(state):
        return {k: ([t.detach() for t in v] if isinstance(v, list) else v.detach())
                for k, v in state.items()}

    def step(self, p, state, x):
        """One step for a batch: x is [B, I] float or [B] long. Returns (state, logits)."""
        spec = self.spec
        if spec.vocab_size > 0:
            x = functional_call(self.embedding, {"weight": p["embedding.weight"]}, (x,))
        if uses_torch_module(spec):
            names = [n for n, _ in self.rnn.named_parameters()]
            hx = torch.stack(state["h"])
            if spec.cell == "lstm":
                hx = (hx, torch.stack(state["c"]))
            out, hn = functional_call(self.rnn, {n: p[n] for n in names}, (x[:, None, :], hx))
            new = {"h": list(hn[0] if spec.cell == "lstm" else hn)}
            if spec.cell == "lstm":
                new["c"] = list(hn[1])
            top = out[:, 0]
        else:
            new = {"h": []}
            if spec.cell == "lstm":
                new["c"] = []
            below = x
            for k in range(self.L):
                r = state["y"] if (spec.cell == "jordan" and k == 0) else state["h"][k]
                if spec.cell == "lstm":
                    h, c = self.lstm_layer(p, k, below, r, state["c"][k])
                    new["c"].append(c)
                elif spec.cell == "gru":
                    h = self.cho_layer(p, k, below, r)
                elif spec.cell == "indrnn":  # one recurrent weight per unit (Li et al. 2018)
                    h = torch.tanh(F.linear(below, p[f"weight_ih_l{k}"], p[f"bias_ih_l{k}"])
                                   + p[f"weight_hh_l{k}"] * r + p[f"bias_hh_l{k}"])
                else:
                    h = torch.tanh(F.linear(below, p[f"weight_ih_l{k}"], p[f"bias_ih_l{k}"])
                                   + F.linear(r, p[f"weight_hh_l{k}"], p[f"bias_hh_l{k}"]))
                new["h"].append(h)
                below = h
            top = below
        z = functional_call(self.head, {"weight": p["head.weight"], "bias": p["head.bias"]}, (top,))
        if getattr(spec, "linear_skip", False):
            z = z + functional_call(self.skip, {"weight": p["skip.weight"]}, (x,))
        if spec.cell == "jordan":
            new["y"] = torch.softmax(z, -1) if spec.num_classes > 0 else z
        return new, z

    def lstm_layer(self, p, k, x, h, c):
        v = self.spec.lstm_variant
        A = F.linear(x, p[f"weight_ih_l{k}"], p[f"bias_ih_l{k}"]) + \
            F.linear(h, p[f"weight_hh_l{k}"], p[f"bias_hh_l{k}"])
        ai, af, ag, ao = A.chunk(4, dim=-1)
        if v == "peephole":
            w = p[f"weight_ch_l{k}"]
            ai = ai + w[0] * c
            af = af + w[1] * c
        i, g = torch.sigmoid(ai), torch.tanh(ag)
        f = {"coupled": lambda: 1 - i, "no_forget": lambda: torch.ones_like(i)}.get(
            v, lambda: torch.sigmoid(af))()
        c_new = f * c + i * g
        if v == "peephole":
            ao = ao + p[f"weight_ch_l{k}"][2] * c_new
        return torch.sigmoid(ao) * torch.tanh(c_new), c_new

    def cho_layer(self, p, k, x, h):
        H = h.shape[-1]
        w_hh, b_hh = p[f"weight_hh_l{k}"], p[f"bias_hh_l{k}"]
        gi = F.linear(x, p[f"weight_ih_l{k}"], p[f"bias_ih_l{k}"])
        gh = F.linear(h, w_hh[:2 * H], b_hh[:2 * H])
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:])
        n = torch.tanh(gi[:, 2 * H:] + F.linear(r * h, w_hh[2 * H:], b_hh[2 * H:]))
        return (1 - z) * n + z * h

    def losses(self, z, target):
        """Per-stream losses [B]: MSELoss() of one step, or cross-entropy."""
        if self.spec.num_classes > 0:
            return F.cross_entropy(z, target, reduction="none")
        return ((z - target) ** 2).mean(-1)

    def prediction(self, z):
        return torch.softmax(z, -1) if self.spec.num_classes > 0 else z


def make_optimizer(spec, tensors):
    eps = spec.eps
    wd = spec.weight_decay
    if spec.optimizer == "sgd":
        return torch.optim.SGD(tensors, lr=spec.lr, momentum=spec.momentum,
                               nesterov=spec.nesterov, weight_decay=wd)
    if spec.optimizer == "adam":
        return torch.optim.Adam(tensors, lr=spec.lr, betas=tuple(spec.betas),
                                eps=1e-8 if eps is None else eps, weight_decay=wd)
    if spec.optimizer == "rmsprop":
        return torch.optim.RMSprop(tensors, lr=spec.lr, alpha=spec.alpha, momentum=spec.momentum,
                                   eps=1e-8 if eps is None else eps, weight_decay=wd)
    if spec.optimizer == "adagrad":
        return torch.optim.Adagrad(tensors, lr=spec.lr, eps=1e-10 if eps is None else eps,
                                   weight_decay=wd)
    raise ValueError(spec.optimizer)


def _apply(spec, weights, opt, grads):
    for name, w in weights.items():
        w.grad = grads[name].clone()
    if spec.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(list(weights.values()), spec.clip_norm)
    opt.step()


def run_torch(spec, state_dict, chunks):
    """Run the spec's rule over the chunks (kwargs of Engine.step, shared weights, explicit
    targets). Returns (predictions [B,T,O], losses [B,T], final weights as numpy dict)."""
    model = TorchModel(spec)
    weights = {n: torch.tensor(np.asarray(v), dtype=DTYPE).requires_grad_(True)
               for n, v in state_dict.items()}
    opt = make_optimizer(spec, list(weights.values()))
    key = "tokens" if spec.vocab_size > 0 else "inputs"
    tkey = "target_classes" if spec.num_classes > 0 else "targets"
    xs = np.concatenate([c[key] for c in chunks], axis=1)
    ts = np.concatenate([c[tkey] for c in chunks], axis=1)
    B, T = xs.shape[:2]
    xs = torch.tensor(xs) if spec.vocab_size > 0 else torch.tensor(xs, dtype=DTYPE)
    ts = torch.tensor(ts) if spec.num_classes > 0 else torch.tensor(ts, dtype=DTYPE)
    preds, losses = [], []
    state = model.zero_state(B)
    if spec.algorithm == "rtrl":
        copies = []
        for t in range(T):
            copy = {n: w.detach().clone().requires_grad_(True) for n, w in weights.items()}
            copies.append(copy)
            state, z = model.step(copy, state, xs[:, t])
            per_stream = model.losses(z, ts[:, t])
            flat = [c[n] for c in copies for n in weights]
            g = torch.autograd.grad(per_stream.sum(), flat, retain_graph=True, allow_unused=True)
            grads = {n: torch.zeros_like(w) for n, w in weights.items()}
            for (c_n, g_i) in zip([n for _ in copies for n in weights], g):
                if g_i is not None:
                    grads[c_n] += g_i
            _apply(spec, weights, opt, grads)
            preds.append(model.prediction(z).detach())
            losses.append(per_stream.detach())
    elif spec.algorithm == "tbptt":
        assert spec.tbptt_k1 == spec.tbptt_k2, "the PyTorch loop is TBPTT(k, k)"
        k, total = spec.tbptt_k1, 0.0
        for t in range(T):
            state, z = model.step(weights, state, xs[:, t])
            per_stream = model.losses(z, ts[:, t])
            total = total + per_stream.sum()
            preds.append(model.prediction(z).detach())
            losses.append(per_stream.detach())
            if (t + 1) % k == 0:
                opt.zero_grad()
                total.backward()
                if spec.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(list(weights.values()), spec.clip_norm)
                opt.step()
                total = 0.0
                state = model.detach(state)
    else:
        raise ValueError(spec.algorithm)
    return (torch.stack(preds, 1).numpy(), torch.stack(losses, 1).numpy(),
            {n: w.detach().numpy() for n, w in weights.items()})
