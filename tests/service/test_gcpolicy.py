"""The server process collects cycles rarely and never scans what it loaded before serving."""
import subprocess
import sys


def test_collect_less_freezes_what_exists_and_raises_the_thresholds():
    code = ("import gc; from rnnstream.service.gcpolicy import collect_less, THRESHOLDS; "
            "import numpy; before = collect_less(); "
            "print(before == (700, 10, 10), gc.get_threshold() == THRESHOLDS, gc.get_freeze_count() > 1000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]


def test_the_server_exports_its_collector_and_process_metrics(server):
    """python_gc_* and process_* series, on the server's own registry."""
    from prometheus_client import generate_latest
    text = generate_latest(server.server.metrics.registry).decode()
    assert 'python_gc_collections_total{generation="2"}' in text
    assert "process_resident_memory_bytes" in text
