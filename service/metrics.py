"""Prometheus metrics: names start with ``rnnstream_``, base units, no stream_id label.

Per-step series (loss, gradient norm) can see thousands of observations per engine call, so
they use :class:`BulkHistogram`, which bins a whole numpy array at once. gRPC server metrics
follow go-grpc-prometheus (see ``service.interceptors``).
"""
from __future__ import annotations

import bisect
import math
import threading

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, ProcessCollector
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

# From 10 us: one step of a small model takes tens of microseconds.
LATENCY_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOSS_BUCKETS = tuple(float(f"{x:.2g}") for x in 10.0 ** np.arange(-6, 4.5, 0.5))
NORM_BUCKETS = tuple(float(f"{x:.2g}") for x in 10.0 ** np.arange(-4, 5.5, 0.5))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WEIGHT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)


class _BulkChild:
    def __init__(self, bounds: np.ndarray):
        self._bounds = bounds
        self._bound_list = bounds.tolist()
        self._counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # last: +Inf only
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values) -> None:
        """Observe every finite value of ``values``; NaN (no loss at that step) is left out."""
        if len(values) <= 8:  # numpy's fixed cost dominates for a few values
            for x in values:
                x = float(x)
                if math.isfinite(x):
                    i = bisect.bisect_left(self._bound_list, x)
                    with self._lock:
                        self._counts[i] += 1
                        self._sum += x
            return
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            return
        # le semantics: a value equal to a bound falls in that bucket.
        idx = np.searchsorted(self._bounds, v, side="left")
        binned = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += binned
            self._sum += float(v.sum())

    def observe(self, value: float) -> None:
        self.observe_many([value])

    def sample(self):
        with self._lock:
            return self._counts.cumsum(), self._sum


class BulkHistogram(Collector):
    """A labelled histogram that takes arrays of observations in one call."""

    def __init__(self, name: str, documentation: str, labelnames, buckets, registry: CollectorRegistry):
        self._name, self._doc, self._labelnames = name, documentation, tuple(labelnames)
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._children: dict[tuple, _BulkChild] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> _BulkChild:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, _BulkChild(self._bounds))
        return child

    def remove(self, *values: str) -> None:
        with self._lock:
            self._children.pop(tuple(str(v) for v in values), None)

    def remove_prefix(self, *values: str) -> None:
        """Drop every child whose first labels are ``values`` (e.g. all members of a model)."""
        prefix = tuple(str(v) for v in values)
        with self._lock:
            for key in [k for k in self._children if k[:len(prefix)] == prefix]:
                del self._children[key]

    def describe(self):
        return [HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)]

    def collect(self):
        family = HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)
        with self._lock:
            children = list(self._children.items())
        for key, child in children:
            cumulative, total = child.sample()
            les = [repr(float(b)) for b in self._bounds] + ["+Inf"]
            family.add_metric(list(key), list(zip(les, cumulative.tolist())), sum_value=total)
        yield family


