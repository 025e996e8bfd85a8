"""The kernels at start-up: loaded from numba's cache before serving, or, on a cold cache, built
in a child process while the server already answers with the interpreted kernels.

A cold cache (a fresh install, or the first start after the kernels changed) means minutes of
numba compilation (README.md, "Cold start"). With ``--cold-start interpret`` (the default) the
server does not wait for it: chunks run on the same kernels run by the Python interpreter
(``kernels/interpreted.py``; slower, results equal to float32 rounding), a child process
compiles the kernels into the cache (another core, and no GIL shared with the server), and once
it is done this process loads them (seconds) and every call after that runs compiled.
"""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time

from rnnstream.kernels.registry import CELLS, RULES
from rnnstream.service.engine import kernel_tier, warm_up

log = logging.getLogger(__name__)

# Loading cached kernels takes a few seconds; one that takes longer than this is a compile
LOAD_PATIENCE_S = 20.0


def _compile_command() -> tuple[str, ...]:
    return (sys.executable, "-c", "from rnnstream.service.coldstart import compile_in_child; "
            f"compile_in_child({os.getpid()})")


def kernel_cache() -> tuple[pathlib.Path, bool]:
    """Where numba caches the compiled kernels, and whether anything is cached there yet."""
    override = os.environ.get("NUMBA_CACHE_DIR")
    spec = importlib.util.find_spec("rnnstream.kernels")
    root = (pathlib.Path(override) if override
            else pathlib.Path(next(iter(spec.submodule_search_locations))) / "__pycache__")
    return root, root.is_dir() and next(root.rglob("*.nbi"), None) is not None


async def in_daemon_thread(fn):
    """``await`` fn() run in a daemon thread: a process that is told to stop meanwhile does not
    wait for it (a compile cannot be interrupted)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def run() -> None:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the loop, raised there
            # e=e: Python unbinds ``e`` when the except block ends, before the loop runs this
            loop.call_soon_threadsafe(lambda e=e: done.done() or done.set_exception(e))
        else:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))

    threading.Thread(target=run, name="kernel-warm-up", daemon=True).start()
    return await asyncio.shield(done)


async def _reporting(awaitable, what: str, every_s: float):
    """``await`` it, logging ``still <what> (N s so far)...`` every ``every_s`` seconds."""
    task = asyncio.ensure_future(awaitable)
    started = time.monotonic()
    while True:
        # asyncio.wait, not wait_for: Python 3.11's wait_for turns a cancel (Ctrl-C) that lands
        # with its timeout into a TimeoutError, and the start-up would go on compiling
        done, _ = await asyncio.wait({task}, timeout=every_s)
        if done:
            return task.result()
        log.info("still %s (%.0f s so far)...", what, time.monotonic() - started)


async def load_before_serving(report_every_s: float = 15.0) -> float:
    """Load the compiled kernels (or compile them, in this process) before anything is served.
    Returns the seconds it took."""
    cache, warm = kernel_cache()
    if warm:
        log.info("loading the compiled kernels from numba's cache in %s (a few seconds)", cache)
    else:
        log.info("compiling the kernels with numba: %s cells; %s rules; the optimizers (only "
                 "after an install or a kernel change: about 2-4 minutes on 2 cores; cached in %s "
                 "for later starts; Ctrl-C stops it)", ", ".join(CELLS), ", ".join(RULES), cache)
    return await _reporting(in_daemon_thread(warm_up), ("loading" if warm else "compiling") + " the kernels",
                            report_every_s)


def compile_in_child(server_pid: int) -> None:
    """The child's work: compile every kernel into numba's cache (``warm_up``). It ends itself
    if the server goes away (even kill -9): its parent is then no longer ``server_pid``."""
    def watch() -> None:
        while os.getppid() == server_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    warm_up()


async def start_kernels(cold_start: str, on_switch=lambda interpreted: None,
                        load_patience_s: float = LOAD_PATIENCE_S) -> "BackgroundCompile | None":
    """Before serving: load the compiled kernels, or (``cold_start`` "interpret") arrange to serve
    interpreted meanwhile. Returns the BackgroundCompile to run once serving, or None when the
    compiled kernels are loaded already."""
    cache, warm = kernel_cache()
    if not warm and cold_start == "interpret":
        background = BackgroundCompile(on_switch)
        background.begin(f"numba's cache in {cache} holds no compiled kernels (a fresh install or changed "
                         "kernels)", "while a child process compiles them (about 2-4 minutes on 2 cores, "
                         "once: later starts load them in seconds)")
        return background
    loading = asyncio.ensure_future(load_before_serving())
    if cold_start == "interpret":
        # a cache that takes long to load is being recompiled (built on another CPU, or partial)
        await asyncio.wait({loading}, timeout=load_patience_s)
        if not loading.done():
            background = BackgroundCompile(on_switch, loading=loading)
            background.begin(f"loading the kernels from {cache} has taken over {load_patience_s:.0f} s, so numba "
                             "is compiling them (a cache built on another CPU, or a partial one)",
                             "until that is done")
            return background
    log.info("kernels loaded in %.2f s", await loading)
    return None


class BackgroundCompile:
    """Serve with the interpreted kernels now; compile in a child process (or finish ``loading``,
    a load that turned into a compile in this process); switch when loaded."""

    def __init__(self, on_switch=lambda interpreted: None, report_every_s: float = 30.0, loading=None):
        self.on_switch = on_switch
        self.report_every_s = report_every_s
        self.loading = loading
        self.process: asyncio.subprocess.Process | None = None
        self.seconds: float | None = None  # from start to compiled, once switched

    def begin(self, why: str, until: str) -> None:
        """Calls from now on run interpreted (call before serving)."""
        kernel_tier.use_interpreted()
        self.on_switch(True)
        log.info("%s: serving now with the kernels run by the interpreter (slower; results equal to float32 "
                 "rounding) %s; --cold-start wait serves only once compiled", why, until)

    async def run(self) -> None:
        """The compile, then loading its result here, then the switch."""
        started = time.monotonic()
        try:
            loaded_in = await (self.loading if self.loading is not None else self._compile_in_child())
        except asyncio.CancelledError:
            self.stop()
            raise
        kernel_tier.use_compiled()
        self.on_switch(False)
        self.seconds = time.monotonic() - started
        log.info("compiled kernels ready %.0f s after the start (loaded in %.1f s); chunks run compiled "
                 "from now on", self.seconds, loaded_in)

    async def _compile_in_child(self) -> float:
        """A child process compiles into numba's cache; this process then loads from it."""
        self.process = await asyncio.create_subprocess_exec(
            *_compile_command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, close_fds=False)  # posix_spawn, no fork: gRPC's threads run
        _, err = await _reporting(self.process.communicate(), "compiling the kernels in the background",
                                  self.report_every_s)
        if self.process.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            log.warning("the kernel compile process failed (exit %s: %s); compiling in this process "
                        "instead, still serving interpreted meanwhile", self.process.returncode,
                        " / ".join(tail) or "no output")
        return await in_daemon_thread(warm_up)

    def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
