"""Durable state: model specs, model snapshots, stream snapshots.

Two backends share one interface (:class:`StoreBase`): :class:`Store`, SQLite (WAL mode) in
the data directory, the embedded default; and ``service.store_postgres.PostgresStore``, a
PostgreSQL server that several replicas share (``--store postgresql://...``), which also keeps
the stream leases and the shared-weight rounds of a scale-out. :func:`open_store` picks one.

Snapshots are the engine's ``{name: ndarray}`` dicts, stored as BLOBs (service/snapshot_blob.py).
All access goes through one worker thread, so commits happen in the order they were asked
for; the event loop awaits :meth:`Store.call`. A checkpoint is one transaction: a crash
leaves either the previous checkpoint or the new one, never a mix.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import os
import sqlite3
import time
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from .snapshot_blob import pack, unpack  # noqa: F401  (store_postgres uses them from here)

# Numbered migrations, applied in order at open, each in one transaction with its
# ``PRAGMA user_version`` bump. A store made before versioning is version 0 and holds the
# tables of migration 1 already (hence IF NOT EXISTS). Add, never edit, a migration.
MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (1, (
        """CREATE TABLE IF NOT EXISTS models (
            name TEXT PRIMARY KEY,
            spec_json TEXT NOT NULL,
            created_unix_ms INTEGER NOT NULL,
            state BLOB NOT NULL,            -- engine.snapshot_model(): weights, optimizer state, counters
            updated_unix_ms INTEGER NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS streams (
            model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
            stream_id TEXT NOT NULL,
            acked_seq INTEGER NOT NULL,     -- the last chunk this state includes
            stats_json TEXT NOT NULL,
            state BLOB NOT NULL,            -- engine.snapshot_stream(sid)
            updated_unix_ms INTEGER NOT NULL,
            PRIMARY KEY (model, stream_id)
        )""",
    )),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class SchemaTooNew(RuntimeError):
    """The store was written by a newer rnnstream; this one must not touch it."""


def migrate(db: sqlite3.Connection, migrations=None) -> int:
    """Bring ``db`` to the newest schema; returns the version it had. Each step commits alone,
    so a crash mid-way leaves a store at some version, never between two."""
    migrations = MIGRATIONS if migrations is None else migrations
    newest = migrations[-1][0]
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > newest:
        raise SchemaTooNew(f"the store's schema version is {found}, newer than this rnnstream knows ({newest}); "
                           "run a newer rnnstream, or point --data-dir elsewhere")
    for version, statements in migrations:
        if version <= found:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {int(version)}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return found


# A checkpoint failure whose error starts with this: the stream's lease (shared store) is
# another replica's now, so this replica's copy of the stream is stale.
LEASE_LOST = "lease lost"


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
    """One stream's checkpoint, as handed to :meth:`Store.checkpoint`. ``lease_token``: the
    fencing token this replica holds for the stream (a shared store writes the row only while
    it is still the stream's current token; the embedded store has no leases and ignores it)."""
    model: str
    stream_id: str
    acked_seq: int
    stats: dict
    state: dict[str, np.ndarray]
    lease_token: int = 0


class CheckpointFailure(NamedTuple):
    """A row a checkpoint could not write: the model's (stream_id "") or one stream's."""
    model: str
    stream_id: str
    error: str


def _now_ms() -> int:
    return int(time.time() * 1000)


class StoreBase:
    """What the registry needs of a store. Every method runs on the store's one thread (through
    :meth:`call` from the event loop, :meth:`run` at start-up and shutdown), so commits happen
    in the order they were asked for.

    Models: ``insert_model``, ``delete_model``, ``load_models``, ``load_model``. Streams:
    ``load_stream``, ``stream_info``, ``count_streams``, ``delete_stream``. ``checkpoint``
    commits model and stream snapshots in one transaction. A store shared by replicas
    (``shared`` True) also has leases (``acquire_lease``; ``renew_leases``, which also
    releases), ``model_names``, and shared-weight rounds; see ``service.store_postgres``.
    """

    shared = False          # several replicas use it at once: leases and rounds apply
    max_blob_bytes: int     # the largest value one row can hold
    where: str              # for log lines: the file, or the server without its password

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rnnstream-store")

    async def call(self, fn: Callable[..., Any], *args) -> Any:
        """Run ``fn(*args)`` (a method of this store) on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def run(self, fn: Callable[..., Any], *args) -> Any:
        """Blocking form of :meth:`call`, for start-up and shutdown."""
        return self._executor.submit(fn, *args).result()

    def close(self) -> None:
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        raise NotImplementedError

    def load_model(self, name: str) -> StoredModel | None:
        """One model, or None; a shared store's replicas load models other replicas created."""
        return next((m for m in self.load_models() if m.name == name), None)

    def may_hold_stream(self, model: str, stream_id: str) -> bool:
        """False only when the store certainly holds no row of this stream, so opening a new
        stream needs no trip through the store thread (which may be busy with a checkpoint).
        Called from the event loop. A store other processes write (shared) cannot know: True."""
        return True


def open_store(url: str, data_dir: str) -> StoreBase:
    """The store ``--store`` names: empty or ``sqlite:`` (``<data_dir>/rnnstream.sqlite3``),
    ``sqlite:///<dir>``, or ``postgresql://user@host:port/db`` (also ``postgres://``)."""
    if url.startswith(("postgresql://", "postgres://")):
        from rnnstream.service.store_postgres import PostgresStore  # psycopg only when asked for
        return PostgresStore(url)
    if url in ("", "sqlite:", "sqlite://"):
        return Store(data_dir)
    if url.startswith("sqlite:///"):
        return Store(url[len("sqlite://"):])
    raise ValueError(f"--store {url!r}: expected sqlite:///<directory> or postgresql://user@host:port/database")


class Store(StoreBase):
    """The SQLite file ``<data_dir>/rnnstream.sqlite3``; methods run on the store's own thread."""

    def __init__(self, data_dir: str):
        super().__init__()
        os.makedirs(data_dir, exist_ok=True)
        self.path = self.where = os.path.join(data_dir, "rnnstream.sqlite3")
        self._db: sqlite3.Connection | None = None
        # model -> stream_ids that may have a row. This process is the file's only writer, so
        # the index is exact up to extra keys: a key is added before its row is written and
        # removed after its row is deleted. The store thread changes it; the loop only reads it
        # (single set/dict operations, atomic under the GIL).
        self._stream_keys: dict[str, set[str]] = {}
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, not only a process crash.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        migrate(db)
        for model, stream_id in db.execute("SELECT model, stream_id FROM streams"):
            self._stream_keys.setdefault(model, set()).add(stream_id)
        # the largest BLOB (or row) this SQLite accepts: bigger snapshots are refused at create
        self.max_blob_bytes = db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

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
        self._stream_keys.pop(name, None)

    def load_models(self) -> list[StoredModel]:
        rows = self._db.execute("SELECT name, spec_json, created_unix_ms, state FROM models ORDER BY name")
        return [StoredModel(n, json.loads(s), c, unpack(b)) for n, s, c, b in rows.fetchall()]

    # -- streams --------------------------------------------------------------------------
    def may_hold_stream(self, model: str, stream_id: str) -> bool:
        return stream_id in self._stream_keys.get(model, ())

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
        self._stream_keys.get(model, set()).discard(stream_id)

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, models: Iterable[tuple[str, dict]], streams: Iterable[StreamRecord]) -> list[CheckpointFailure]:
        """Model snapshots and stream snapshots, committed together.

        Each row is written under its own savepoint: a row the store cannot hold (a value
        SQLite cannot represent, a blob over its limit) is left out and returned as a
        failure; every other row still commits. Returns the failures ([] when all fit).
        """
        now = _now_ms()
        failures: list[CheckpointFailure] = []
        streams = list(streams)
        for r in streams:  # indexed before written: a reader never misses a row (see _stream_keys)
            self._stream_keys.setdefault(r.model, set()).add(r.stream_id)
        with self._tx():
            for name, state in models:
                self._row(failures, name, "", "UPDATE models SET state = ?, updated_unix_ms = ? WHERE name = ?",
                          lambda: (pack(state), now, name))
            self._stream_rows(failures, streams, now)
        return failures

    # A stream of a model deleted meanwhile is left out (foreign key), not an error.
    _UPSERT_STREAM = ("INSERT INTO streams SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM models "
                      "WHERE name = ?1) ON CONFLICT (model, stream_id) DO UPDATE SET acked_seq = "
                      "excluded.acked_seq, stats_json = excluded.stats_json, state = excluded.state, "
                      "updated_unix_ms = excluded.updated_unix_ms")

    def _stream_rows(self, failures: list, streams: list[StreamRecord], now: int) -> None:
        """All rows in one statement under one savepoint; only when that fails, row by row
        (a savepoint each, at three statements a row, cost more than the rows at thousands of
        streams)."""
        def row(r: StreamRecord) -> tuple:
            return r.model, r.stream_id, r.acked_seq, json.dumps(r.stats), pack(r.state), now

        params = []
        for r in streams:
            try:
                params.append(row(r))
            except (OverflowError, ValueError, TypeError):
                params = None
                break
        if params is not None:
            self._db.execute("SAVEPOINT rows")
            try:
                self._db.executemany(self._UPSERT_STREAM, params)
                self._db.execute("RELEASE rows")
                return
            except (sqlite3.Error, OverflowError, ValueError, TypeError):
                self._db.execute("ROLLBACK TO rows")
                self._db.execute("RELEASE rows")
        for r in streams:
            self._row(failures, r.model, r.stream_id, self._UPSERT_STREAM, functools.partial(row, r))

    def _row(self, failures: list, model: str, stream_id: str, sql: str, params: Callable[[], tuple]) -> None:
        self._db.execute("SAVEPOINT row")
        try:
            self._db.execute(sql, params())
        except (sqlite3.Error, OverflowError, ValueError, TypeError) as exc:
            self._db.execute("ROLLBACK TO row")
            failures.append(CheckpointFailure(model, stream_id, f"{type(exc).__name__}: {exc}"))
        self._db.execute("RELEASE row")

    @contextlib.contextmanager
    def _tx(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
