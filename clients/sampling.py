"""Sampling text from a token model: temperature and top-k over the served probabilities.

The server predicts; the client samples. Generation runs on a scratch stream with
``predict_only`` chunks, so it advances no real stream and trains nothing; the scratch stream
is ephemeral (never stored, gone when the call ends), or deleted afterwards when it needed
another stream's weights imported.
"""
from __future__ import annotations

import uuid
from typing import Iterator, Sequence

import numpy as np

from .client import Client


def sample(probs: np.ndarray, temperature: float = 1.0, top_k: int = 0,
           rng: np.random.Generator | None = None) -> int:
    """One token id from a probability row.

    ``temperature`` rescales log-probabilities (0 picks the most probable token); ``top_k``
    > 0 keeps only the k most probable tokens before sampling.
    """
    p = np.asarray(probs, dtype=np.float64).ravel()
    if temperature <= 0:
        return int(np.argmax(p))
    logits = np.log(np.maximum(p, 1e-30)) / temperature
    if 0 < top_k < p.size:
        cutoff = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits >= cutoff, logits, -np.inf)
    logits -= logits.max()
    weights = np.exp(logits)
    rng = rng or np.random.default_rng()
    return int(rng.choice(p.size, p=weights / weights.sum()))


def generate(client: Client, model: str, prime: Sequence[int], length: int, *, temperature: float = 1.0,
             top_k: int = 0, seed: int | None = None, weights_of: str | None = None) -> Iterator[int]:
    """Yield ``length`` sampled token ids that continue ``prime`` (at least one token).

    ``weights_of`` names a stream whose weights to sample from (PER_STREAM models); the
    shared weights are used otherwise. The scratch stream is never left in the server's store.
    """
    if len(prime) == 0:
        raise ValueError("generation needs a prime of at least one token")
    rng = np.random.default_rng(seed)
    scratch = f"generate-{uuid.uuid4().hex[:12]}"
    if weights_of:
        client.import_weights(model, client.export_weights(model, weights_of), stream_id=scratch)
    try:
        with client.stream(model, scratch, predict_only=True, ephemeral=not weights_of) as session:
            probs = session.send(tokens=np.asarray(prime)).predictions[-1]
            for i in range(length):
                token = sample(probs, temperature, top_k, rng)
                yield token
                if i + 1 < length:
                    probs = session.send(tokens=[token]).predictions[-1]
    finally:
        if weights_of:  # the import stored it: forget it (an ephemeral one is already gone)
            try:
                client.delete_stream(model, scratch)
            except Exception:  # best-effort tidying; the sample stands
                pass
