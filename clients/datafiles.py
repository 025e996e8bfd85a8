"""Reading what ``rnnstream push`` streams (CSV rows, text as tokens) and writing predictions.

Everything reads lazily, chunk by chunk, so that ``push`` from a pipe streams in real time
and a large file never sits in memory whole.
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import math
from typing import IO, Iterator, Sequence

import numpy as np


class DataError(ValueError):
    """The input file cannot be read as asked (bad column, non-number, unknown character)."""


# -- CSV ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CsvColumns:
    """Which columns feed the inputs and which the targets (indices into each row)."""

    names: list[str]
    inputs: list[int]
    targets: list[int]


def _looks_numeric(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def _resolve(spec: str, names: list[str], header: bool) -> list[int]:
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if header and part in names:
            out.append(names.index(part))
        elif part.lstrip("-").isdigit():
            idx = int(part)
            if not -len(names) <= idx < len(names):
                raise DataError(f"column {idx} is out of range: the file has {len(names)} columns")
            out.append(idx % len(names))
        else:
            known = ", ".join(names) if header else f"0..{len(names) - 1}"
            raise DataError(f"no column {part!r} (columns: {known})")
    return out


def open_csv(stream: IO[str], inputs: str | None, targets: str | None, *, header: bool | None = None,
             delimiter: str = ",") -> tuple[CsvColumns, Iterator[list[str]]]:
    """Read the first row and settle the columns; return them and an iterator over data rows.

    ``inputs``/``targets`` are comma-separated names (with a header) or 0-based indices.
    Without ``inputs``, every column that is not a target is an input. ``header=None``
    guesses: the first row is a header when any of its fields is not a number.
    """
    reader = csv.reader(stream, delimiter=delimiter)
    first = next(reader, None)
    if first is None:
        raise DataError("the CSV input is empty")
    if header is None:
        header = not all(_looks_numeric(f) for f in first)
    names = [f.strip() for f in first] if header else [str(i) for i in range(len(first))]
    target_cols = _resolve(targets, names, header) if targets else []
    input_cols = (_resolve(inputs, names, header) if inputs
                  else [i for i in range(len(names)) if i not in target_cols])
    if not input_cols:
        raise DataError("no input columns: name them with --inputs")
    rows = reader if header else _chain_first(first, reader)
    return CsvColumns(names, input_cols, target_cols), rows


def _chain_first(first, rest):
    yield first
    yield from rest


def csv_chunks(columns: CsvColumns, rows: Iterator[list[str]], chunk: int, *, classes: bool = False,
               tokens: bool = False, limit: int | None = None) -> Iterator[dict]:
    """``send`` keyword chunks of at most ``chunk`` rows: inputs (or tokens) and targets."""
    line = 1
    taken = 0
    while limit is None or taken < limit:
        size = chunk if limit is None else min(chunk, limit - taken)
        block = []
        for row in rows:
            line += 1
            if not row or all(not f.strip() for f in row):
                continue
            block.append(row)
            if len(block) == size:
                break
        if not block:
            return
        taken += len(block)
        yield _chunk_of(block, columns, line - len(block) + 1, classes, tokens)


def _chunk_of(block, columns: CsvColumns, first_line: int, classes: bool, tokens: bool) -> dict:
    def column_values(cols, as_int):
        out = np.empty((len(block), len(cols)), dtype=np.int64 if as_int else np.float32)
        for r, row in enumerate(block):
            for c, col in enumerate(cols):
                try:
                    field = row[col]
                    value = float(field)
                    if as_int and (not value.is_integer()):
                        raise ValueError
                    if not math.isfinite(value):
                        raise ValueError
                except IndexError:
                    raise DataError(f"line {first_line + r}: has {len(row)} fields, "
                                    f"column {columns.names[col]!r} is missing") from None
                except ValueError:
                    kind = "an integer" if as_int else "a finite number"
                    raise DataError(f"line {first_line + r}, column {columns.names[col]!r}: "
                                    f"{row[col]!r} is not {kind}") from None
                out[r, c] = value
        return out

    inputs = column_values(columns.inputs, tokens)
    chunk = {"tokens": inputs[:, 0]} if tokens else {"inputs": inputs}
    if columns.targets:
        targets = column_values(columns.targets, classes)
        chunk["targets"] = targets[:, 0] if classes else targets
    return chunk


# -- text as tokens ------------------------------------------------------------------------------

def encode(text: str | bytes, mode: str, vocab_size: int, unknown: int | None = None) -> np.ndarray:
    """Token ids of a text: UTF-8 ``bytes`` (0..255), or ``chars`` (Unicode code points).

    A code point at or above ``vocab_size`` is replaced by ``unknown``, or refused.
    """
    if mode == "bytes":
        data = text.encode("utf-8") if isinstance(text, str) else text
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    elif mode == "chars":
        text = text.decode("utf-8") if isinstance(text, bytes) else text
        ids = np.fromiter((ord(c) for c in text), dtype=np.int64, count=len(text))
    else:
        raise DataError(f"unknown token mode {mode!r} (bytes or chars)")
    bad = ids >= vocab_size
    if bad.any():
        if unknown is None:
            first = int(ids[bad][0])
            what = f"byte {first}" if mode == "bytes" else f"character {chr(first)!r} (U+{first:04X})"
            raise DataError(f"{what} is outside the model's vocabulary of {vocab_size} tokens "
                            f"(pass --unknown ID to map such characters to one token)")
        ids[bad] = unknown
    return ids


def decode(ids: Sequence[int], mode: str) -> str:
    """The text of token ids (the inverse of :func:`encode`); broken UTF-8 shows as U+FFFD."""
    if mode == "bytes":
        return bytes(int(i) & 0xFF for i in ids).decode("utf-8", errors="replace")
    return "".join(chr(int(i)) for i in ids)


def text_chunks(stream: IO[bytes], mode: str, vocab_size: int, chunk: int, *, unknown: int | None = None,
                limit: int | None = None) -> Iterator[dict]:
    """``send`` keyword chunks of at most ``chunk`` tokens read from a binary stream."""
    decoder = codecs.getincrementaldecoder("utf-8")() if mode == "chars" else None
    read = getattr(stream, "read1", stream.read)  # read1: what a pipe has now, not a full block
    pending = np.empty(0, dtype=np.int64)
    taken = 0
    while limit is None or taken < limit:
        data = read(chunk)
        final = not data
        piece = decoder.decode(data, final=final) if decoder else data
        if piece:
            pending = np.concatenate([pending, encode(piece, mode, vocab_size, unknown)])
        while len(pending) >= chunk or (final and len(pending)):
            take = chunk if limit is None else min(chunk, limit - taken)
            if take <= 0:
                return
            yield {"tokens": pending[:take]}
            taken += len(pending[:take])
            pending = pending[take:]
        if final:
            return


# -- predictions out -----------------------------------------------------------------------------

class PredictionWriter:
    """Writes one CSV row per step: step, loss, then the predictions.

    Regression: one column per output (``pred_<target name>``). Classes or tokens: the most
    probable class and its probability (``top``, ``p_top``).
    """

    def __init__(self, stream: IO[str], output_names: Sequence[str] | None, classes: bool):
        self._stream = stream
        self._writer = csv.writer(stream)
        self._classes = classes
        self._names = list(output_names or [])
        self._header_done = False
        self._step = 0

    def write(self, predictions: np.ndarray, losses: np.ndarray) -> None:
        if not self._header_done:
            if self._classes:
                cols = ["top", "p_top"]
            else:
                width = predictions.shape[1] if predictions.ndim == 2 else 0
                names = self._names if len(self._names) == width else [str(i) for i in range(width)]
                cols = [f"pred_{n}" for n in names]
            self._writer.writerow(["step", "loss", *cols])
            self._header_done = True
        for row, loss in zip(predictions, losses):
            self._step += 1
            if self._classes:
                top = int(np.argmax(row))
                values = [top, f"{row[top]:.6g}"]
            else:
                values = [f"{v:.7g}" for v in row]
            self._writer.writerow([self._step, "" if math.isnan(loss) else f"{loss:.7g}", *values])
        self._stream.flush()  # a live feed's reader sees each chunk's rows when they are answered
