"""Numba kernel of the byte context-mixing member (the service's `context` member).

Bitwise context mixing in the manner of Mahoney's PAQ/lpaq: a byte is coded as 8 binary
decisions down a tree of 255 nodes (node 1 the root, node 2n + bit its children). For every
order k in ORDERS the context (the last k bytes, hashed) and the node select an adaptive bit
probability in a hash table; a match model predicts the byte that followed the last occurrence
of the current MATCH_MIN-byte context; a logistic mixer (weights selected by the node) combines
their stretched probabilities. The engine needs a whole distribution over the next byte, so
every node is evaluated (255 mixes per byte); learning then walks the 8 nodes of the byte that
came. Everything is deterministic (no randomness, integer hashing).

State, all in flat arrays so the stream snapshot carries them as they are:
- ``table`` uint32 [TABLE]: per slot a 16-bit probability (high half), an 8-bit check of the
  hash (bits 8-15) and an 8-bit count (low byte) setting the adaptation rate 1 / (count + 1.5);
- ``weights`` float32 [256, NIN]: mixer weights per node;
- ``history`` uint8 [HISTORY] (ring of the last bytes), ``last_seen`` int32 [MATCH_SLOTS]
  (position after the last occurrence of each hashed MATCH_MIN-byte context);
- ``last_dist`` float64 [256]: the distribution made for the next byte (scored when it comes);
- ``scalars`` int64 [8]: position, match pointer, match length, "has a distribution", step
  count (the context hashes are recomputed from the history).
"""
from __future__ import annotations

import numpy as np
from numba import njit

ORDERS = (1, 2, 3, 4, 6)
NIN = len(ORDERS) + 3        # orders, order 0, match model, bias
MATCH_MIN = 6
COUNT_LIMIT = 60             # the rate floor 1 / (COUNT_LIMIT + 1.5)
MIX_LR = 0.02
INITIAL_WEIGHT = 0.3
STEPS = 4                    # scalars[STEPS]: the stream's step count
_ORD = np.array(ORDERS, dtype=np.int64)


@njit(cache=True, inline="always")
def _stretch(p):
    return np.log(p / (1.0 - p))


@njit(cache=True, inline="always")
def _squash(x):
    if x > 30.0:
        x = 30.0
    elif x < -30.0:
        x = -30.0
    return 1.0 / (1.0 + np.exp(-x))


@njit(cache=True, inline="always")
def _hash(a, b):
    h = (a * np.uint64(0x9E3779B97F4A7C15)) ^ (b + np.uint64(0x632BE59BD9B4E019))
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return h


@njit(cache=True)
def _context_hashes(history, pos, out):
    """out[i] = hash of the last ORDERS[i] bytes before position pos (fewer at the start)."""
    H = history.shape[0]
    for i in range(_ORD.shape[0]):
        h = np.uint64(_ORD[i] + 1)
        for j in range(1, _ORD[i] + 1):
            b = np.uint64(history[(pos - j) % H]) + np.uint64(1) if pos - j >= 0 else np.uint64(0)
            h = _hash(h, b)
        out[i] = h


@njit(cache=True)
def _node_inputs(table, ctx, node, expected, mlen, x, slots):
    """The stretched predictions of every input for one node; slots[i] the table slot of
    order i (-1 when its check does not match: the slot is another context's, read as 0.5)."""
    mask = np.uint64(table.shape[0] - 1)
    n = ctx.shape[0]
    for i in range(n):
        h = _hash(ctx[i], np.uint64(node))
        s = np.int64(h & mask)
        chk = np.uint32((h >> np.uint64(56)) & np.uint64(0xFF))
        e = table[s]
        slots[i] = s
        if (e >> np.uint32(8)) & np.uint32(0xFF) == chk and (e & np.uint32(0xFF)) > 0:
            p = ((e >> np.uint32(16)) + 0.5) / 65536.0
            x[i] = _stretch(p)
        else:
            x[i] = 0.0
    # order 0: the node alone
    h = _hash(np.uint64(0), np.uint64(node))
    s = np.int64(h & mask)
    slots[n] = s
    e = table[s]
    x[n] = _stretch(((e >> np.uint32(16)) + 0.5) / 65536.0) if (e & np.uint32(0xFF)) > 0 else 0.0
    # match model: the expected byte's bit under this node, if the node lies on its path
    x[n + 1] = 0.0
    if expected >= 0:
        depth = 0
        v = node
        while v > 1:
            v >>= 1
            depth += 1
        prefix = (expected | 256) >> (8 - depth)
        if prefix == node:
            bit = (expected >> (7 - depth)) & 1
            conf = min(mlen, 32) / 4.0
            x[n + 1] = conf if bit == 1 else -conf
    x[n + 2] = 0.25


