"""Shared-weight rounds between two real replicas on one PostgreSQL: each learns a SHARED model
from its own streams, and a round leaves both with the update-weighted mean of their copies."""
from __future__ import annotations

import time

import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from tests.scaleout.cluster import start_replicas, stop
from tests.scaleout.test_store_postgres import _fresh_db
from tests.service.conftest import engine_run, make_chunks, make_spec, request, weights

INTERVAL_S = 2.0


def test_a_round_leaves_every_replica_with_the_update_weighted_mean(postgres, tmp_path):
    url = _fresh_db(postgres)
    spec = make_spec("m", hidden_sizes=[4], sharing=pb.SHARING_SHARED)  # TBPTT(4, 4): one update per chunk
    chunks_a, chunks_b = make_chunks(3, 4, seed=1), make_chunks(1, 4, seed=2)
    parts = []
    try:
        parts += start_replicas(2, url, tmp_path, "--share-interval-s", str(INTERVAL_S), "--workers", "1")
        a, b = parts
        a.stub.CreateModel(pb.CreateModelRequest(spec=spec), timeout=30)
        b.stub.GetModel(pb.GetModelRequest(name="m"), timeout=30)  # b loads it now: the initial weights
        while not 0.05 < time.time() % INTERVAL_S < 0.5:  # all chunks inside one round
            time.sleep(0.01)
        round_no = int(time.time() // INTERVAL_S)
        for seq, chunk in enumerate(chunks_a, 1):
            a.stub.Predict(request("m", "sa", seq, *chunk), timeout=30)
        b.stub.Predict(request("m", "sb", 1, *chunks_b[0]), timeout=30)
        assert int(time.time() // INTERVAL_S) == round_no, "the box was too slow to send 4 chunks in one round"
        updates = [s.stub.GetModel(pb.GetModelRequest(name="m"), timeout=30).updates for s in (a, b)]
        assert updates == [3, 1]

        # what each copy learned alone, and their mean weighted 3 : 1
        alone_a = engine_run(spec, {"sa": chunks_a})[0].state_dict(None)
        alone_b = engine_run(spec, {"sb": chunks_b})[0].state_dict(None)
        want = {k: (3 * alone_a[k].astype(np.float64) + alone_b[k]) / 4 for k in alone_a}
        np.testing.assert_array_equal(weights(a.stub, "m")["head.bias"], alone_a["head.bias"])  # not combined yet

        time.sleep((round_no + 1) * INTERVAL_S - time.time() + INTERVAL_S / 4 + 1.5)  # the round and its grace
        got_a, got_b = weights(a.stub, "m"), weights(b.stub, "m")
        for name in want:
            np.testing.assert_array_equal(got_a[name], got_b[name], err_msg=name)
            np.testing.assert_allclose(got_a[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
    finally:
        stop(parts)
