"""Micro-batching: chunks of different streams of one model run as one engine call.

Each model has one worker coroutine (on the event loop; the engine call itself runs on a
worker thread through the model's SerialEngine; with ``--inline-below-s`` > 0, a batch expected
to take less than that runs on the loop, saving the hand-off). It takes the oldest queued chunk and, when chunks of
other streams are queued too, waits up to ``batch_window_s`` for more streams (never when
it is alone, and no longer once every attached stream has a chunk queued). One engine call
takes at most one chunk per stream, so a stream's chunks apply strictly in arrival order;
a chunk whose seq is already acknowledged is answered as a duplicate and not applied.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import grpc
import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.service.errors import ServiceError
from rnnstream.service.session import Chunk, StreamLedger, stats_proto

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Job:
    session: StreamLedger
    chunk: Chunk
    future: asyncio.Future | None
    response: pb.StreamResponse | None = None


def submit(host, session: StreamLedger, chunk: Chunk) -> asyncio.Future:
    """A validated chunk: a future of its StreamResponse, answered by the model's worker."""
    if not session.pending:
        host.queued_streams += 1
    session.pending += 1
    session.touch()
    future = asyncio.get_running_loop().create_future()
    host.queue.append(Job(session, chunk, future))
    host.wake.set()
    return future


def error_response(model: str, stream_id: str, seq: int, error: ServiceError, session=None) -> pb.StreamResponse:
    resp = pb.StreamResponse(model=model, stream_id=stream_id, seq=seq, error=error.to_status())
    if session is not None:
        resp.acked_seq, resp.durable_seq = session.acked_seq, session.durable_seq
    return resp


def fail_queued(host, error: ServiceError) -> None:
    while host.queue:
        _finish(host, host.queue.popleft(), error_response(host.name, "", 0, error))


def _finish(host, job: Job, resp: pb.StreamResponse) -> None:
    job.session.pending -= 1
    if not job.session.pending:
        host.queued_streams -= 1
    if not resp.stream_id:
        resp.stream_id = job.session.stream_id
        resp.seq = job.chunk.seq
    resp.durable_seq = job.session.durable_seq
    job.response = resp
    if job.future is not None and not job.future.done():
        job.future.set_result(resp)


async def run(host, registry) -> None:
    """The worker of one model, until the model is deleted."""
    config = registry.config
    while not host.closed:
        if not host.queue:
            host.wake.clear()
            await host.wake.wait()
            continue
        if host.attached_streams() > 1:
            await asyncio.sleep(0)  # let reads that have already arrived queue their chunks
            await _gather(host, config)
        jobs = _take(host, config.max_batch_streams)
        if not jobs:
            continue
        host.busy = True
        try:
            if _cheap(host, jobs, config.inline_below_s):
                answered, refused = _execute(host, jobs, registry.metrics)
            else:  # on a worker thread: the loop keeps reading, answering and accepting meanwhile
                answered, refused = await host.serial.call(_execute, host, jobs, registry.metrics)
            await _commit(host, registry, answered)
        except Exception as exc:  # a bug, not bad input: answer every job rather than leave it hanging
            log.exception("batch of model %s failed", host.name)
            answered, refused = [], [(job, error_response(host.name, job.session.stream_id, job.chunk.seq,
                                                          ServiceError(grpc.StatusCode.INTERNAL, f"engine failure: {exc}"),
                                                          job.session)) for job in jobs]
        finally:
            host.busy = False
        for job, resp in refused:
            if (resp.error.code in _RESEND_CODES and not job.session.resend_from
                    and job.session.attached):  # a Stream call's client replays in order
                # the client resends this chunk: a later one must not be applied before it
                job.session.resend_from = job.chunk.seq
        for job, resp in refused + answered:
            _finish(host, job, resp)


def _cheap(host, jobs: list[Job], inline_below_s: float) -> bool:
    """Whether ``jobs`` may run on the loop (``--inline-below-s``; off by default): handing a
    batch to a worker thread and back (two thread wake-ups, the GIL changing hands) costs more
    than a 1-step chunk of a small model. Expected time = the model's measured time per
    stream-step x the batch's steps; a model's first batch always goes to a worker. Only when
    nothing of the model is running or
    queued on its worker (calls stay in order), at most one Stream call feeds the model (with
    more, the loop has their reads to do while a worker runs the kernel: 256 streams of 1-step
    chunks lost a sixth of their rate inline), and no forecast or labels, whose cost the
    per-step time does not cover."""
    per_step = host.seconds_per_step
    if inline_below_s <= 0 or per_step is None or host.serial.busy() or host.attached_streams() > 1:
        return False
    steps = 0
    for job in jobs:
        if job.chunk.horizon or job.chunk.labels is not None:
            return False
        steps += job.chunk.steps
    return per_step * max(steps, 1) < inline_below_s


