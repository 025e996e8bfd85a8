"""Engine calls off the event loop: a shared pool of worker threads, one model's calls in order.

The kernels release the GIL, so engine calls of different models run in parallel on the
pool while the event loop keeps reading requests, answering health checks and accepting
calls. Each model has a :class:`SerialEngine`: its calls run one at a time, in the order they
were made, so an engine never sees two calls at once and a snapshot is never torn.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools


class WorkerPool:
    """The threads every model's engine calls run on."""

    def __init__(self, workers: int):
        self.workers = workers
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


class SerialEngine:
    """One model's engine calls, strictly one after another in the order they were made, on
    the shared pool.

    ``submit`` enqueues at once (so a call made later can never run earlier, even from
    synchronous code); ``await call(...)`` waits for the result. A call runs to its end even
    when its caller is cancelled: the next call never overlaps it.
    """

    def __init__(self, pool: WorkerPool):
        self.pool = pool
        self._queue: collections.deque = collections.deque()
        self._running = False

    def busy(self) -> bool:
        return self._running or bool(self._queue)

    def submit(self, fn, *args, **kwargs) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((functools.partial(fn, *args, **kwargs), future))
        if not self._running:
            self._next(loop)
        return future

    async def call(self, fn, *args, **kwargs):
        return await asyncio.shield(self.submit(fn, *args, **kwargs))

    def _next(self, loop) -> None:
        if not self._queue:
            self._running = False
            return
        self._running = True
        work, future = self._queue.popleft()
        done = self.pool.executor.submit(work)
        done.add_done_callback(lambda d: loop.call_soon_threadsafe(self._done, loop, d, future))

    def _done(self, loop, done: concurrent.futures.Future, future: asyncio.Future) -> None:
        if not future.done():
            exc = done.exception()
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(done.result())
        self._next(loop)
