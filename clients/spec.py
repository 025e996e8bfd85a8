"""A typed model spec for the SDK: the server's fields and defaults, without numba.

``Client.create_model(ModelSpec(...))`` and ``Client.create_model(name=..., cell=...)`` take
the same fields; a test checks that the names and defaults here equal the server's
(``service.engine.Spec``), so this file cannot drift silently.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Optional

# the server's learning rates for lr left unset (service.engine.spec: torch.optim's, except
# Adam, where the quality benchmark measured 1e-2 for dense input and 1e-3 for tokens)
DEFAULT_LR = {"sgd": 1e-3, "adam": 1e-2, "rmsprop": 1e-2, "adagrad": 1e-2}
DEFAULT_TOKEN_LR = {"sgd": 1e-3, "adam": 1e-3, "rmsprop": 1e-2, "adagrad": 1e-2}
DEFAULT_EPS = {"sgd": 0.0, "adam": 1e-8, "rmsprop": 1e-8, "adagrad": 1e-10}


@dataclass
class ModelSpec:
    """What a model is and how it learns; every field has the server's default.

    Give only the data's shape (``input_size`` and ``output_size`` or ``num_classes``, or
    ``vocab_size``) and the server picks the default the quality benchmark measured best
    (README, "Learning quality"); name any of cell, hidden_sizes, algorithm, tbptt_k1/k2,
    optimizer or lr and you get one model with what you named.

    Attributes:
        name: the model's name (letters, digits, ``-_.``), unique on the server.
        cell: ``"elman"``, ``"jordan"``, ``"lstm"``, ``"gru"`` or ``"indrnn"``; "": lstm (dense), gru (tokens).
        lstm_variant: ``"standard"``, ``"peephole"``, ``"coupled"`` (f = 1 - i) or ``"no_forget"``.
        gru_variant: ``"pytorch"`` (torch.nn.GRU) or ``"cho"`` (reset gate before the recurrent matrix).
        hidden_sizes: units per layer, one entry per stacked layer; (): (32,) dense, (512,) tokens.
        input_size: features per step (the embedding width when ``vocab_size > 0``; 0 there: 64).
        vocab_size: > 0: token input through an embedding of this many tokens.
        output_size: regression outputs (set this or ``num_classes``).
        num_classes: classification outputs through a softmax head.
        algorithm: learning rule: ``"tbptt"``, ``"rtrl"`` (exact, small states) or ``"snap1"``; "": tbptt.
        tbptt_k1: TBPTT: update after every k1 steps; 0: 1 (dense) or 16 (tokens).
        tbptt_k2: TBPTT: back-propagate through k2 steps; 0: k1 when k1 is set, else 8 (dense) or 16.
        optimizer: ``"adam"``, ``"sgd"``, ``"rmsprop"`` or ``"adagrad"`` (torch.optim's semantics); "": adam.
        lr: learning rate; None: Adam 1e-2 (tokens 1e-3), torch.optim's default for the others.
        momentum: SGD / RMSProp momentum.
        nesterov: SGD: Nesterov momentum.
        betas: Adam's (beta1, beta2).
        eps: None: torch.optim's default (1e-8 for adam and rmsprop, 1e-10 for adagrad).
        alpha: RMSProp's smoothing constant.
        clip_norm: clip the gradient's global norm to this; 0: no clipping.
        weight_decay: L2 weight decay (torch.optim's ``weight_decay``).
        sharing: ``"shared"`` (one set of weights) or ``"per_stream"`` (weights per stream).
        device: ``"cpu"`` or ``"cuda"``.
        seed: seed of the initial weights.
        target_mode: ``"explicit"`` targets, or ``"next_input"`` (forecasting, language models).
        members: ensemble members, each a dict of the fields it overrides (Hedge combines them),
            or {"baseline": name} for a member that is not a network ("last_target", "seasonal",
            "seasonal_scaled", "running_median", "knn", "knn_wide", "tree", "context"); None:
            the measured members for a shape-only model, else none.
        hedge_rate: Hedge's learning rate; 0: the default (1 for classes and for regression).
        max_label_delay: > 0: targets may come later as labels naming their step, up to this many steps.
        normalize: online standardisation: ``"off"``, ``"shared"``, ``"per_stream"``; "": as ``sharing``.
        normalize_decay: 0: no forgetting; in (0, 1): exponential forgetting for drifting streams.
        input_taps: lags of the input fed beside x_t (TDNN / NARX), e.g. (1, 2, 12).
        output_taps: lags of the observed target fed beside x_t; None: (1,) for dense regression; [0]: none.
        linear_skip: a linear path from the inputs to the head; None: on for dense input on the CPU.
        context_table_bits: the "context" member's table, 2^bits slots of 4 bytes; 0: 22 (16 MiB).
    """

    name: str = ""
    cell: str = ""
    lstm_variant: str = "standard"
    gru_variant: str = "pytorch"
    hidden_sizes: tuple = ()
    input_size: int = 0
    vocab_size: int = 0
    output_size: int = 0
    num_classes: int = 0
    algorithm: str = ""
    tbptt_k1: int = 0
    tbptt_k2: int = 0
    optimizer: str = ""
    lr: Optional[float] = None
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple = (0.9, 0.999)
    eps: Optional[float] = None
    alpha: float = 0.99
    clip_norm: float = 0.0
    weight_decay: float = 0.0
    sharing: str = "shared"
    device: str = "cpu"
    seed: int = 0
    target_mode: str = "explicit"
    members: Optional[tuple] = None
    hedge_rate: float = 0.0
    max_label_delay: int = 0
    normalize: str = ""
    normalize_decay: float = 0.0
    input_taps: tuple = ()
    output_taps: Optional[tuple] = None
    linear_skip: Optional[bool] = None
    context_table_bits: int = 0

    def fields(self) -> dict[str, Any]:
        """The keyword form ``create_model`` sends (unset: left to the server's default)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) not in (None, "", ())}


def field_help() -> dict[str, str]:
    """Each field's one-line meaning, from ModelSpec's docstring (for --help texts)."""
    out, doc = {}, inspect.getdoc(ModelSpec) or ""
    for line in doc.split("Attributes:", 1)[-1].splitlines():
        key, sep, text = line.strip().partition(": ")
        if sep and key.isidentifier():
            out[key] = text.replace('``"', "").replace('"``', "").replace("``", "")
    return out


def effective(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (create_model's keyword form, as the server returns it) with the values the
    server uses where it leaves a field unset: lr and eps by optimizer, TBPTT's k2 = k1."""
    out = dict(spec)
    opt = out.get("optimizer") or "adam"
    if not out.get("lr"):
        table = DEFAULT_TOKEN_LR if out.get("vocab_size") else DEFAULT_LR
        out["lr"] = table.get(opt, out.get("lr"))
    if out.get("eps") is None:
        out["eps"] = DEFAULT_EPS.get(opt)
    for field in ("momentum", "alpha", "betas"):
        if out.get(field) is None:
            out[field] = getattr(ModelSpec, field)
    if out.get("algorithm") == "tbptt" and out.get("tbptt_k1"):  # the server names both
        out["tbptt_k2"] = out.get("tbptt_k2") or out["tbptt_k1"]
    return out


def create_model_signature(method) -> inspect.Signature:
    """``method(self, spec=None, *, <every ModelSpec field with its default>)`` for help()."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("spec", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                annotation="ModelSpec | None")]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
               for f in dataclasses.fields(ModelSpec)]
    return inspect.signature(method).replace(parameters=params)


def merged(spec: ModelSpec | None, fields: dict[str, Any]) -> dict[str, Any]:
    """A ModelSpec's fields overridden by keyword fields."""
    if spec is not None and not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a clients.ModelSpec (or pass its fields as keywords), not {type(spec).__name__}")
    return {**(spec.fields() if spec is not None else {}), **fields}
