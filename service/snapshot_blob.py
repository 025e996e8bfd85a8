"""The bytes a snapshot (``{name: ndarray}``) is stored as.

A blob is ``MAGIC``, the header's length (4 bytes, little-endian), a JSON header
``[[name, dtype, shape], ...]`` and then each array's bytes in C order, back to back. It is
written here rather than with ``np.savez`` because a zip archive per stream cost about 1 ms to
write and 2 ms to read, which at thousands of streams per checkpoint held the GIL for seconds
while the event loop waited; this takes tens of microseconds. Blobs written by ``np.savez``
(stores made before) are still read.
"""
from __future__ import annotations

import io
import json

import numpy as np

MAGIC = b"RNSB\x01"
_NPZ_MAGIC = b"PK\x03\x04"
# booleans, integers and floats only: nothing that needs pickle or carries pointers
_KINDS = frozenset("biuf")


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    header, parts = [], []
    for name, value in arrays.items():
        a = np.asarray(value)
        if a.dtype.kind not in _KINDS:
            raise TypeError(f"snapshot field {name!r} has dtype {a.dtype}; only bool, integer and float arrays are stored")
        header.append([name, a.dtype.str, list(a.shape)])
        parts.append(np.ascontiguousarray(a).tobytes())
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([MAGIC, len(head).to_bytes(4, "little"), head, *parts])


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    blob = bytes(blob)
    if blob.startswith(_NPZ_MAGIC):
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise ValueError("not a snapshot blob: it starts with neither rnnstream's mark nor a .npz archive's")
    at = len(MAGIC) + 4
    end = at + int.from_bytes(blob[len(MAGIC):at], "little")
    try:
        header = json.loads(blob[at:end])
        out = {}
        for name, dtype_str, shape in header:
            dtype = np.dtype(dtype_str)
            if dtype.kind not in _KINDS or any(int(n) < 0 for n in shape):
                raise ValueError(f"field {name!r}: dtype {dtype_str}, shape {shape}")
            size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
            if end + size > len(blob):
                raise ValueError(f"field {name!r} needs {size} bytes, {len(blob) - end} are left")
            # a copy: owned, aligned and writable, like the arrays np.load returned
            out[name] = np.frombuffer(blob, dtype, count=size // dtype.itemsize, offset=end).reshape(shape).copy()
            end += size
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"corrupt snapshot blob: {exc}") from None
    if end != len(blob):
        raise ValueError(f"corrupt snapshot blob: {len(blob) - end} bytes after the last field")
    return out