async def _commit(host, registry, answered) -> None:
    """``--durability=every-chunk``: commit before acknowledging."""
    if registry.config.durability != "every-chunk" or not answered:
        return
    try:
        await registry.checkpoint([host], [job.session for job, _ in answered])
    except Exception:  # applied, but not durable: say so rather than acknowledge
        log.exception("checkpoint before acknowledging failed")
        err = ServiceError(grpc.StatusCode.UNAVAILABLE, "applied but not committed; reconnect and replay "
                           "from durable_seq").to_status()
        for _, resp in answered:
            resp.error.CopyFrom(err)


async def _gather(host, config) -> None:
    """Wait up to the window for chunks of more streams, only while others are queued."""
    window = config.batch_window_s
    if window <= 0:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window
    while True:
        queued = host.queued_streams  # nothing of this model runs now: these are all queued
        if queued <= 1 or queued >= min(config.max_batch_streams, host.attached_streams()):
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        host.wake.clear()
        try:
            await asyncio.wait_for(host.wake.wait(), remaining)
        except TimeoutError:
            return


# refusals a client retries (clients.errors): the chunk comes again, so later ones must wait
_RESEND_CODES = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.ABORTED.value[0],
                 grpc.StatusCode.INTERNAL.value[0], grpc.StatusCode.UNKNOWN.value[0]}


def _take(host, limit: int) -> list[Job]:
    """The first queued chunk of each stream that agrees with the oldest chunk's kind."""
    taken, seen, keep = [], set(), []
    kind = None
    while host.queue:
        job = host.queue.popleft()
        session = job.session
        if id(session) in seen or len(taken) >= limit:
            keep.append(job)
            seen.add(id(session))
            continue
        if job.chunk.seq <= session.acked_seq:
            resp = pb.StreamResponse(model=host.name, stream_id=session.stream_id, seq=job.chunk.seq,
                                     acked_seq=session.acked_seq, durable_seq=session.durable_seq, duplicate=True)
            _finish(host, job, resp)
            continue
        if session.resend_from:
            if job.chunk.seq > session.resend_from:
                _finish(host, job, error_response(host.name, session.stream_id, job.chunk.seq, ServiceError(
                    grpc.StatusCode.ABORTED, f"chunk {session.resend_from} of this stream was refused "
                    "for a passing reason and must come first: resend from it (this one was not applied)"),
                    session))
                continue
            session.resend_from = 0  # the refused chunk (or an earlier one) is back
        if host.sessions.get(session.stream_id) is not session:
            _finish(host, job, error_response(host.name, session.stream_id, job.chunk.seq, ServiceError(
                grpc.StatusCode.ABORTED, "the stream was closed while this chunk was queued; resend it")))
            continue
        seen.add(id(session))
        if kind is None:
            kind = job.chunk.kind
        if job.chunk.kind != kind:
            keep.append(job)
            continue
        taken.append(job)
    host.queue.extend(keep)
    return taken


def _pad(rows: list, steps: int, tail: tuple, dtype) -> np.ndarray:
    if len(rows) == 1 and len(rows[0]) == steps:  # one chunk: a view, no copy
        return rows[0][None]
    out = np.zeros((len(rows), steps) + tail, dtype=dtype)
    for b, row in enumerate(rows):
        out[b, : len(row)] = row
    return out


