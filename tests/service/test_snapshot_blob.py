"""Snapshot blobs: exact round trips, old .npz blobs still read, damage refused in one line."""
import io

import numpy as np
import pytest

from rnnstream.service.snapshot_blob import MAGIC, pack, unpack

ARRAYS = {
    "state": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "cnt": np.array([3, -1, 2**40], dtype=np.int64),
    "flags": np.array([1, 0, 2], dtype=np.int8),
    "mask": np.array([True, False]),
    "scalar": np.float64(np.pi),
    "empty": np.zeros((0, 4), np.float32),
    "wide": np.full((1, 2, 3), np.nan, np.float64),
    "big_endian": np.arange(3, dtype=">f4"),
    "strided": np.arange(20, dtype=np.float64).reshape(4, 5)[:, ::2],
}


def _same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_round_trip_keeps_names_order_dtypes_shapes_and_bits():
    blob = pack(ARRAYS)
    assert blob.startswith(MAGIC)
    back = unpack(blob)
    assert list(back) == list(ARRAYS)
    for name, value in ARRAYS.items():
        assert _same(back[name], np.asarray(value)), name
        assert back[name].flags.writeable and back[name].flags.aligned


def test_blobs_written_by_np_savez_still_load():
    buf = io.BytesIO()
    np.savez(buf, **{k: v for k, v in ARRAYS.items()})
    back = unpack(buf.getvalue())
    for name, value in ARRAYS.items():
        assert _same(back[name], np.asarray(value)), name


def test_an_empty_snapshot_round_trips():
    assert unpack(pack({})) == {}


@pytest.mark.parametrize("cut", [1, 7, 40])
def test_a_truncated_blob_is_refused_in_one_line(cut):
    blob = pack(ARRAYS)
    with pytest.raises(ValueError, match="corrupt snapshot blob|not a snapshot blob"):
        unpack(blob[:-cut] if cut != 7 else blob[:7])


def test_trailing_bytes_and_foreign_blobs_are_refused():
    with pytest.raises(ValueError, match="bytes after the last field"):
        unpack(pack(ARRAYS) + b"\0")
    with pytest.raises(ValueError, match="not a snapshot blob"):
        unpack(b"\x80\x04pickle")


def test_object_arrays_are_neither_written_nor_read():
    with pytest.raises(TypeError, match="only bool, integer and float"):
        pack({"o": np.array([object()], dtype=object)})
    forged = pack({"x": np.zeros(1)}).replace(b"<f8", b"|O8")
    with pytest.raises(ValueError, match="corrupt snapshot blob"):
        unpack(forged)
