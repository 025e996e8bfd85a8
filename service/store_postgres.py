"""The shared store: PostgreSQL through psycopg 3, for several replicas at once.

The same rows as the SQLite store (models, streams), plus what a scale-out needs:

- ``leases``: one row per stream, naming the replica that may apply its chunks (``owner``),
  until when (``expires_unix_ms``, the database server's clock, so replicas' clocks do not
  matter), and a fencing ``token`` that grows by one at every take-over. Rows are never
  deleted (a release sets the expiry to 0), so a token is never handed out twice.
- ``weight_rounds`` / ``shared_weights``: the shared-weight rounds of ``service.rounds``.

A checkpoint locks the lease rows of the streams it writes (``FOR SHARE``) and writes a stream
only while the lease's owner and token are still this replica's: a replica that lost a lease
(paused, partitioned, its lease expired and taken) cannot overwrite the new owner's state,
and a take-over waits for a checkpoint in flight to commit, then reads it.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any, Callable, Iterable

import psycopg

from rnnstream.service.store import (LEASE_LOST, CheckpointFailure, SchemaTooNew, StoreBase, StoredModel, StoredStream,
                                     StreamRecord, _now_ms, pack, unpack)

log = logging.getLogger(__name__)

# The database server's clock in milliseconds: every replica measures leases by one clock.
_DB_NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"
_DEADLOCK_ATTEMPTS = 3  # lock orders are consistent; this covers a cycle they do not foresee
_MIGRATION_LOCK = 0x726E6E73  # pg_advisory_xact_lock key: replicas starting together migrate once

MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (1, (
        """CREATE TABLE models (
            name TEXT PRIMARY KEY,
            spec_json TEXT NOT NULL,
            created_unix_ms BIGINT NOT NULL,
            state BYTEA NOT NULL,
            updated_unix_ms BIGINT NOT NULL
        )""",
        """CREATE TABLE streams (
            model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
            stream_id TEXT NOT NULL,
            acked_seq BIGINT NOT NULL,
            stats_json TEXT NOT NULL,
            state BYTEA NOT NULL,
            updated_unix_ms BIGINT NOT NULL,
            PRIMARY KEY (model, stream_id)
        )""",
        """CREATE TABLE leases (
            model TEXT NOT NULL,
            stream_id TEXT NOT NULL,
            owner TEXT NOT NULL,              -- the replica (its id) that may apply the chunks
            token BIGINT NOT NULL,            -- fencing token: +1 at every take-over
            expires_unix_ms BIGINT NOT NULL,  -- database clock; 0: released
            wanted_by TEXT NOT NULL DEFAULT '',  -- a replica the proxy sends the stream to now
            PRIMARY KEY (model, stream_id)
        )""",
        "CREATE INDEX leases_owner ON leases (owner)",
        """CREATE TABLE weight_rounds (
            model TEXT NOT NULL,
            round BIGINT NOT NULL,
            replica TEXT NOT NULL,
            updates BIGINT NOT NULL,          -- updates this replica made since the last round
            state BYTEA NOT NULL,             -- its weights at the end of the round
            PRIMARY KEY (model, round, replica)
        )""",
        """CREATE TABLE shared_weights (
            model TEXT PRIMARY KEY,
            round BIGINT NOT NULL,            -- the last round combined
            state BYTEA NOT NULL              -- the combined weights
        )""",
    )),
]


def redact(url: str) -> str:
    """The URL without its password, for log lines."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


