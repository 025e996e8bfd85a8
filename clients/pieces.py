"""Weights in pieces for ``ExportWeightsStream`` / ``ImportWeightsStream``: a model of any
size moves in messages under gRPC's size limit (4 MiB by default on a client)."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb

# float32 values per piece: about 2.5 MiB on the wire, under every default message limit
PIECE_VALUES = 1 << 19


def to_pieces(model: str, stream_id: str, weights: Mapping[str, Any],
              per_piece: int = PIECE_VALUES) -> Iterator[pb.WeightsPiece]:
    """The pieces of a state dict (numpy arrays or torch tensors), each tensor's in order."""
    for name, value in weights.items():
        if hasattr(value, "detach"):  # a torch tensor, without importing torch
            value = value.detach().cpu().numpy()
        flat = np.asarray(value, dtype=np.float32).ravel()
        shape = list(np.shape(value))
        for start in range(0, max(flat.size, 1), per_piece):
            yield pb.WeightsPiece(model=model, stream_id=stream_id, name=name, shape=shape, offset=start,
                                  data=flat[start:start + per_piece].tolist())


def from_pieces(pieces: Iterable[pb.WeightsPiece]) -> dict[str, np.ndarray]:
    """A PyTorch-style state dict of numpy arrays, assembled from the server's pieces."""
    parts: dict[str, list] = {}
    shapes: dict[str, tuple] = {}
    for piece in pieces:
        shapes[piece.name] = tuple(piece.shape)
        parts.setdefault(piece.name, []).append(np.asarray(piece.data, dtype=np.float32))
    return {name: np.concatenate(chunks).reshape(shapes[name]) for name, chunks in parts.items()}