@njit(cache=True)
def _update_slot(table, s, chk, bit, fresh):
    e = table[s]
    if fresh:
        p, c = 32768.0, 0
    else:
        p, c = float(e >> np.uint32(16)), int(e & np.uint32(0xFF))
    target = 65535.0 if bit else 0.0
    p += (target - p) / (c + 1.5)
    if c < COUNT_LIMIT:
        c += 1
    pi = np.uint32(min(max(int(p), 1), 65534))
    table[s] = (pi << np.uint32(16)) | (np.uint32(chk) << np.uint32(8)) | np.uint32(c)


@njit(cache=True)
def run_bytes(tokens, table, weights, history, last_seen, last_dist, scalars, out, losses, vocab,
              learn):
    """Feed ``tokens`` one by one. Before learning byte t the model's distribution for it was
    computed at the previous step; losses[t] = -ln of that probability (NaN when the stream
    had no earlier byte). out[t] = the distribution over the byte after t, renormalised over
    the first ``vocab`` bytes. ``learn`` False: the history moves, no statistic changes."""
    H = history.shape[0]
    M = last_seen.shape[0]
    n_ord = _ORD.shape[0]
    ctx = np.empty(n_ord, np.uint64)
    x = np.empty((256, NIN))
    slots = np.empty((256, n_ord + 1), np.int64)
    p1 = np.empty(256)
    pos, mptr, mlen, has_pred = scalars[0], scalars[1], scalars[2], scalars[3]
    prev = last_dist
    for t in range(tokens.shape[0]):
        byte = tokens[t]
        # --- learn the byte that came (with the inputs of the distribution made for it)
        if has_pred:
            losses[t] = -np.log(max(prev[byte], 1e-300))
        if has_pred and learn:
            _context_hashes(history, pos, ctx)
            expected = np.int64(history[mptr % H]) if mlen > 0 else -1
            node = 1
            for d in range(8):
                bit = (byte >> (7 - d)) & 1
                _node_inputs(table, ctx, node, expected, mlen, x[0], slots[0])
                dot = 0.0
                for i in range(NIN):
                    dot += weights[node, i] * x[0, i]
                p = _squash(dot)
                err = bit - p
                for i in range(NIN):
                    weights[node, i] += MIX_LR * err * x[0, i]
                for i in range(n_ord):
                    h = _hash(ctx[i], np.uint64(node))
                    chk = np.uint32((h >> np.uint64(56)) & np.uint64(0xFF))
                    e = table[slots[0, i]]
                    fresh = ((e >> np.uint32(8)) & np.uint32(0xFF)) != chk or (e & np.uint32(0xFF)) == 0
                    _update_slot(table, slots[0, i], chk, bit, fresh)
                e = table[slots[0, n_ord]]
                _update_slot(table, slots[0, n_ord], (e >> np.uint32(8)) & np.uint32(0xFF), bit,
                             (e & np.uint32(0xFF)) == 0)
                node = 2 * node + bit
        elif not has_pred:
            losses[t] = np.nan
        # --- the match model follows the byte
        if mlen > 0 and np.int64(history[mptr % H]) == byte and pos - mptr < H:
            mlen += 1
            mptr += 1
        else:
            mlen = 0
        history[pos % H] = byte
        pos += 1
        if pos >= MATCH_MIN:
            h = np.uint64(7)
            for j in range(1, MATCH_MIN + 1):
                h = _hash(h, np.uint64(history[(pos - j) % H]))
            k = np.int64(h % np.uint64(M))
            if mlen == 0 and last_seen[k] > 0 and pos - last_seen[k] < H:
                mptr = last_seen[k]
                mlen = 1
            last_seen[k] = pos
        # --- the distribution over the next byte: every node of the tree
        _context_hashes(history, pos, ctx)
        expected = np.int64(history[mptr % H]) if mlen > 0 else -1
        for node in range(1, 256):
            _node_inputs(table, ctx, node, expected, mlen, x[node], slots[node])
            dot = 0.0
            for i in range(NIN):
                dot += weights[node, i] * x[node, i]
            p = _squash(dot)
            p1[node] = min(max(p, 1.0 / 4096), 1.0 - 1.0 / 4096)
        total = 0.0
        for b in range(256):
            q = 0.0
            if b < vocab:
                q = 1.0
                node = 1
                for d in range(8):
                    bit = (b >> (7 - d)) & 1
                    q *= p1[node] if bit else 1.0 - p1[node]
                    node = 2 * node + bit
            prev[b] = q
            total += q
        for b in range(256):
            prev[b] /= total
            out[t, b] = prev[b]
        has_pred = 1
    scalars[0], scalars[1], scalars[2], scalars[3] = pos, mptr, mlen, has_pred
    scalars[STEPS] += tokens.shape[0]
