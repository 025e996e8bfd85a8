"""What `rnnstream push` reads: CSV columns, text as tokens; and the predictions it writes."""
import io

import numpy as np
import pytest

from rnnstream.clients import datafiles
from rnnstream.clients.datafiles import DataError


def chunks_of(text, inputs=None, targets=None, chunk=2, **kw):
    columns, rows = datafiles.open_csv(io.StringIO(text), inputs, targets)
    return columns, list(datafiles.csv_chunks(columns, rows, chunk, **kw))


def test_columns_by_name_with_a_header():
    columns, chunks = chunks_of("time,flow,temp\n1,10,20\n2,11,21\n3,12,22\n", "flow", "temp")
    assert (columns.inputs, columns.targets) == ([1], [2])
    assert [c["inputs"].shape for c in chunks] == [(2, 1), (1, 1)]
    np.testing.assert_array_equal(chunks[0]["targets"], [[20], [21]])


def test_columns_by_index_without_a_header_and_default_inputs():
    columns, chunks = chunks_of("1,2,3\n4,5,6\n", targets="-1", chunk=10)
    assert columns.names == ["0", "1", "2"] and columns.inputs == [0, 1]
    np.testing.assert_array_equal(chunks[0]["inputs"], [[1, 2], [4, 5]])


def test_class_targets_and_token_inputs_are_integers():
    _, chunks = chunks_of("tok,label\n5,1\n6,0\n", "tok", "label", classes=True, tokens=True)
    assert chunks[0]["tokens"].dtype == np.int64 and list(chunks[0]["targets"]) == [1, 0]


def test_limit_and_blank_lines():
    _, chunks = chunks_of("a\n1\n\n2\n3\n4\n", chunk=2, limit=3)
    assert sum(len(c["inputs"]) for c in chunks) == 3


@pytest.mark.parametrize("text, inputs, message", [
    ("a,b\n1,2\n", "c", "no column 'c'"),
    ("a,b\n1,2\n", "5", "out of range"),
    ("a,b\n1,2\n3,x\n", None, "line 3, column 'b': 'x' is not a finite number"),
    ("a,b\n1,2\n3\n", None, "line 3: has 1 fields"),
    ("a\n1\nnan\n", None, "is not a finite number"),
    ("", None, "empty"),
])
def test_bad_csv_is_refused_with_where_and_why(text, inputs, message):
    with pytest.raises(DataError, match=message):
        chunks_of(text, inputs)


def test_text_as_bytes_and_as_characters():
    text = "héllo".encode()
    assert [list(c["tokens"]) for c in datafiles.text_chunks(io.BytesIO(text), "bytes", 256, 4)] == \
        [[104, 195, 169, 108], [108, 111]]
    # a character split across reads still decodes as one token
    chars = list(datafiles.text_chunks(io.BytesIO(text), "chars", 256, 2))
    assert [list(c["tokens"]) for c in chars] == [[104, 233], [108, 108], [111]]
    assert datafiles.decode(datafiles.encode("héllo", "chars", 256), "chars") == "héllo"
    assert datafiles.decode(datafiles.encode("héllo", "bytes", 256), "bytes") == "héllo"


def test_text_limit_and_unknown_characters():
    chunks = list(datafiles.text_chunks(io.BytesIO(b"abcdefgh"), "bytes", 256, 3, limit=5))
    assert [len(c["tokens"]) for c in chunks] == [3, 2]
    with pytest.raises(DataError, match="outside the model's vocabulary of 128"):
        datafiles.encode("naïve", "chars", 128)
    assert list(datafiles.encode("naïve", "chars", 128, unknown=0)) == [110, 97, 0, 118, 101]


def test_prediction_writer_rows():
    out = io.StringIO()
    w = datafiles.PredictionWriter(out, ["flow"], classes=False)
    w.write(np.array([[1.5], [2.5]], np.float32), np.array([np.nan, 0.25], np.float32))
    assert out.getvalue().splitlines() == ["step,loss,pred_flow", "1,,1.5", "2,0.25,2.5"]
    out = io.StringIO()
    datafiles.PredictionWriter(out, None, classes=True).write(np.array([[0.1, 0.9]]), np.array([0.1]))
    assert out.getvalue().splitlines() == ["step,loss,top,p_top", "1,0.1,1,0.9"]
