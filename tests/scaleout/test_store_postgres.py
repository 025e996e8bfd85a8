"""The PostgreSQL store on a real server: the SQLite store's contract, plus leases with fencing
tokens and the shared-weight rounds."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
import pytest

from rnnstream.service import rounds
from rnnstream.service.store import LEASE_LOST, StreamRecord, open_store
from rnnstream.service.store_postgres import PostgresStore


def _fresh_db(postgres) -> str:
    """A database of its own per test, so that tests do not see each other's rows."""
    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres.url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return postgres.url.rsplit("/", 1)[0] + "/" + name


def _record(model, sid, seq, token, value=1.0):
    return StreamRecord(model, sid, seq, {"steps": seq}, {"h": np.full(3, value, np.float32)}, token)


def test_open_store_picks_the_backend_by_url(postgres, tmp_path):
    store = open_store(_fresh_db(postgres), str(tmp_path))
    try:
        assert isinstance(store, PostgresStore) and store.shared and "rnnstream@" in store.where
    finally:
        store.close()
    sqlite = open_store("", str(tmp_path))
    try:
        assert not sqlite.shared and sqlite.where.endswith("rnnstream.sqlite3")
    finally:
        sqlite.close()


def test_models_and_checkpoints_round_trip_and_two_replicas_migrate_once(postgres):
    url = _fresh_db(postgres)
    a, b = PostgresStore(url, owner="a"), PostgresStore(url, owner="b")  # the second finds the schema made
    try:
        assert a.run(a.insert_model, "m", {"name": "m"}, 5, {"w": np.arange(3, dtype=np.float32)})
        assert not b.run(b.insert_model, "m", {"name": "m"}, 6, {})  # the name is taken
        assert b.run(b.load_model, "m").created_unix_ms == 5
        token, _, _ = a.run(a.acquire_lease, "m", "s", 5000)
        assert a.run(a.checkpoint, [("m", {"w": np.ones(3, np.float32)})], [_record("m", "s", 7, token)]) == []
        stored = b.run(b.load_stream, "m", "s")
        assert stored.acked_seq == 7 and stored.state["h"].tolist() == [1.0, 1.0, 1.0]
        assert b.run(b.load_models)[0].state["w"].tolist() == [1.0, 1.0, 1.0]
        a.run(a.delete_model, "m")
        assert b.run(b.load_stream, "m", "s") is None and b.run(b.count_streams, "m") == 0
    finally:
        a.close()
        b.close()


def test_a_lease_is_exclusive_until_it_expires_and_a_stale_token_cannot_write(postgres):
    url = _fresh_db(postgres)
    a, b = PostgresStore(url, owner="a"), PostgresStore(url, owner="b")
    try:
        a.run(a.insert_model, "m", {}, 0, {})
        token_a, _, _ = a.run(a.acquire_lease, "m", "s", 60_000)
        assert token_a == 1
        assert a.run(a.acquire_lease, "m", "s", 60_000)[0] == 2  # its own lease: kept, new token
        token_a = 2
        refused, owner, left_ms = b.run(b.acquire_lease, "m", "s", 60_000)
        assert (refused, owner) == (0, "a") and 50_000 < left_ms <= 60_000
        # b asked: a's renewal says so (a hands the stream over); a renewal of nothing we hold is quiet
        assert a.run(a.renew_leases, 60_000, {("m", "s"): token_a}, []) == ([], [("m", "s")])
        assert a.run(a.renew_leases, 60_000, {}, []) == ([], [])
        assert a.run(a.checkpoint, [], [_record("m", "s", 3, token_a, 3.0)]) == []
        # a's lease runs out (it was paused): b takes the stream over with a larger token
        a.run(a.renew_leases, 1, {}, [])
        import time; time.sleep(0.05)
        token_b, _, _ = b.run(b.acquire_lease, "m", "s", 60_000)
        assert token_b == 3
        # a wakes up: its checkpoint is fenced off, the row stays as b will find it
        failures = a.run(a.checkpoint, [], [_record("m", "s", 9, token_a, 9.0)])
        assert len(failures) == 1 and failures[0].error.startswith(LEASE_LOST) and "token is 2" in failures[0].error
        assert a.run(a.load_stream, "m", "s").acked_seq == 3
        # and its next renewal tells it the stream is gone
        assert a.run(a.renew_leases, 60_000, {("m", "s"): token_a}, []) == ([("m", "s")], [])
        assert b.run(b.renew_leases, 60_000, {("m", "s"): token_b}, []) == ([], [])  # taking it cleared the ask
        assert b.run(b.checkpoint, [], [_record("m", "s", 4, token_b, 4.0)]) == []
        # a release frees the stream at once, and the next token is still new (never reused)
        b.run(b.renew_leases, 60_000, {}, [("m", "s", token_b)])
        assert a.run(a.acquire_lease, "m", "s", 60_000)[0] == 4
        assert b.run(b.checkpoint, [], [_record("m", "s", 5, token_b)])[0].error.startswith(LEASE_LOST)
    finally:
        a.close()
        b.close()


