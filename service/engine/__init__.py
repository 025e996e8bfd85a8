"""The in-process online learner the gRPC service drives; usable on its own.

    from service.engine import Spec, Engine
    eng = Engine(Spec(cell="lstm", hidden_sizes=(32,), input_size=4, output_size=1))
    predictions, losses = eng.step(["sensor-7"], inputs=x, targets=y)
"""
from .engine import CallStats, Engine, SKIP_REASONS, memory_per_stream, warm_up
from .spec import Spec

__all__ = ["Spec", "Engine", "CallStats", "SKIP_REASONS", "memory_per_stream", "warm_up"]
