from google.protobuf import empty_pb2 as _empty_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Cell(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CELL_UNSPECIFIED: _ClassVar[Cell]
    CELL_ELMAN: _ClassVar[Cell]
    CELL_JORDAN: _ClassVar[Cell]
    CELL_LSTM: _ClassVar[Cell]
    CELL_GRU: _ClassVar[Cell]
    CELL_INDRNN: _ClassVar[Cell]

class LstmVariant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LSTM_VARIANT_UNSPECIFIED: _ClassVar[LstmVariant]
    LSTM_VARIANT_STANDARD: _ClassVar[LstmVariant]
    LSTM_VARIANT_PEEPHOLE: _ClassVar[LstmVariant]
    LSTM_VARIANT_COUPLED: _ClassVar[LstmVariant]
    LSTM_VARIANT_NO_FORGET: _ClassVar[LstmVariant]

class GruVariant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRU_VARIANT_UNSPECIFIED: _ClassVar[GruVariant]
    GRU_VARIANT_PYTORCH: _ClassVar[GruVariant]
    GRU_VARIANT_CHO: _ClassVar[GruVariant]

class Algorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALGORITHM_UNSPECIFIED: _ClassVar[Algorithm]
    ALGORITHM_RTRL: _ClassVar[Algorithm]
    ALGORITHM_TBPTT: _ClassVar[Algorithm]
    ALGORITHM_SNAP1: _ClassVar[Algorithm]

class OptimizerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPTIMIZER_KIND_UNSPECIFIED: _ClassVar[OptimizerKind]
    OPTIMIZER_KIND_SGD: _ClassVar[OptimizerKind]
    OPTIMIZER_KIND_ADAM: _ClassVar[OptimizerKind]
    OPTIMIZER_KIND_RMSPROP: _ClassVar[OptimizerKind]
    OPTIMIZER_KIND_ADAGRAD: _ClassVar[OptimizerKind]

class Sharing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARING_UNSPECIFIED: _ClassVar[Sharing]
    SHARING_SHARED: _ClassVar[Sharing]
    SHARING_PER_STREAM: _ClassVar[Sharing]

class Device(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_UNSPECIFIED: _ClassVar[Device]
    DEVICE_CPU: _ClassVar[Device]
    DEVICE_CUDA: _ClassVar[Device]

class Normalization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NORMALIZATION_UNSPECIFIED: _ClassVar[Normalization]
    NORMALIZATION_OFF: _ClassVar[Normalization]
    NORMALIZATION_SHARED: _ClassVar[Normalization]
    NORMALIZATION_PER_STREAM: _ClassVar[Normalization]

class TargetMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TARGET_MODE_UNSPECIFIED: _ClassVar[TargetMode]
    TARGET_MODE_EXPLICIT: _ClassVar[TargetMode]
    TARGET_MODE_NEXT_INPUT: _ClassVar[TargetMode]
CELL_UNSPECIFIED: Cell
CELL_ELMAN: Cell
CELL_JORDAN: Cell
CELL_LSTM: Cell
CELL_GRU: Cell
CELL_INDRNN: Cell
LSTM_VARIANT_UNSPECIFIED: LstmVariant
LSTM_VARIANT_STANDARD: LstmVariant
LSTM_VARIANT_PEEPHOLE: LstmVariant
LSTM_VARIANT_COUPLED: LstmVariant
LSTM_VARIANT_NO_FORGET: LstmVariant
GRU_VARIANT_UNSPECIFIED: GruVariant
GRU_VARIANT_PYTORCH: GruVariant
GRU_VARIANT_CHO: GruVariant
ALGORITHM_UNSPECIFIED: Algorithm
ALGORITHM_RTRL: Algorithm
ALGORITHM_TBPTT: Algorithm
ALGORITHM_SNAP1: Algorithm
OPTIMIZER_KIND_UNSPECIFIED: OptimizerKind
OPTIMIZER_KIND_SGD: OptimizerKind
OPTIMIZER_KIND_ADAM: OptimizerKind
OPTIMIZER_KIND_RMSPROP: OptimizerKind
OPTIMIZER_KIND_ADAGRAD: OptimizerKind
SHARING_UNSPECIFIED: Sharing
SHARING_SHARED: Sharing
SHARING_PER_STREAM: Sharing
DEVICE_UNSPECIFIED: Device
DEVICE_CPU: Device
DEVICE_CUDA: Device
NORMALIZATION_UNSPECIFIED: Normalization
NORMALIZATION_OFF: Normalization
NORMALIZATION_SHARED: Normalization
NORMALIZATION_PER_STREAM: Normalization
TARGET_MODE_UNSPECIFIED: TargetMode
TARGET_MODE_EXPLICIT: TargetMode
TARGET_MODE_NEXT_INPUT: TargetMode

class Optimizer(_message.Message):
    __slots__ = ("kind", "lr", "momentum", "beta1", "beta2", "eps", "nesterov", "alpha")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    kind: OptimizerKind
    lr: float
    momentum: float
    beta1: float
    beta2: float
    eps: float
    nesterov: bool
    alpha: float
    def __init__(self, kind: _Optional[_Union[OptimizerKind, str]] = ..., lr: _Optional[float] = ..., momentum: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., eps: _Optional[float] = ..., nesterov: _Optional[bool] = ..., alpha: _Optional[float] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("name", "cell", "lstm_variant", "hidden_sizes", "input_size", "vocab_size", "output_size", "num_classes", "algorithm", "tbptt_k1", "tbptt_k2", "optimizer", "clip_norm", "weight_decay", "sharing", "device", "seed", "target_mode", "gru_variant", "normalize", "normalize_decay", "input_taps", "output_taps", "linear_skip", "max_label_delay", "members", "hedge_rate", "context_table_bits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    LSTM_VARIANT_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    TBPTT_K1_FIELD_NUMBER: _ClassVar[int]
    TBPTT_K2_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    SHARING_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODE_FIELD_NUMBER: _ClassVar[int]
    GRU_VARIANT_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_DECAY_FIELD_NUMBER: _ClassVar[int]
    INPUT_TAPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TAPS_FIELD_NUMBER: _ClassVar[int]
    LINEAR_SKIP_FIELD_NUMBER: _ClassVar[int]
    MAX_LABEL_DELAY_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    HEDGE_RATE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TABLE_BITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    cell: Cell
    lstm_variant: LstmVariant
    hidden_sizes: _containers.RepeatedScalarFieldContainer[int]
    input_size: int
    vocab_size: int
    output_size: int
    num_classes: int
    algorithm: Algorithm
    tbptt_k1: int
    tbptt_k2: int
    optimizer: Optimizer
    clip_norm: float
    weight_decay: float
    sharing: Sharing
    device: Device
    seed: int
    target_mode: TargetMode
    gru_variant: GruVariant
    normalize: Normalization
    normalize_decay: float
    input_taps: _containers.RepeatedScalarFieldContainer[int]
    output_taps: _containers.RepeatedScalarFieldContainer[int]
    linear_skip: bool
    max_label_delay: int
    members: _containers.RepeatedCompositeFieldContainer[MemberSpec]
    hedge_rate: float
    context_table_bits: int
    def __init__(self, name: _Optional[str] = ..., cell: _Optional[_Union[Cell, str]] = ..., lstm_variant: _Optional[_Union[LstmVariant, str]] = ..., hidden_sizes: _Optional[_Iterable[int]] = ..., input_size: _Optional[int] = ..., vocab_size: _Optional[int] = ..., output_size: _Optional[int] = ..., num_classes: _Optional[int] = ..., algorithm: _Optional[_Union[Algorithm, str]] = ..., tbptt_k1: _Optional[int] = ..., tbptt_k2: _Optional[int] = ..., optimizer: _Optional[_Union[Optimizer, _Mapping]] = ..., clip_norm: _Optional[float] = ..., weight_decay: _Optional[float] = ..., sharing: _Optional[_Union[Sharing, str]] = ..., device: _Optional[_Union[Device, str]] = ..., seed: _Optional[int] = ..., target_mode: _Optional[_Union[TargetMode, str]] = ..., gru_variant: _Optional[_Union[GruVariant, str]] = ..., normalize: _Optional[_Union[Normalization, str]] = ..., normalize_decay: _Optional[float] = ..., input_taps: _Optional[_Iterable[int]] = ..., output_taps: _Optional[_Iterable[int]] = ..., linear_skip: _Optional[bool] = ..., max_label_delay: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberSpec, _Mapping]]] = ..., hedge_rate: _Optional[float] = ..., context_table_bits: _Optional[int] = ...) -> None: ...

class MemberSpec(_message.Message):
    __slots__ = ("cell", "lstm_variant", "gru_variant", "hidden_sizes", "algorithm", "tbptt_k1", "tbptt_k2", "optimizer", "clip_norm", "weight_decay", "seed", "baseline")
    CELL_FIELD_NUMBER: _ClassVar[int]
    LSTM_VARIANT_FIELD_NUMBER: _ClassVar[int]
    GRU_VARIANT_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZES_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    TBPTT_K1_FIELD_NUMBER: _ClassVar[int]
    TBPTT_K2_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    cell: Cell
    lstm_variant: LstmVariant
    gru_variant: GruVariant
    hidden_sizes: _containers.RepeatedScalarFieldContainer[int]
    algorithm: Algorithm
    tbptt_k1: int
    tbptt_k2: int
    optimizer: Optimizer
    clip_norm: float
    weight_decay: float
    seed: int
    baseline: str
    def __init__(self, cell: _Optional[_Union[Cell, str]] = ..., lstm_variant: _Optional[_Union[LstmVariant, str]] = ..., gru_variant: _Optional[_Union[GruVariant, str]] = ..., hidden_sizes: _Optional[_Iterable[int]] = ..., algorithm: _Optional[_Union[Algorithm, str]] = ..., tbptt_k1: _Optional[int] = ..., tbptt_k2: _Optional[int] = ..., optimizer: _Optional[_Union[Optimizer, _Mapping]] = ..., clip_norm: _Optional[float] = ..., weight_decay: _Optional[float] = ..., seed: _Optional[int] = ..., baseline: _Optional[str] = ...) -> None: ...

class ParameterInfo(_message.Message):
    __slots__ = ("name", "shape", "offset")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("spec", "num_parameters", "parameters", "active_streams", "stored_streams", "steps", "updates", "created_unix_ms")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    STORED_STREAMS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    spec: ModelSpec
    num_parameters: int
    parameters: _containers.RepeatedCompositeFieldContainer[ParameterInfo]
    active_streams: int
    stored_streams: int
    steps: int
    updates: int
    created_unix_ms: int
    def __init__(self, spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., num_parameters: _Optional[int] = ..., parameters: _Optional[_Iterable[_Union[ParameterInfo, _Mapping]]] = ..., active_streams: _Optional[int] = ..., stored_streams: _Optional[int] = ..., steps: _Optional[int] = ..., updates: _Optional[int] = ..., created_unix_ms: _Optional[int] = ...) -> None: ...

class CreateModelRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: ModelSpec
    def __init__(self, spec: _Optional[_Union[ModelSpec, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[_Iterable[float]] = ...) -> None: ...

class Weights(_message.Message):
    __slots__ = ("model", "stream_id", "tensors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    model: str
    stream_id: str
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, model: _Optional[str] = ..., stream_id: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class ExportWeightsRequest(_message.Message):
    __slots__ = ("model", "stream_id", "with_statistics")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    model: str
    stream_id: str
    with_statistics: bool
    def __init__(self, model: _Optional[str] = ..., stream_id: _Optional[str] = ..., with_statistics: _Optional[bool] = ...) -> None: ...

class ImportWeightsRequest(_message.Message):
    __slots__ = ("model", "stream_id", "tensors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    model: str
    stream_id: str
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, model: _Optional[str] = ..., stream_id: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("model", "stream_id", "seq", "inputs", "tokens", "targets", "target_classes", "predict_only", "horizon", "labels", "reset_after", "ephemeral")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASSES_FIELD_NUMBER: _ClassVar[int]
    PREDICT_ONLY_FIELD_NUMBER: _ClassVar[int]
    HORIZON_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    model: str
    stream_id: str
    seq: int
    inputs: _containers.RepeatedScalarFieldContainer[float]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    targets: _containers.RepeatedScalarFieldContainer[float]
    target_classes: _containers.RepeatedScalarFieldContainer[int]
    predict_only: bool
    horizon: int
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    reset_after: bool
    ephemeral: bool
    def __init__(self, model: _Optional[str] = ..., stream_id: _Optional[str] = ..., seq: _Optional[int] = ..., inputs: _Optional[_Iterable[float]] = ..., tokens: _Optional[_Iterable[int]] = ..., targets: _Optional[_Iterable[float]] = ..., target_classes: _Optional[_Iterable[int]] = ..., predict_only: _Optional[bool] = ..., horizon: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., reset_after: _Optional[bool] = ..., ephemeral: _Optional[bool] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("step", "target", "target_class")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASS_FIELD_NUMBER: _ClassVar[int]
    step: int
    target: _containers.RepeatedScalarFieldContainer[float]
    target_class: int
    def __init__(self, step: _Optional[int] = ..., target: _Optional[_Iterable[float]] = ..., target_class: _Optional[int] = ...) -> None: ...

class WeightsPiece(_message.Message):
    __slots__ = ("model", "stream_id", "name", "shape", "offset", "data")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    model: str
    stream_id: str
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    data: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, model: _Optional[str] = ..., stream_id: _Optional[str] = ..., name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., data: _Optional[_Iterable[float]] = ...) -> None: ...

class DeleteStreamRequest(_message.Message):
    __slots__ = ("model", "stream_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    stream_id: str
    def __init__(self, model: _Optional[str] = ..., stream_id: _Optional[str] = ...) -> None: ...

class StreamStats(_message.Message):
    __slots__ = ("steps", "updates", "running_loss", "gradient_norm", "skipped_updates", "members")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_LOSS_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_NORM_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_UPDATES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    steps: int
    updates: int
    running_loss: float
    gradient_norm: float
    skipped_updates: int
    members: _containers.RepeatedCompositeFieldContainer[MemberStats]
    def __init__(self, steps: _Optional[int] = ..., updates: _Optional[int] = ..., running_loss: _Optional[float] = ..., gradient_norm: _Optional[float] = ..., skipped_updates: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberStats, _Mapping]]] = ...) -> None: ...

class MemberStats(_message.Message):
    __slots__ = ("index", "running_loss", "weight")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RUNNING_LOSS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    index: int
    running_loss: float
    weight: float
    def __init__(self, index: _Optional[int] = ..., running_loss: _Optional[float] = ..., weight: _Optional[float] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("stream_id", "seq", "acked_seq", "durable_seq", "predictions", "losses", "forecast", "stats", "duplicate", "error", "model", "first_step")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    DURABLE_SEQ_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FIRST_STEP_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    seq: int
    acked_seq: int
    durable_seq: int
    predictions: _containers.RepeatedScalarFieldContainer[float]
    losses: _containers.RepeatedScalarFieldContainer[float]
    forecast: _containers.RepeatedScalarFieldContainer[float]
    stats: StreamStats
    duplicate: bool
    error: _status_pb2.Status
    model: str
    first_step: int
    def __init__(self, stream_id: _Optional[str] = ..., seq: _Optional[int] = ..., acked_seq: _Optional[int] = ..., durable_seq: _Optional[int] = ..., predictions: _Optional[_Iterable[float]] = ..., losses: _Optional[_Iterable[float]] = ..., forecast: _Optional[_Iterable[float]] = ..., stats: _Optional[_Union[StreamStats, _Mapping]] = ..., duplicate: _Optional[bool] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., model: _Optional[str] = ..., first_step: _Optional[int] = ...) -> None: ...

class GetStreamRequest(_message.Message):
    __slots__ = ("model", "stream_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    stream_id: str
    def __init__(self, model: _Optional[str] = ..., stream_id: _Optional[str] = ...) -> None: ...

class ResetStreamRequest(_message.Message):
    __slots__ = ("model", "stream_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    stream_id: str
    def __init__(self, model: _Optional[str] = ..., stream_id: _Optional[str] = ...) -> None: ...

class CloseStreamRequest(_message.Message):
    __slots__ = ("model", "stream_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    stream_id: str
    def __init__(self, model: _Optional[str] = ..., stream_id: _Optional[str] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("model", "stream_id", "acked_seq", "durable_seq", "stats", "in_memory")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    DURABLE_SEQ_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    IN_MEMORY_FIELD_NUMBER: _ClassVar[int]
    model: str
    stream_id: str
    acked_seq: int
    durable_seq: int
    stats: StreamStats
    in_memory: bool
    def __init__(self, model: _Optional[str] = ..., stream_id: _Optional[str] = ..., acked_seq: _Optional[int] = ..., durable_seq: _Optional[int] = ..., stats: _Optional[_Union[StreamStats, _Mapping]] = ..., in_memory: _Optional[bool] = ...) -> None: ...