class Metrics:
    """Every series the server exports, registered on one registry (one per server)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # the process's CPU, memory and open files, and its garbage collector's work
        # (python_gc_*): what an operator checks first when latency climbs
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        self.steps = Counter("rnnstream_steps", "Stream steps run (predictions made)", ["model"], registry=r)
        self.updates = Counter("rnnstream_updates", "Weight updates applied", ["model"], registry=r)
        self.skipped_updates = Counter("rnnstream_skipped_updates", "Updates skipped, by reason",
                                       ["model", "reason"], registry=r)
        self.loss = BulkHistogram("rnnstream_loss", "Per-step loss", ["model"], LOSS_BUCKETS, r)
        self.gradient_norm = BulkHistogram("rnnstream_gradient_norm", "Global gradient norm before clipping",
                                           ["model"], NORM_BUCKETS, r)
        self.gradient_clipped = Counter("rnnstream_gradient_clipped", "Updates whose gradient was clipped",
                                        ["model"], registry=r)
        self.weight_norm = Gauge("rnnstream_weight_norm", "L2 norm of the model's (shared) weights",
                                 ["model"], registry=r)
        self.step_seconds = Histogram("rnnstream_step_seconds",
                                      "Kernel time per stream-step (engine call time / steps in the call)",
                                      ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.chunk_seconds = Histogram("rnnstream_chunk_seconds", "Chunk request in to response out",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_streams = Histogram("rnnstream_batch_streams", "Streams per engine call", ["model"],
                                       buckets=BATCH_BUCKETS, registry=r)
        self.active_streams = Gauge("rnnstream_active_streams", "Streams held in memory", ["model"], registry=r)
        self.buffered_request_bytes = Gauge(
            "rnnstream_buffered_request_bytes",
            "Bytes of Stream requests read and not yet answered, over all calls", registry=r)
        self.memory_budget_bytes = Gauge("rnnstream_memory_budget_bytes", "The memory budget (--max-memory-bytes)",
                                         registry=r)
        self.memory_used_bytes = Gauge("rnnstream_memory_used_bytes",
                                       "Bytes counted against the memory budget: models, streams, buffered requests",
                                       registry=r)
        self.kernels_interpreted = Gauge(
            "rnnstream_kernels_interpreted",
            "1 while chunks run on the interpreted kernels (a cold start's compile is under way)", registry=r)
        self.evictions = Counter("rnnstream_stream_evictions", "Streams dropped from memory, by reason",
                                 ["reason"], registry=r)
        self.stream_opens = Counter("rnnstream_stream_opens",
                                    "Streams brought into memory, by where their state came from: new (the store "
                                    "certainly lacks it, not asked), store (read from the store), leaving (an "
                                    "eviction not yet committed)", ["source"], registry=r)
        self.checkpoint_seconds = Histogram("rnnstream_checkpoint_seconds", "Time to write one checkpoint",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.stream_restarts = Counter("rnnstream_stream_restarts",
                                       "Streams restarted from a zero state because their forward went non-finite",
                                       registry=r)
        self.checkpoint_failures = Counter("rnnstream_checkpoint_failures",
                                           "Rows (a model's or one stream's) a checkpoint could not write",
                                           registry=r)
        # ensembles: per member, over all streams (a stream label would be unbounded)
        self.member_loss = BulkHistogram("rnnstream_member_loss", "Per-step loss of each ensemble member",
                                         ["model", "member"], LOSS_BUCKETS, r)
        self.member_weight = BulkHistogram("rnnstream_member_weight",
                                           "Hedge weight of each ensemble member, per stream after each chunk",
                                           ["model", "member"], WEIGHT_BUCKETS, r)
        self.chunk_errors = Counter("rnnstream_chunk_errors", "Chunks refused, by gRPC code",
                                    ["model", "code"], registry=r)
        # go-grpc-prometheus names, so existing dashboards work.
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.grpc_started = Counter("grpc_server_started", "RPCs started on the server", labels, registry=r)
        self.grpc_handled = Counter("grpc_server_handled", "RPCs completed on the server, by code",
                                    labels + ["grpc_code"], registry=r)
        self.grpc_msg_received = Counter("grpc_server_msg_received", "Stream messages received", labels, registry=r)
        self.grpc_msg_sent = Counter("grpc_server_msg_sent", "Stream messages sent", labels, registry=r)
        self.grpc_handling_seconds = Histogram("grpc_server_handling_seconds", "RPC handling time", labels,
                                               buckets=LATENCY_BUCKETS, registry=r)

    def for_model(self, model: str) -> "ModelMetrics":
        return ModelMetrics(self, model)

    def forget_model(self, model: str) -> None:
        """Drop a deleted model's series so they stop being exported."""
        for metric in (self.steps, self.updates, self.gradient_clipped, self.weight_norm, self.step_seconds,
                       self.chunk_seconds, self.batch_streams, self.active_streams):
            try:
                metric.remove(model)
            except KeyError:
                pass
        self.loss.remove(model)
        self.gradient_norm.remove(model)
        self.member_loss.remove_prefix(model)
        self.member_weight.remove_prefix(model)


class ModelMetrics:
    """The series of one model with the label bound once: the hot path skips labels() lookups."""

    def __init__(self, m: Metrics, model: str):
        self._m, self._model = m, model
        self.steps = m.steps.labels(model)
        self.updates = m.updates.labels(model)
        self.gradient_clipped = m.gradient_clipped.labels(model)
        self.loss = m.loss.labels(model)
        self.gradient_norm = m.gradient_norm.labels(model)
        self.weight_norm = m.weight_norm.labels(model)
        self.step_seconds = m.step_seconds.labels(model)
        self.chunk_seconds = m.chunk_seconds.labels(model)
        self.batch_streams = m.batch_streams.labels(model)
        self.active_streams = m.active_streams.labels(model)
        self.poisoned_restarts = m.stream_restarts  # server-wide: rare, and a model label adds nothing
        self._skipped: dict = {}
        self._members: list = []

    def observe_members(self, call) -> None:
        """An ensemble's call: each member's step losses and its weight on each stream."""
        losses = getattr(call, "member_losses", None)
        if not losses:
            return
        while len(self._members) < len(losses):
            k = str(len(self._members))
            self._members.append((self._m.member_loss.labels(self._model, k),
                                  self._m.member_weight.labels(self._model, k)))
        for (loss, weight), member_losses, member_weights in zip(self._members, losses, call.member_weights):
            loss.observe_many(np.ravel(member_losses))
            weight.observe_many(np.ravel(member_weights))

    def skipped(self, reason: str):
        child = self._skipped.get(reason)
        if child is None:
            child = self._skipped[reason] = self._m.skipped_updates.labels(self._model, reason)
        return child
