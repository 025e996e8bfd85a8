"""The engine's documentation runs: ``Engine``'s docstring examples, and README's engine
snippets ("The engine, in-process"; "Online model selection") as pasted."""
from __future__ import annotations

import numpy as np

from rnnstream.service import engine as engine_package
from rnnstream.service.engine import engine as engine_module
from tests.doc_examples import readme_python_block, run_docstring_examples


def test_engine_docstring_examples_run():
    assert run_docstring_examples(engine_module, "Engine") >= 5


def test_readme_engine_snippets_run_as_pasted(capsys):
    namespace: dict = {}
    exec(readme_python_block("The engine, in-process"), namespace)
    predictions, losses = namespace["predictions"], namespace["losses"]
    assert predictions.shape == (2, 16, 1) and losses.shape == (2, 16) and np.isfinite(losses).all()
    assert "weight_ih_l0" in namespace["torch_weights"]
    printed = capsys.readouterr().out
    assert "'steps': 16" in printed and "gradient_norm" in printed, printed

    # the Hedge snippet follows on from it in the README (numpy, Spec imported there)
    exec(readme_python_block("Online model selection (Hedge over member configurations)"), namespace)
    engine = namespace["engine"]
    assert isinstance(engine, engine_package.EnsembleEngine) and len(engine.spec.members) == 4
    x = np.random.default_rng(0).standard_normal((1, 4, 4)).astype(np.float32)
    predictions, losses = engine.step(["s"], inputs=x, targets=x[:, :, :1])
    assert predictions.shape == (1, 4, 1) and np.isfinite(losses).all()
