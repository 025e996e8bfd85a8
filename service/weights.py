"""Weights in pieces: ``ExportWeightsStream`` splits every tensor into pieces under the
message limit; ``ImportWeightsStream`` assembles them, checking each piece against the
model's layout as it arrives (so a bad stream is refused early and memory stays bounded by
the model's own size)."""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service.convert import check_values, shown
from rnnstream.service.errors import invalid

# float32 values per piece: 2 MiB of data, under a gRPC client's default 4 MiB receive limit
PIECE_VALUES = 1 << 19


def piece_values(max_message_bytes: int) -> int:
    """Values per piece for a message limit: a quarter of it (floats are 4-5 bytes on the wire)."""
    return max(1024, min(PIECE_VALUES, max_message_bytes // 8))


def unary_bytes(state: dict) -> int:
    """An upper bound of the unary ``Weights`` message's size (packed floats, names, framing)."""
    return sum(4 * int(np.size(a)) + len(name) + 64 for name, a in state.items()) + 1024


def split(model: str, stream_id: str, state: dict, per_piece: int) -> Iterator[pb.WeightsPiece]:
    for name, array in state.items():
        flat = np.asarray(array, np.float32).ravel()
        shape = list(np.shape(array))
        for start in range(0, max(flat.size, 1), per_piece):
            yield pb.WeightsPiece(model=model, stream_id=stream_id, name=name, shape=shape, offset=start,
                                  data=flat[start:start + per_piece].tolist())


class Assembler:
    """Collects pieces for one model's layout [(name, shape, offset)]; ``result()`` checks all
    came. ``optional`` [(name, shape)] may come too (normalisation statistics)."""

    def __init__(self, layout, optional=()):
        self.required = {name for name, _, _ in layout}
        self.expected = {name: tuple(int(d) for d in shape) for name, shape, _ in layout}
        self.expected.update({name: tuple(int(d) for d in shape) for name, shape in optional})
        self.arrays: dict[str, np.ndarray] = {}
        self.filled: dict[str, int] = {}

    def add(self, piece: pb.WeightsPiece) -> None:
        name = piece.name
        if name not in self.expected:
            raise invalid(f"tensor {shown(name)} is not a parameter of this model; expected {sorted(self.expected)}")
        shape = tuple(piece.shape)
        if shape != self.expected[name]:
            raise invalid(f"tensor {name!r} has shape {list(shape)}, the model needs {list(self.expected[name])}")
        if name not in self.arrays:
            self.arrays[name] = np.empty(math.prod(shape), np.float32)
            self.filled[name] = 0
        done, size = self.filled[name], self.arrays[name].size
        if piece.offset != done:
            raise invalid(f"tensor {name!r}: a piece starts at offset {piece.offset}, but {done} values have "
                          "arrived; send each tensor's pieces in order, without gaps or repeats")
        data = np.asarray(piece.data, dtype=np.float32)
        if done + data.size > size:
            raise invalid(f"tensor {name!r}: {done + data.size} values for shape {list(shape)} ({size} values)")
        check_values(data, f"tensor {name!r}")
        self.arrays[name][done:done + data.size] = data
        self.filled[name] = done + data.size

    def result(self) -> dict[str, np.ndarray]:
        missing = sorted(self.required - set(self.arrays))
        if missing:
            raise invalid(f"missing tensors: {missing}")
        short = [f"{n} ({self.filled[n]} of {a.size} values)" for n, a in self.arrays.items()
                 if self.filled[n] != a.size]
        if short:
            raise invalid(f"incomplete tensors: {', '.join(short)}")
        return {n: a.reshape(self.expected[n]) for n, a in self.arrays.items()}