def _execute(host, jobs: list[Job], metrics) -> tuple[list, list]:
    """One engine call for ``jobs``, on a worker thread: (applied, refused) as (job, response)
    pairs, answered by the loop (futures are not thread-safe)."""
    t0 = time.perf_counter()
    engine, name = host.engine, host.name
    chunks = [job.chunk for job in jobs]
    steps = [c.steps for c in chunks]
    t_max = max(steps)
    first = chunks[0]
    arrays = {}
    if first.inputs is not None:
        arrays["inputs"] = _pad([c.inputs for c in chunks], t_max, first.inputs.shape[1:], np.float32)
    else:
        arrays["tokens"] = _pad([c.tokens for c in chunks], t_max, (), np.int64)
    if first.targets is not None:
        arrays["targets"] = _pad([c.targets for c in chunks], t_max, first.targets.shape[1:], np.float32)
    if first.target_classes is not None:
        arrays["target_classes"] = _pad([c.target_classes for c in chunks], t_max, (), np.int64)
    lengths = None if min(steps) == t_max else np.asarray(steps, dtype=np.int64)
    if any(c.labels is not None for c in chunks):
        arrays["labels"] = [c.labels for c in chunks]
    if any(c.reset_after for c in chunks):
        arrays["reset_after"] = [c.reset_after for c in chunks]
    try:
        preds, losses = engine.step([job.session.stream_id for job in jobs], learn=first.learn,
                                    lengths=lengths, **arrays)
    except ValueError as exc:
        if len(jobs) > 1:  # find the culprit: the engine left every state unchanged
            answered, refused = [], []
            for job in jobs:
                a, r = _execute(host, [job], metrics)
                answered += a
                refused += r
            return answered, refused
        return [], [_refuse(host, jobs[0], grpc.StatusCode.INVALID_ARGUMENT, str(exc), metrics)]
    except Exception as exc:
        log.exception("engine call failed for model %s", name)
        return [], [_refuse(host, job, grpc.StatusCode.INTERNAL, f"engine failure: {exc}", metrics) for job in jobs]
    _observe(host, jobs, losses)
    if first.learn:
        host.model_dirty = True
    answered = []
    for b, job in enumerate(jobs):
        session, t = job.session, steps[b]
        session.acked_seq = job.chunk.seq
        session.dirty = True
        session.touch()
        stats = engine.stream_stats(session.stream_id)
        resp = pb.StreamResponse(model=name, stream_id=session.stream_id, seq=job.chunk.seq,
                                 acked_seq=session.acked_seq, durable_seq=session.durable_seq,
                                 first_step=stats["steps"] - t, stats=stats_proto(stats))
        resp.predictions.extend(preds[b, :t].ravel().tolist())
        resp.losses.extend(losses[b, :t].tolist())
        if job.chunk.horizon:
            try:
                resp.forecast.extend(engine.forecast(session.stream_id, job.chunk.horizon).ravel().tolist())
            except Exception:  # the chunk is applied; a lost forecast must not hide that
                log.exception("forecast failed for model %s", name)
        answered.append((job, resp))
    _restart_poisoned(host, jobs, preds, steps)  # after the answers: they report the chunk as it ran
    per_step = (time.perf_counter() - t0) / max(sum(steps), 1)
    last = host.seconds_per_step  # an average over the last few batches, quick to follow a change
    host.seconds_per_step = per_step if last is None else 0.7 * last + 0.3 * per_step
    return answered, []


def _restart_poisoned(host, jobs: list[Job], preds: np.ndarray, steps: list[int]) -> None:
    """A forward that overflowed (inf - inf inside a cell: huge but admissible weights, a
    Jordan layer's fed-back prediction) leaves NaN in the stream's state, and every later
    prediction of that stream would be NaN. Such a stream restarts from a zero state (its
    weights, optimizer state and acked seq kept; its step count and pending labels start
    afresh, as after ResetStream), logged and counted. The check reads the
    state only when a prediction is not finite, so it costs nothing on healthy traffic."""
    engine = host.engine
    if len(set(steps)) == 1 and np.isfinite(preds).all():  # no padding: one check for all
        return
    for b, job in enumerate(jobs):
        if np.isfinite(preds[b, :steps[b]]).all():
            continue
        sid = job.session.stream_id
        state = engine.snapshot_stream(sid)
        if all(np.isfinite(a).all() for a in state.values() if np.asarray(a).dtype.kind == "f"):
            continue
        engine.reset_stream(sid)
        host.metrics.poisoned_restarts.inc()
        log.warning("model %s, stream %r: the forward went non-finite; the stream restarts from a zero state",
                    host.name, sid)


def _refuse(host, job: Job, code: grpc.StatusCode, message: str, metrics) -> tuple[Job, pb.StreamResponse]:
    metrics.chunk_errors.labels(host.name, code.name).inc()
    return job, error_response(host.name, job.session.stream_id, job.chunk.seq, ServiceError(code, message),
                               job.session)


def _observe(host, jobs: list[Job], losses: np.ndarray) -> None:
    m, call = host.metrics, host.engine.last_call
    host.steps += int(call.steps)
    host.updates += int(call.updates)
    m.steps.inc(call.steps)
    if call.updates:
        m.updates.inc(call.updates)
    for reason, count in call.skipped.items():
        if count:
            m.skipped(reason).inc(count)
    if call.clipped:
        m.gradient_clipped.inc(call.clipped)
    if len(call.gradient_norms):
        m.gradient_norm.observe_many(call.gradient_norms)
    m.loss.observe_many(losses.ravel())
    m.observe_members(call)
    for label_losses in host.engine.last_call.label_losses:
        m.loss.observe_many(label_losses)
    if call.steps:
        m.step_seconds.observe(call.seconds / call.steps)
    m.batch_streams.observe(len(jobs))
    now = time.monotonic()
    if host.spec.sharing == "shared" and now - host.weight_norm_at > 1.0:  # a norm over P values: not per call
        host.weight_norm_at = now
        m.weight_norm.set(host.engine.weight_norm())
