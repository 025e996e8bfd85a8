"""Health, reflection, auth, TLS, graceful shutdown and the metrics endpoint of a real server."""
import datetime
import ipaddress
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc
from tests.service.conftest import code_of, make_chunks, make_spec, request

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_and_reflection(server):
    health = health_pb2_grpc.HealthStub(server.channel)
    for name in ("", "rnnstream.v1.RnnStream"):
        assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in resp.list_services_response.service}
    assert {"rnnstream.v1.RnnStream", "grpc.health.v1.Health"} <= names


def test_auth_token_guards_every_call_but_health(start_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    srv = start_server(auth_token_file=str(token_file))
    stub = srv.stub
    assert code_of(stub.ListModels, pb.ListModelsRequest()) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(stub.ListModels, pb.ListModelsRequest(), metadata=[("authorization", "Bearer nope")]) \
        == grpc.StatusCode.UNAUTHENTICATED
    (x, y), = make_chunks(1, 2)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Stream(iter([request("m", "s", 1, x, y)])))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    good = [("authorization", "Bearer s3cret")]
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("m")), metadata=good)
    assert next(stub.Stream(iter([request("m", "s", 1, x, y)]), metadata=good)).acked_seq == 1
    health = health_pb2_grpc.HealthStub(srv.channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return cert_pem


def test_tls(start_server, tmp_path):
    cert = _self_signed(tmp_path)
    srv = start_server(tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem"), health_port=0)
    with grpc.secure_channel(srv.address, grpc.ssl_channel_credentials(root_certificates=cert)) as channel:
        stub = pb_grpc.RnnStreamStub(channel)
        assert list(stub.ListModels(pb.ListModelsRequest()).models) == []
    assert code_of(srv.stub.ListModels, pb.ListModelsRequest(), timeout=5) == grpc.StatusCode.UNAVAILABLE
    health_address = f"127.0.0.1:{srv.server.health_port}"  # the health port speaks TLS too
    with grpc.secure_channel(health_address, grpc.ssl_channel_credentials(root_certificates=cert)) as channel:
        assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == SERVING
    with grpc.insecure_channel(health_address) as channel:
        assert code_of(health_pb2_grpc.HealthStub(channel).Check, health_pb2.HealthCheckRequest(),
                       timeout=5) == grpc.StatusCode.UNAVAILABLE


def test_shutdown_goes_not_serving_finishes_in_flight_and_checkpoints(start_server):
    srv = start_server(checkpoint_interval_s=600)
    srv.stub.CreateModel(pb.CreateModelRequest(spec=make_spec("m")))
    statuses, release = [], threading.Event()
    watch = health_pb2_grpc.HealthStub(srv.channel).Watch(health_pb2.HealthCheckRequest(service=""))

    def collect():
        try:
            for r in watch:
                statuses.append(r.status)
        except grpc.RpcError:  # the server went away: expected at the end
            pass

    watcher = threading.Thread(target=collect, daemon=True)
    watcher.start()
    chunks = make_chunks(2, 3)

    def requests():
        yield request("m", "s", 1, *chunks[0])
        release.wait(20)

    call = srv.stub.Stream(requests())
    assert next(call).acked_seq == 1
    assert srv.stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s")).durable_seq == 0
    stopper = threading.Thread(target=srv.stop)
    stopper.start()
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "durable_seq" in info.value.details()
    release.set()
    stopper.join(30)
    watcher.join(10)
    assert statuses[:2] == [SERVING, NOT_SERVING]
    again = start_server()
    info = again.stub.GetStream(pb.GetStreamRequest(model="m", stream_id="s"))
    assert (info.acked_seq, info.durable_seq, info.in_memory) == (1, 1, False)


def test_metrics_endpoint_exports_the_documented_series(server):
    stub = server.stub
    stub.CreateModel(pb.CreateModelRequest(spec=make_spec("m", clip_norm=0.01)))
    chunks = make_chunks(4, 4)
    list(stub.Stream(iter([request("m", "s", i + 1, *c) for i, c in enumerate(chunks)])))
    code_of(stub.GetModel, pb.GetModelRequest(name="missing"))
    expected = ['rnnstream_steps_total{model="m"} 16.0', 'rnnstream_updates_total{model="m"} 4.0',
                'rnnstream_gradient_clipped_total{model="m"}', 'rnnstream_loss_bucket{le="0.001",model="m"}',
                'rnnstream_gradient_norm_count{model="m"} 4', 'rnnstream_weight_norm{model="m"}',
                'rnnstream_step_seconds_bucket{le="1e-05",model="m"}', 'rnnstream_chunk_seconds_count{model="m"} 4.0',
                'rnnstream_batch_streams_count{model="m"} 4.0', 'rnnstream_active_streams{model="m"} 1.0',
                'grpc_server_handled_total{grpc_code="OK",grpc_method="Stream",grpc_service="rnnstream.v1.RnnStream",'
                'grpc_type="bidi_stream"} 1.0',
                'grpc_server_handled_total{grpc_code="NOT_FOUND",grpc_method="GetModel"',
                'grpc_server_msg_received_total{grpc_method="Stream"',
                'grpc_server_handling_seconds_bucket{grpc_method="CreateModel"']
    # grpc's abort() sends NOT_FOUND to the client before the interceptor, on the way out, counts
    # it in handled_total: on a busy machine the first scrape can come in between, so read again.
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        missing = [s for s in expected
                   if s not in text.replace(',grpc_service="rnnstream.v1.RnnStream",grpc_type="unary"', "")]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not missing, missing
    assert "stream_id" not in text
    assert np.isfinite(float(text.split('rnnstream_weight_norm{model="m"} ')[1].split()[0]))
