"""The SDK's translations between keyword specs, numpy arrays and proto messages."""
import grpc
import numpy as np
import pytest

from rnnstream.clients import convert
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb


def test_spec_maps_snake_case_and_lower_case_enums_onto_the_proto():
    msg = convert.spec_to_proto(dict(name="m", cell="gru", gru_variant="cho", hidden_sizes=[8, 4],
                                     input_size=3, output_size=2, algorithm="rtrl", optimizer="sgd",
                                     lr=0.1, momentum=0.9, nesterov=True, sharing="per_stream",
                                     target_mode="next_input", clip_norm=1.5, seed=7))
    assert msg.cell == pb.CELL_GRU and msg.gru_variant == pb.GRU_VARIANT_CHO and msg.algorithm == pb.ALGORITHM_RTRL
    assert list(msg.hidden_sizes) == [8, 4] and msg.sharing == pb.SHARING_PER_STREAM
    assert msg.optimizer.kind == pb.OPTIMIZER_KIND_SGD and msg.optimizer.nesterov
    assert msg.optimizer.HasField("momentum") and not msg.optimizer.HasField("eps")
    assert msg.target_mode == pb.TARGET_MODE_NEXT_INPUT and msg.seed == 7


def test_fields_left_out_are_left_to_the_servers_measured_defaults():
    msg = convert.spec_to_proto({"name": "m", "hidden_sizes": 16})
    assert (msg.cell, msg.algorithm, msg.optimizer.kind) == (
        pb.CELL_UNSPECIFIED, pb.ALGORITHM_UNSPECIFIED, pb.OPTIMIZER_KIND_UNSPECIFIED)
    assert list(msg.hidden_sizes) == [16] and not msg.HasField("linear_skip") and not msg.members


def test_spec_round_trips_through_the_proto():
    spec = dict(name="m", cell="lstm", lstm_variant="peephole", hidden_sizes=[5], vocab_size=256,
                input_size=16, num_classes=0, output_size=0, algorithm="snap1", optimizer="adam",
                lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.001)
    back = convert.spec_from_proto(convert.spec_to_proto(spec))
    assert convert.spec_to_proto(back) == convert.spec_to_proto(spec)
    assert back["lr"] == 0.01 and back["betas"] == (0.8, 0.95) and back["lstm_variant"] == "peephole"


ENUMS = [pb.Cell, pb.LstmVariant, pb.GruVariant, pb.Algorithm, pb.OptimizerKind, pb.Sharing, pb.Device,
         pb.TargetMode]


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.DESCRIPTOR.name)
def test_every_enum_value_carries_its_prefix_and_zero_is_unspecified(enum):
    # buf's ENUM_VALUE_PREFIX and ENUM_ZERO_VALUE_SUFFIX: LstmVariant -> LSTM_VARIANT_...
    prefix = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(enum.DESCRIPTOR.name)).upper() + "_"
    assert enum.Name(0) == prefix + "UNSPECIFIED"
    assert all(name.startswith(prefix) for name in enum.keys())
    assert sorted(enum.values()) == list(range(len(enum.keys())))


def test_short_names_full_names_and_numbers_all_name_the_same_value():
    for value in ("per_stream", "PER-STREAM", "SHARING_PER_STREAM", pb.SHARING_PER_STREAM):
        assert convert.spec_to_proto(dict(name="m", sharing=value)).sharing == pb.SHARING_PER_STREAM
    assert convert.enum_choices(pb.LstmVariant) == ["standard", "peephole", "coupled", "no_forget"]
    with pytest.raises(ValueError, match="shared, per_stream"):
        convert.spec_to_proto(dict(name="m", sharing="unspecified"))
    with pytest.raises(ValueError, match="sharing"):
        convert.spec_to_proto(dict(name="m", sharing="CELL_LSTM"))  # another enum's value


@pytest.mark.parametrize("spec, words", [
    ({"name": "m", "hiden_sizes": [3]}, "hiden_sizes"),
    ({"name": "m", "cell": "transformer"}, "elman, jordan, lstm, gru"),
    ({"name": "m", "algorithm": 9}, "algorithm"),
])
def test_bad_specs_are_refused_with_the_offending_field(spec, words):
    with pytest.raises((TypeError, ValueError), match=words):
        convert.spec_to_proto(spec)


def test_weights_round_trip_with_names_and_shapes():
    weights = {"weight_ih_l0": np.arange(12, dtype=np.float32).reshape(4, 3), "head.bias": np.ones(2)}
    back = convert.tensors_to_weights(convert.weights_to_tensors(weights))
    assert list(back) == list(weights)
    for name in weights:
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], weights[name])


def test_torch_tensors_are_accepted_as_weights():
    torch = pytest.importorskip("torch")
    lstm = torch.nn.LSTM(3, 4)
    tensors = convert.weights_to_tensors(lstm.state_dict())
    assert [tuple(t.shape) for t in tensors] == [tuple(v.shape) for v in lstm.state_dict().values()]


def test_request_rows_and_targets():
    req, steps = convert.build_request("m", "s", 3, inputs=np.arange(6).reshape(3, 2), targets=[[1], [2], [3]])
    assert steps == 3 and list(req.inputs) == [0, 1, 2, 3, 4, 5] and list(req.targets) == [1, 2, 3]
    req, steps = convert.build_request("m", "s", 1, inputs=[1.0, 2.0, 3.0, 4.0], input_size=2)
    assert steps == 2
    req, steps = convert.build_request("m", "s", 1, tokens=[5, 6, 7], targets=[6, 7, 8], classes=True)
    assert steps == 3 and list(req.target_classes) == [6, 7, 8] and not req.targets
    with pytest.raises(ValueError, match="either inputs or tokens"):
        convert.build_request("m", "s", 1)
    with pytest.raises(ValueError, match="whole rows"):
        convert.build_request("m", "s", 1, inputs=[1.0, 2.0, 3.0], input_size=2)


def test_response_arrays_take_the_chunk_shape():
    msg = pb.StreamResponse(seq=4, acked_seq=4, durable_seq=2, predictions=[1, 2, 3, 4, 5, 6],
                            losses=[float("nan"), 0.5, 0.25], forecast=[7, 8, 9, 10])
    r = convert.StreamResult.from_proto(msg, steps=3)
    assert r.predictions.shape == (3, 2) and r.forecast.shape == (2, 2) and r.losses.shape == (3,)
    assert np.isnan(r.losses[0]) and r.error is None and not r.duplicate
    refused = pb.StreamResponse(seq=5)
    refused.error.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    refused.error.message = "bad shape"
    r = convert.StreamResult.from_proto(refused, steps=3)
    assert r.error == (grpc.StatusCode.INVALID_ARGUMENT, "bad shape")
    assert r.predictions.shape == (0, 0)
