"""service/coldstart.py's decisions at start-up, with the kernel load replaced by a sleep (the
real cold starts, with an empty numba cache, are in tests/clients/test_first_start.py)."""
import asyncio
import time

from rnnstream.service import coldstart
from rnnstream.service.engine import kernel_tier


def _start(monkeypatch, *, warm: bool, load_s: float, mode: str, patience_s: float):
    monkeypatch.setattr(coldstart, "kernel_cache", lambda: ("a cache", warm))
    monkeypatch.setattr(coldstart, "warm_up", lambda: time.sleep(load_s) or load_s)
    switches = []

    async def main():
        background = await coldstart.start_kernels(mode, switches.append, load_patience_s=patience_s)
        interpreting_while_serving = kernel_tier.interpreting()
        if background is not None:
            await asyncio.wait_for(background.run(), 30)
        return background, interpreting_while_serving

    try:
        background, interpreting = asyncio.run(main())
    finally:
        kernel_tier.use_compiled()
    return background, interpreting, switches


def test_a_warm_cache_is_loaded_before_serving(monkeypatch):
    background, interpreting, switches = _start(monkeypatch, warm=True, load_s=0.1, mode="interpret",
                                                patience_s=5)
    assert background is None and not interpreting and switches == []


def test_a_load_that_turns_into_a_compile_serves_interpreted_until_it_is_done(monkeypatch):
    background, interpreting, switches = _start(monkeypatch, warm=True, load_s=1.0, mode="interpret",
                                                patience_s=0.2)
    assert background is not None and interpreting
    assert switches == [True, False] and not kernel_tier.interpreting()
    assert background.process is None  # no child: the load in this process finished the work


def test_wait_mode_waits_however_long_the_load_takes(monkeypatch):
    background, interpreting, switches = _start(monkeypatch, warm=True, load_s=1.0, mode="wait",
                                                patience_s=0.2)
    assert background is None and not interpreting and switches == []