def test_a_round_combines_the_replicas_weighted_by_their_updates_once(postgres):
    url = _fresh_db(postgres)
    a, b, c = (PostgresStore(url, owner=o) for o in "abc")
    try:
        a.run(a.put_round, "m", 10, 3, {"w": np.array([1.0, 2.0], np.float32)})
        b.run(b.put_round, "m", 10, 1, {"w": np.array([5.0, 6.0], np.float32)})
        got = c.run(c.combine_round, "m", 10, rounds.combine)
        np.testing.assert_allclose(got["w"], [2.0, 3.0])  # (3 * [1, 2] + 1 * [5, 6]) / 4
        # made once: a contribution after the combine changes nothing for the round
        c.run(c.put_round, "m", 10, 100, {"w": np.array([0.0, 0.0], np.float32)})
        again = a.run(a.combine_round, "m", 10, rounds.combine)
        np.testing.assert_array_equal(again["w"], got["w"])
        assert a.run(a.combine_round, "m", 11, rounds.combine) is None  # nobody learned in round 11
    finally:
        for s in (a, b, c):
            s.close()


def test_an_unreachable_store_stops_the_start_with_one_line_and_no_password(tmp_path):
    import socket
    import subprocess
    import sys

    from tests.service.conftest import REPO
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "rnnstream.service", "--port", "0", "--metrics-port", "-1",
                           "--store", f"postgresql://u:SECRET@127.0.0.1:{port}/db"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "cannot open the store" in proc.stderr and f"127.0.0.1:{port}/db" in proc.stderr
    assert "SECRET" not in proc.stderr + proc.stdout


def test_a_connection_the_database_dropped_is_opened_again(postgres):
    url = _fresh_db(postgres)
    store = PostgresStore(url, owner="a")
    try:
        assert store.run(store.insert_model, "m", {}, 0, {})
        pid = store.run(lambda: store._db.info.backend_pid)
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        try:  # the call that finds the connection gone fails; its caller retries
            store.run(store.model_names)
        except psycopg.OperationalError:
            pass
        assert store.run(store.model_names) == ["m"]
    finally:
        store.close()


def _wait_for_lock_waiters(url: str, count: int) -> None:
    """Return when ``count`` backends of this database wait for a lock (bounded: 10 s)."""
    with psycopg.connect(url, autocommit=True) as watcher:
        for _ in range(200):
            waiting = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND wait_event_type = 'Lock'").fetchone()[0]
            if waiting >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"{count} backends never waited for a lock")


def test_a_model_deleted_during_another_replicas_checkpoint_waits_for_it_instead_of_deadlocking(postgres, caplog):
    """CI once saw DeleteModel end INTERNAL (deadlock detected): one replica's checkpoint had
    updated the model's row and was about to write its stream's row, while another replica's
    delete had taken the stream's row and waited for the model's. Both take the model first now
    (and a deadlock the orders do not foresee is run again, with a warning)."""
    url = _fresh_db(postgres)
    a, b = PostgresStore(url, owner="a"), PostgresStore(url, owner="b")
    try:
        a.run(a.insert_model, "m", {}, 0, {})
        token, _, _ = a.run(a.acquire_lease, "m", "s", 60_000)
        assert a.run(a.checkpoint, [], [_record("m", "s", 1, token)]) == []
        with ThreadPoolExecutor(2) as pool, psycopg.connect(url) as holder:
            # holds the lease row, so a's checkpoint stops between the model's row and the stream's
            holder.execute("SELECT 1 FROM leases FOR UPDATE")
            checkpoint = pool.submit(a.run, a.checkpoint, [("m", {"w": np.ones(3, np.float32)})],
                                     [_record("m", "s", 2, token), _record("m", "s2", 2, token)])
            _wait_for_lock_waiters(url, 1)
            delete = pool.submit(b.run, b.delete_model, "m")
            _wait_for_lock_waiters(url, 2)
            holder.commit()
            failures = checkpoint.result(timeout=30)
            delete.result(timeout=30)
        assert "deadlock" not in caplog.text  # not broken and run again: it never formed
        assert [f.error.startswith(LEASE_LOST) for f in failures] == [True]  # s2: no lease row
        assert b.run(b.model_names) == [] and b.run(b.load_stream, "m", "s") is None
    finally:
        a.close()
        b.close()


def test_a_call_the_server_chose_as_a_deadlock_victim_runs_again_a_bounded_number_of_times(postgres, caplog):
    store = PostgresStore(_fresh_db(postgres), owner="a")
    calls = []

    def victim(times):
        calls.append(1)
        if len(calls) <= times:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return store._db.execute("SELECT 7").fetchone()[0]

    try:
        assert store.run(victim, 2) == 7 and len(calls) == 3
        assert caplog.text.count("broke a deadlock") == 2
        calls.clear()
        with pytest.raises(psycopg.errors.DeadlockDetected):
            store.run(victim, 3)
        assert len(calls) == 3
    finally:
        store.close()
