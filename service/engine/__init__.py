"""The in-process online learner the gRPC service drives; usable on its own.

    from rnnstream.service.engine import Spec, make_engine
    eng = make_engine(Spec(cell="lstm", hidden_sizes=(32,), input_size=4, output_size=1))
    predictions, losses = eng.step(["sensor-7"], inputs=x, targets=y)

``make_engine`` returns an :class:`Engine`, or an :class:`EnsembleEngine` when the spec names
two or more members; both have the same interface.
"""
from .engine import CallStats, Engine, SKIP_REASONS
from .ensemble import EnsembleCallStats, EnsembleEngine, make_engine, memory_per_model, memory_per_stream
from .spec import Spec
from .warm import warm_up

__all__ = ["Spec", "Engine", "EnsembleEngine", "make_engine", "CallStats", "EnsembleCallStats",
           "SKIP_REASONS", "memory_per_model", "memory_per_stream", "warm_up"]