class PostgresStore(StoreBase):
    """A PostgreSQL database shared by every replica; ``owner`` is this replica's lease name."""

    shared = True
    max_blob_bytes = (1 << 30) - (1 << 20)  # bytea holds up to 1 GiB

    def __init__(self, url: str, owner: str | None = None):
        super().__init__()
        self.url, self.where = url, redact(url)
        self.owner = owner or uuid.uuid4().hex[:16]
        self._db: psycopg.Connection | None = None
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        self._db = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        self._migrate()

    def _connected(self, fn: Callable[..., Any], *args) -> Any:
        """``fn(*args)`` on a live connection: one the database dropped (a restart, a failover
        of the database) is opened again; the call that found it broken has failed already,
        and its caller retries (checkpoints and renewals do)."""
        if self._db is None or self._db.closed or self._db.broken:
            log.warning("reconnecting to the store %s", self.where)
            self._db = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        for attempt in range(_DEADLOCK_ATTEMPTS):
            try:
                return fn(*args)
            except psycopg.errors.DeadlockDetected:
                # the server rolled this transaction back whole, and every method here is one
                # transaction (or statements safe to repeat): running it again is safe
                if attempt == _DEADLOCK_ATTEMPTS - 1:
                    raise
                log.warning("the store %s broke a deadlock by rolling back %s; running it again", self.where,
                            getattr(fn, "__name__", fn))

    async def call(self, fn: Callable[..., Any], *args) -> Any:
        return await super().call(self._connected, fn, *args)

    def run(self, fn: Callable[..., Any], *args) -> Any:
        return super().run(self._connected, fn, *args)

    def _migrate(self) -> None:
        db = self._db
        newest = MIGRATIONS[-1][0]
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS rnnstream_schema (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM rnnstream_schema").fetchone()
            found = row[0] if row else 0
            if found > newest:
                raise SchemaTooNew(f"the database's schema version is {found}, newer than this rnnstream knows "
                                   f"({newest}); run a newer rnnstream, or point --store elsewhere")
            for version, statements in MIGRATIONS:
                if version > found:
                    for statement in statements:
                        db.execute(statement)
            if row is None:
                db.execute("INSERT INTO rnnstream_schema VALUES (%s)", (newest,))
            else:
                db.execute("UPDATE rnnstream_schema SET version = %s", (newest,))

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- models ---------------------------------------------------------------------------
    def insert_model(self, name: str, spec: dict, created_unix_ms: int, state: dict) -> bool:
        cur = self._db.execute("INSERT INTO models VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                               (name, json.dumps(spec), created_unix_ms, pack(state), _now_ms()))
        return cur.rowcount == 1

    def delete_model(self, name: str) -> None:
        with self._db.transaction():
            # locks in the order a round (its advisory lock) and a checkpoint (the model's row,
            # then its streams') take them: a delete waits for those to commit instead of deadlocking
            self._db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
            self._db.execute("SELECT 1 FROM models WHERE name = %s FOR UPDATE", (name,))
            self._db.execute("DELETE FROM streams WHERE model = %s", (name,))
            self._db.execute("DELETE FROM models WHERE name = %s", (name,))
            for table in ("weight_rounds", "shared_weights"):
                self._db.execute(f"DELETE FROM {table} WHERE model = %s", (name,))

    def load_models(self) -> list[StoredModel]:
        rows = self._db.execute("SELECT name, spec_json, created_unix_ms, state FROM models ORDER BY name")
        return [StoredModel(n, json.loads(s), c, unpack(b)) for n, s, c, b in rows.fetchall()]

    def load_model(self, name: str) -> StoredModel | None:
        row = self._db.execute("SELECT name, spec_json, created_unix_ms, state FROM models WHERE name = %s",
                               (name,)).fetchone()
        return None if row is None else StoredModel(row[0], json.loads(row[1]), row[2], unpack(row[3]))

    def model_names(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM models").fetchall()]

    # -- streams --------------------------------------------------------------------------
    def load_stream(self, model: str, stream_id: str) -> StoredStream | None:
        row = self._db.execute("SELECT acked_seq, stats_json, state FROM streams WHERE model = %s AND stream_id = %s",
                               (model, stream_id)).fetchone()
        return None if row is None else StoredStream(row[0], json.loads(row[1]), unpack(row[2]))

    def stream_info(self, model: str, stream_id: str) -> tuple[int, dict] | None:
        row = self._db.execute("SELECT acked_seq, stats_json FROM streams WHERE model = %s AND stream_id = %s",
                               (model, stream_id)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def count_streams(self, model: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM streams WHERE model = %s", (model,)).fetchone()[0]

    def delete_stream(self, model: str, stream_id: str) -> None:
        self._db.execute("DELETE FROM streams WHERE model = %s AND stream_id = %s", (model, stream_id))

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, models: Iterable[tuple[str, dict]], streams: Iterable[StreamRecord]) -> list[CheckpointFailure]:
        """As the SQLite store's, plus fencing: a stream whose lease is no longer this replica's
        (owner and token) is not written and comes back as a failure starting ``LEASE_LOST``."""
        now = _now_ms()
        models, streams = sorted(models, key=lambda m: m[0]), list(streams)
        failures: list[CheckpointFailure] = []
        with self._db.transaction():
            # the models' rows first, in name order, as a delete takes them: a delete on another
            # replica then waits for this checkpoint (or it for the delete), never both for each other
            names = sorted({name for name, _ in models} | {r.model for r in streams})
            self._db.execute("SELECT 1 FROM models WHERE name = ANY(%s) ORDER BY name FOR KEY SHARE", (names,))
            for name, state in models:
                self._row(failures, name, "", "UPDATE models SET state = %s, updated_unix_ms = %s WHERE name = %s",
                          lambda: (pack(state), now, name))
            current = {}
            if streams:
                # FOR SHARE: a take-over (an UPDATE of these rows) waits until this commits
                rows = self._db.execute(
                    "SELECT model, stream_id, owner, token FROM leases WHERE (model, stream_id) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[])) FOR SHARE",
                    ([r.model for r in streams], [r.stream_id for r in streams])).fetchall()
                current = {(m, s): (o, t) for m, s, o, t in rows}
            for r in streams:
                holder = current.get((r.model, r.stream_id))
                if holder != (self.owner, r.lease_token):
                    who = f"replica {holder[0]} holds token {holder[1]}" if holder else "no lease row"
                    failures.append(CheckpointFailure(r.model, r.stream_id,
                                                      f"{LEASE_LOST}: this replica's token is {r.lease_token}, {who}"))
                    continue
                self._row(failures, r.model, r.stream_id,
                          "INSERT INTO streams SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM models "
                          "WHERE name = %s) ON CONFLICT (model, stream_id) DO UPDATE SET acked_seq = "
                          "excluded.acked_seq, stats_json = excluded.stats_json, state = excluded.state, "
                          "updated_unix_ms = excluded.updated_unix_ms",
                          lambda r=r: (r.model, r.stream_id, r.acked_seq, json.dumps(r.stats), pack(r.state), now,
                                       r.model))
        return failures

    def _row(self, failures: list, model: str, stream_id: str, sql: str, params: Callable[[], tuple]) -> None:
        try:
            with self._db.transaction():  # a savepoint: this row alone rolls back
                self._db.execute(sql, params())
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError, OverflowError, ValueError,
                TypeError) as exc:
            failures.append(CheckpointFailure(model, stream_id, f"{type(exc).__name__}: {exc}"))

    # -- leases ---------------------------------------------------------------------------
    def acquire_lease(self, model: str, stream_id: str, ttl_ms: int) -> tuple[int, str, int]:
        """Take (or keep) the stream's lease: (token, "", 0); held by another replica and not
        expired: (0, its owner, milliseconds it has left)."""
        row = self._db.execute(
            f"INSERT INTO leases VALUES (%s, %s, %s, 1, {_DB_NOW_MS} + %s, '') ON CONFLICT (model, stream_id) DO UPDATE "
            "SET owner = excluded.owner, token = leases.token + 1, expires_unix_ms = excluded.expires_unix_ms, "
            f"wanted_by = '' WHERE leases.owner = excluded.owner OR leases.expires_unix_ms < {_DB_NOW_MS} "
            "RETURNING token", (model, stream_id, self.owner, ttl_ms)).fetchone()
        if row is not None:
            return row[0], "", 0
        # the holder lives: ask it to hand the stream over (it does at its next renewal)
        row = self._db.execute(f"UPDATE leases SET wanted_by = %s WHERE model = %s AND stream_id = %s "
                               f"RETURNING owner, expires_unix_ms - {_DB_NOW_MS}",
                               (self.owner, model, stream_id)).fetchone()
        return (0, row[0], max(0, row[1])) if row else (0, "", 0)

    def renew_leases(self, ttl_ms: int, held: dict[tuple[str, str], int],
                     release: list[tuple[str, str, int]]) -> tuple[list, list]:
        """Release ``release`` (model, stream_id, token), extend every lease this replica still
        owns; (the keys of ``held`` whose lease is no longer ours, the keys another replica
        asked for: the proxy sends those streams there now)."""
        with self._db.transaction():
            if release:
                self._db.execute(
                    "UPDATE leases SET expires_unix_ms = 0 FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
                    "AS r(m, s, t) WHERE model = r.m AND stream_id = r.s AND token = r.t AND owner = %s",
                    ([m for m, _, _ in release], [s for _, s, _ in release], [t for _, _, t in release], self.owner))
            rows = self._db.execute(f"UPDATE leases SET expires_unix_ms = {_DB_NOW_MS} + %s WHERE owner = %s "
                                    "AND expires_unix_ms > 0 RETURNING model, stream_id, token, wanted_by",
                                    (ttl_ms, self.owner)).fetchall()
        ours = {(m, s): t for m, s, t, _ in rows}
        wanted = [(m, s) for m, s, t, w in rows if w and held.get((m, s)) == t]
        return [key for key, token in held.items() if ours.get(key) != token], wanted

    # -- shared-weight rounds (service.rounds) --------------------------------------------
    def put_round(self, model: str, round_no: int, updates: int, state: dict) -> None:
        self._db.execute("INSERT INTO weight_rounds VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (model, round_no, self.owner, updates, pack(state)))

    def combine_round(self, model: str, round_no: int,
                      combine: Callable[[list[tuple[str, int, dict]]], dict | None]) -> dict | None:
        """The combined weights of ``round_no``: made once, by the first replica to ask, from the
        contributions there are then (``combine`` gets them sorted by replica); later askers
        read that. None when no replica made an update in the round."""
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (model,))
            row = self._db.execute("SELECT round, state FROM shared_weights WHERE model = %s", (model,)).fetchone()
            if row is not None and row[0] >= round_no:
                return unpack(row[1]) if row[0] == round_no else None
            parts = self._db.execute("SELECT replica, updates, state FROM weight_rounds WHERE model = %s AND "
                                     "round = %s ORDER BY replica", (model, round_no)).fetchall()
            combined = combine([(r, n, unpack(b)) for r, n, b in parts])
            if combined is None:
                return None
            self._db.execute("INSERT INTO shared_weights VALUES (%s, %s, %s) ON CONFLICT (model) DO UPDATE SET "
                             "round = excluded.round, state = excluded.state", (model, round_no, pack(combined)))
            self._db.execute("DELETE FROM weight_rounds WHERE model = %s AND round < %s", (model, round_no))
            return combined
