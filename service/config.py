"""Every tunable of the server in one place: flags, their environment variables, defaults.

Each flag ``--some-flag`` may also come from ``RNNSTREAM_SOME_FLAG``; a flag on the command
line wins over the environment, the environment over the default. ``clients/cli.py`` execs
``python -m rnnstream.service`` with the same flags, so this module is the only place they are parsed.
Tests build a :class:`Config` directly and change the fields they care about.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Mapping, Sequence

ENV_PREFIX = "RNNSTREAM_"
DURABILITY_MODES = ("periodic", "every-chunk")
COLD_START_MODES = ("interpret", "wait")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# What each flag means, for --help (the default and the variable are added to it).
HELP = {
    "max_inflight_bytes_per_call": "request bytes one Stream call may have read ahead of its answers "
                                   "(at least --max-message-bytes); past it the call is not read",
    "workers": "engine threads; 0: the cores this process may use",
    "max_memory_bytes": "memory budget for weights, optimizer state, streams and buffered requests; "
                        "0: 80%% of the cgroup memory limit or of RAM",
    "max_models": "models the server holds; more are refused (RESOURCE_EXHAUSTED)",
    "host": "address the gRPC server binds (0.0.0.0: every interface)",
    "port": "gRPC port; 0 picks a free one and logs it",
    "metrics_port": "Prometheus metrics port; -1 turns the metrics endpoint off",
    "health_port": "grpc.health.v1 (Check) also on this port, on --host, answered by a process of its own: a "
                   "probe there does not queue behind the main port's new calls under load; NOT_SERVING if the "
                   "event loop stalls for --health-stale-s; 0 picks a free one; -1: off",
    "health_stale_s": "the health port says NOT_SERVING once the event loop has not turned for this many seconds",
    "metrics_host": "address the metrics endpoint binds (separate from --host: model names are in its labels)",
    "metrics_tls_cert": "with --metrics-tls-key: serve the metrics over HTTPS",
    "metrics_tls_key": "the metrics endpoint's TLS key",
    "metrics_token_file": "a scrape must send 'Authorization: Bearer <token in this file>'",
    "data_dir": "where the SQLite store keeps models, weights and stream state",
    "store": "the state store: empty for SQLite in --data-dir, sqlite:///DIR, or postgresql://USER@HOST:PORT/DB "
             "(shared by replicas: stream leases, shared-weight rounds)",
    "lease_ttl_s": "shared store: seconds a stream's lease lasts unrenewed (renewed every third of it); "
                   "a dead replica's streams move after at most this",
    "share_interval_s": "shared store: seconds between rounds that combine the replicas' copies of a SHARED "
                        "model's weights (weighted by their updates); 0: no rounds",
    "cold_start": "with nothing in numba's cache (a fresh install): 'interpret' serves at once with the "
                  "kernels run by the interpreter (slower; results equal to float32 rounding) while a child "
                  "process compiles them, then switches; 'wait' serves only once they are compiled",
    "durability": "periodic: checkpoint every --checkpoint-interval-s; every-chunk: commit before answering",
    "checkpoint_interval_s": "seconds between periodic stream checkpoints",
    "batch_window_s": "micro-batching window in seconds (never waited when no other stream is queued)",
    "inline_below_s": "a batch expected to take less than this many seconds (e.g. 0.0002) runs on the event "
                      "loop instead of a worker thread, saving the hand-off for tiny models; 0 (the default): "
                      "never, the loop does I/O only",
    "max_batch_streams": "streams per engine call",
    "max_streams_per_model": "streams held in memory per model",
    "max_streams_total": "streams held in memory by the server",
    "max_chunk_steps": "steps of one chunk",
    "max_horizon": "forecast steps of one chunk",
    "max_inflight_per_call": "chunks of one Stream call read ahead of their answers",
    "max_message_bytes": "larger gRPC messages are refused with RESOURCE_EXHAUSTED",
    "max_stream_memory_bytes": "CreateModel refuses models whose one stream needs more (RTRL: try snap1 or tbptt)",
    "stream_idle_ttl_s": "idle streams are stored and dropped from memory after this many seconds",
    "shutdown_grace_s": "SIGTERM/SIGINT: seconds for in-flight chunks before the final checkpoint",
    "auth_token_file": "every call but health needs 'authorization: Bearer <token in this file>'",
    "tls_cert": "with --tls-key: serve gRPC over TLS with this certificate (PEM)",
    "tls_key": "the gRPC server's TLS key (PEM)",
    "log_level": "one of " + ", ".join(LOG_LEVELS) + " (any case)",
}


@dataclasses.dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 50051                     # 0: pick a free port (logged at start)
    metrics_port: int = 9464              # -1: no metrics endpoint
    health_port: int = -1                 # -1: off; health also on this port, off the event loop
    health_stale_s: float = 10.0          # the health port: NOT_SERVING after the loop stalls this long
    metrics_host: str = "127.0.0.1"       # its own: not --host (model names are in its labels)
    metrics_tls_cert: str = ""            # set with metrics_tls_key: the endpoint speaks HTTPS
    metrics_tls_key: str = ""
    metrics_token_file: str = ""          # set: a scrape needs "Authorization: Bearer <token>"
    data_dir: str = "./rnnstream-data"
    store: str = ""                       # "": SQLite in data_dir; postgresql://...: shared by replicas
    lease_ttl_s: float = 2.0              # shared store: a stream's lease; failover waits at most this
    share_interval_s: float = 10.0        # shared store: weight rounds of SHARED models; 0: none
    durability: str = "periodic"          # or "every-chunk": commit before acknowledging
    cold_start: str = "interpret"         # or "wait": serve only once the kernels are compiled
    checkpoint_interval_s: float = 2.0    # periodic stream checkpoints
    batch_window_s: float = 0.001         # micro-batching window (never waited alone)
    inline_below_s: float = 0.0           # > 0: tiny batches run on the loop (off: the loop does I/O only)
    max_batch_streams: int = 256          # streams per engine call
    max_streams_per_model: int = 10_000   # streams held in memory per model
    max_streams_total: int = 100_000      # streams held in memory by the server
    max_chunk_steps: int = 4096           # T of one chunk
    max_horizon: int = 4096               # forecast steps of one chunk
    max_inflight_per_call: int = 64       # chunks of one Stream call read ahead of their answers
    max_inflight_bytes_per_call: int = 64 * 1024 * 1024  # and their request bytes
    workers: int = 0                      # engine threads; 0: the cores this process may use
    max_memory_bytes: int = 0             # models, streams, buffered requests; 0: 80% of cgroup limit or RAM
    max_models: int = 1000                # models held by the server
    max_message_bytes: int = 16 * 1024 * 1024
    max_stream_memory_bytes: int = 256 * 1024 * 1024  # per stream (RTRL sensitivity etc.)
    stream_idle_ttl_s: float = 300.0      # idle streams are stored and dropped from memory
    shutdown_grace_s: float = 5.0         # SIGTERM: time for in-flight calls to finish
    auth_token_file: str = ""             # set: every call but health needs the bearer token
    tls_cert: str = ""
    tls_key: str = ""
    log_level: str = "INFO"

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        if self.durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {self.durability!r}")
        if self.cold_start not in COLD_START_MODES:
            raise ValueError(f"cold_start must be one of {COLD_START_MODES}, not {self.cold_start!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if bool(self.metrics_tls_cert) != bool(self.metrics_tls_key):
            raise ValueError("--metrics-tls-cert and --metrics-tls-key go together")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")
        if not -1 <= self.health_port <= 65535:
            raise ValueError(f"health_port {self.health_port} is out of range (-1: off)")
        if self.health_stale_s <= 0:
            raise ValueError("health_stale_s must be > 0")
        if not self.store.startswith(("sqlite:", "postgresql://", "postgres://")) and self.store:
            raise ValueError(f"store must be sqlite:///DIR or postgresql://USER@HOST:PORT/DB, not {self.store!r}")
        if self.lease_ttl_s < 0.5:
            raise ValueError("lease_ttl_s must be >= 0.5 (it is renewed every third of it)")
        if self.share_interval_s < 0:
            raise ValueError("share_interval_s must be >= 0 (0: no shared-weight rounds)")
        for name in ("checkpoint_interval_s", "stream_idle_ttl_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("max_batch_streams", "max_streams_per_model", "max_streams_total",
                     "max_chunk_steps", "max_message_bytes", "max_inflight_per_call", "max_stream_memory_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_memory_bytes < 0:
            raise ValueError("max_memory_bytes must be >= 0 (0: 80% of the cgroup limit or of RAM)")
        if self.max_models <= 0:
            raise ValueError("max_models must be > 0")
        if self.workers < 0:
            raise ValueError("workers must be >= 0 (0: the cores this process may use)")
        if self.max_inflight_bytes_per_call < self.max_message_bytes:
            raise ValueError(f"max_inflight_bytes_per_call ({self.max_inflight_bytes_per_call}) must be at least "
                             f"max_message_bytes ({self.max_message_bytes}), or a largest message could never be read")
        if not 0 <= self.batch_window_s <= 0.1:
            raise ValueError("batch_window_s must be within [0, 0.1]")
        if not 0 <= self.inline_below_s <= 0.001:
            raise ValueError("inline_below_s must be within [0, 0.001]: a batch that can take a millisecond "
                             "runs on a worker thread")


# Flag names keep the unit suffix of the field (``--checkpoint-interval-s 2``).
_FLAG_NAMES = {f.name: ("--" + f.name.replace("_", "-")) for f in dataclasses.fields(Config)}


def env_var(field: str) -> str:
    """The environment variable for a Config field: ``port`` -> ``RNNSTREAM_PORT``."""
    return ENV_PREFIX + field.upper()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m rnnstream.service`` (and of ``rnnstream serve``)."""
    parser = argparse.ArgumentParser(
        prog="python -m rnnstream.service",
        description="Serve rnnstream over gRPC. Every flag also reads RNNSTREAM_<FLAG> "
                    "(upper case, '-' as '_'), e.g. RNNSTREAM_PORT.")
    for f in dataclasses.fields(Config):
        kind = type(f.default)
        choices = {"durability": DURABILITY_MODES, "cold_start": COLD_START_MODES}.get(f.name)
        extra = {"choices": choices} if choices else {}
        if f.name == "log_level":
            kind, extra = str.upper, {"choices": LOG_LEVELS, "metavar": "LEVEL"}
        default = f"{f.default!r}" if f.default != "" else "unset"
        parser.add_argument(_FLAG_NAMES[f.name], dest=f.name, type=kind, default=None,
                            help=f"{HELP[f.name]} (default {default}; env {env_var(f.name)})", **extra)
    return parser


def from_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Flags, then environment, then defaults; raises SystemExit on a bad value (argparse)."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    opts = parser.parse_args(argv)
    values = {}
    for f in dataclasses.fields(Config):
        value = getattr(opts, f.name)
        if value is None and env_var(f.name) in environ:
            raw = environ[env_var(f.name)]
            try:
                value = type(f.default)(raw)
            except ValueError:
                parser.error(f"{env_var(f.name)}={raw!r} is not a valid {type(f.default).__name__}")
        if value is not None:
            values[f.name] = value
    config = Config(**values)
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    return config
