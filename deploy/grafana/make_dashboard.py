"""Write the Grafana dashboard (dashboards/rnnstream.json) from the panel list below.

Run ``python deploy/grafana/make_dashboard.py`` after editing a panel; a test checks that
the committed JSON is what this writes, and runs every query against a real Prometheus.
Standard library only: deploy/ imports nothing of the project.
"""
from __future__ import annotations

import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parent / "dashboards" / "rnnstream.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
M = 'model=~"$model"'
RATE = "$__rate_interval"


def quantiles(metric: str, qs: tuple[float, ...], by: str = "model", where: str = M) -> list[tuple[str, str]]:
    sel = f"{{{where}}}" if where else ""
    return [(f"histogram_quantile({q}, sum by ({by + ', ' if by else ''}le) (rate({metric}_bucket{sel}[{RATE}])))",
             f"{{{{{by}}}}} p{round(q * 100)}" if by else f"p{round(q * 100)}") for q in qs]


def per_model_rate(metric: str, by: str = "model") -> str:
    return f"sum by ({by}) (rate({metric}{{{M}}}[{RATE}]))"


def mean_of(metric: str, by: str = "model", where: str = M) -> str:
    sel = f"{{{where}}}" if where else ""
    return (f"sum by ({by}) (rate({metric}_sum{sel}[{RATE}])) / "
            f"sum by ({by}) (rate({metric}_count{sel}[{RATE}]))")


# (title, unit, [(expr, legend)], description)
PANELS = [
    ("Steps per second", "ops", [(per_model_rate("rnnstream_steps_total"), "{{model}}")],
     "Time steps predicted (and learned from) per second, per model."),
    ("Updates per second", "ops", [
        (per_model_rate("rnnstream_updates_total"), "{{model}} updates"),
        (per_model_rate("rnnstream_skipped_updates_total", "model, reason"), "{{model}} skipped ({{reason}})"),
    ], "Optimizer steps per second; skipped: updates dropped for a non-finite gradient."),
    ("Loss p50 / p90", "none", quantiles("rnnstream_loss", (0.5, 0.9)) + [
        (mean_of("rnnstream_loss"), "{{model}} mean")],
     "Per-step prequential loss (squared error or cross-entropy) over time."),
    ("Gradient norm p50 / p99", "none", quantiles("rnnstream_gradient_norm", (0.5, 0.99)),
     "Global norm of each update's gradient, before clipping."),
    ("Clipped fraction", "percentunit", [(
        f"{per_model_rate('rnnstream_gradient_clipped_total')} / {per_model_rate('rnnstream_updates_total')}",
        "{{model}}")], "Share of updates whose gradient norm was clipped."),
    ("Weight norm", "none", [(f"rnnstream_weight_norm{{{M}}}", "{{model}}")],
     "L2 norm of the model's parameter vector."),
    ("Chunk latency p50 / p99", "s", quantiles("rnnstream_chunk_seconds", (0.5, 0.99)),
     "Server time from a chunk's arrival to its response."),
    ("Step time p50 / p99", "s", quantiles("rnnstream_step_seconds", (0.5, 0.99)),
     "Time of one batched kernel step."),
    ("Batch size (streams per step)", "none", quantiles("rnnstream_batch_streams", (0.5,)) + [
        (mean_of("rnnstream_batch_streams"), "{{model}} mean")],
     "Streams whose steps ran together in one batched kernel call."),
    ("Active streams", "none", [(f"sum by (model) (rnnstream_active_streams{{{M}}})", "{{model}}")],
     "Streams held in memory."),
    ("Stream evictions per second", "ops", [(
        f"sum by (reason) (rate(rnnstream_stream_evictions_total[{RATE}]))", "{{reason}}")],
     "Streams dropped from memory (their state stays in the store)."),
    ("Checkpoint time p50 / p99", "s", quantiles("rnnstream_checkpoint_seconds", (0.5, 0.99), by="", where=""),
     "Time to write one checkpoint to the store."),
    ("gRPC responses by code", "reqps", [(
        f"sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total[{RATE}]))",
        "{{grpc_method}} {{grpc_code}}")], "Finished RPCs per second by method and status code."),
    ("gRPC latency p99", "s", quantiles("grpc_server_handling_seconds", (0.99,), by="grpc_method", where=""),
     "Server handling time of unary RPCs (streams: the whole call)."),
]


def panel(i: int, title: str, unit: str, queries, description: str) -> dict:
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 5}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(ord("A") + j), "datasource": DATASOURCE, "expr": expr,
                     "legendFormat": legend, "range": True}
                    for j, (expr, legend) in enumerate(queries)],
    }


def build() -> dict:
    return {
        "uid": "rnnstream",
        "title": "rnnstream",
        "tags": ["rnnstream"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "templating": {"list": [{
            "name": "model", "label": "model", "type": "query", "datasource": DATASOURCE,
            "query": {"query": "label_values(rnnstream_steps_total, model)", "refId": "models"},
            "definition": "label_values(rnnstream_steps_total, model)",
            "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}, "sort": 1,
        }]},
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
