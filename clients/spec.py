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

# torch.optim's defaults, as the server applies them when lr / eps are left unset
DEFAULT_LR = {"sgd": 1e-3, "adam": 1e-3, "rmsprop": 1e-2, "adagrad": 1e-2}
DEFAULT_EPS = {"sgd": 0.0, "adam": 1e-8, "rmsprop": 1e-8, "adagrad": 1e-10}


@dataclass
class ModelSpec:
    """What a model is and how it learns; every field has the server's default.

    Attributes:
        name: the model's name (letters, digits, ``-_.``), unique on the server.
        cell: ``"elman"``, ``"jordan"``, ``"lstm"`` or ``"gru"``.
        lstm_variant: ``"standard"``, ``"peephole"``, ``"coupled"`` (f = 1 - i) or ``"no_forget"``.
        gru_variant: ``"pytorch"`` (torch.nn.GRU) or ``"cho"`` (reset gate before the recurrent matrix).
        hidden_sizes: units per layer, one entry per stacked layer.
        input_size: features per step (the embedding width when ``vocab_size > 0``).
        vocab_size: > 0: token input through an embedding of this many tokens.
        output_size: regression outputs (set this or ``num_classes``).
        num_classes: classification outputs through a softmax head.
        algorithm: learning rule: ``"tbptt"``, ``"rtrl"`` (exact, small states) or ``"snap1"``.
        tbptt_k1: TBPTT: update after every k1 steps.
        tbptt_k2: TBPTT: back-propagate through k2 steps; 0 means k2 = k1.
        optimizer: ``"adam"``, ``"sgd"``, ``"rmsprop"`` or ``"adagrad"`` (torch.optim's semantics).
        lr: learning rate; None: torch.optim's default (1e-3 for adam and sgd, 1e-2 otherwise).
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
    """

    name: str = ""
    cell: str = "lstm"
    lstm_variant: str = "standard"
    gru_variant: str = "pytorch"
    hidden_sizes: tuple = (32,)
    input_size: int = 1
    vocab_size: int = 0
    output_size: int = 0
    num_classes: int = 0
    algorithm: str = "tbptt"
    tbptt_k1: int = 16
    tbptt_k2: int = 0
    optimizer: str = "adam"
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

    def fields(self) -> dict[str, Any]:
        """The keyword form ``create_model`` sends (None: left to the server's default)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


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
    opt = out.get("optimizer") or ModelSpec.optimizer
    if not out.get("lr"):
        out["lr"] = DEFAULT_LR.get(opt, out.get("lr"))
    if out.get("eps") is None:
        out["eps"] = DEFAULT_EPS.get(opt)
    for field in ("momentum", "alpha", "betas"):
        if out.get(field) is None:
            out[field] = getattr(ModelSpec, field)
    if out.get("algorithm") == "tbptt":
        out["tbptt_k1"] = out.get("tbptt_k1") or out.get("tbptt_k2") or ModelSpec.tbptt_k1
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
