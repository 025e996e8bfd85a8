"""Durable state in SQLite (WAL mode): model specs, model snapshots, stream snapshots.

Snapshots are the engine's ``{name: ndarray}`` dicts written with ``np.savez`` into BLOBs.
All access goes through one worker thread, so commits happen in the order they were asked
for; the event loop awaits :meth:`Store.call`. A checkpoint is one transaction: a crash
leaves either the previous checkpoint or the new one, never a mix.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import os
import sqlite3
import time
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    spec_json TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    state BLOB NOT NULL,            -- engine.snapshot_model(): weights, optimizer state, counters
    updated_unix_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (
    model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    stream_id TEXT NOT NULL,
    acked_seq INTEGER NOT NULL,     -- the last chunk this state includes
    stats_json TEXT NOT NULL,
    state BLOB NOT NULL,            -- engine.snapshot_stream(sid)
    updated_unix_ms INTEGER NOT NULL,
    PRIMARY KEY (model, stream_id)
);
"""


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class StoredModel(NamedTuple):
    name: str
    spec: dict
    created_unix_ms: int
    state: dict[str, np.ndarray]


class StoredStream(NamedTuple):
    acked_seq: int
    stats: dict
    state: dict[str, np.ndarray]


class StreamRecord(NamedTuple):
    """One stream's checkpoint, as handed to :meth:`Store.checkpoint`."""
    model: str
    stream_id: str
    acked_seq: int
    stats: dict
    state: dict[str, np.ndarray]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Store:
    """The SQLite file ``<data_dir>/rnnstream.sqlite3``; methods run on the store's own thread."""

    def __init__(self, data_dir: str):
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, "rnnstream.sqlite3")
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rnnstream-store")
        self._db: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, not only a process crash.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        self._db = db

    async def call(self, fn: Callable[..., Any], *args) -> Any:
        """Run ``fn(*args)`` (a method of this store) on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def run(self, fn: Callable[..., Any], *args) -> Any:
        """Blocking form of :meth:`call`, for start-up and shutdown."""
        return self._executor.submit(fn, *args).result()

    def close(self) -> None:
        def _close():
            if self._db is not None:
                self._db.close()
                self._db = None
        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)

    # -- models ---------------------------------------------------------------------------
    def insert_model(self, name: str, spec: dict, created_unix_ms: int, state: dict) -> bool:
        """False when the name is taken."""
        try:
            self._db.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?)",
                             (name, json.dumps(spec), created_unix_ms, pack(state), _now_ms()))
        except sqlite3.IntegrityError:
            return False
        return True

    def delete_model(self, name: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM streams WHERE model = ?", (name,))
            self._db.execute("DELETE FROM models WHERE name = ?", (name,))

    def load_models(self) -> list[StoredModel]:
        rows = self._db.execute("SELECT name, spec_json, created_unix_ms, state FROM models ORDER BY name")
        return [StoredModel(n, json.loads(s), c, unpack(b)) for n, s, c, b in rows.fetchall()]

    # -- streams --------------------------------------------------------------------------
    def load_stream(self, model: str, stream_id: str) -> StoredStream | None:
        row = self._db.execute("SELECT acked_seq, stats_json, state FROM streams WHERE model = ? AND stream_id = ?",
                               (model, stream_id)).fetchone()
        return None if row is None else StoredStream(row[0], json.loads(row[1]), unpack(row[2]))

    def stream_info(self, model: str, stream_id: str) -> tuple[int, dict] | None:
        row = self._db.execute("SELECT acked_seq, stats_json FROM streams WHERE model = ? AND stream_id = ?",
                               (model, stream_id)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def count_streams(self, model: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM streams WHERE model = ?", (model,)).fetchone()[0]

    def delete_stream(self, model: str, stream_id: str) -> None:
        self._db.execute("DELETE FROM streams WHERE model = ? AND stream_id = ?", (model, stream_id))

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, models: Iterable[tuple[str, dict]], streams: Iterable[StreamRecord]) -> None:
        """Model snapshots and stream snapshots, committed together."""
        now = _now_ms()
        model_rows = [(pack(state), now, name) for name, state in models]
        stream_rows = [(r.model, r.stream_id, r.acked_seq, json.dumps(r.stats), pack(r.state), now)
                       for r in streams]
        with self._tx():
            self._db.executemany("UPDATE models SET state = ?, updated_unix_ms = ? WHERE name = ?", model_rows)
            # A stream of a model deleted meanwhile is left out (foreign key), not an error.
            self._db.executemany(
                "INSERT INTO streams SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM models WHERE name = ?1) "
                "ON CONFLICT (model, stream_id) DO UPDATE SET acked_seq = excluded.acked_seq, "
                "stats_json = excluded.stats_json, state = excluded.state, updated_unix_ms = excluded.updated_unix_ms",
                stream_rows)

    @contextlib.contextmanager
    def _tx(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
