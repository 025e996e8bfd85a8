"""The byte context-mixing model in plain Python (ints for the hashes, floats for the rest),
one stream, one byte at a time: the oracle for ``kernels.context``. The
constants are read from the kernel module; the algorithm is written out again here."""
import math

import numpy as np

M64 = (1 << 64) - 1


def hash2(a, b):
    h = ((a * 0x9E3779B97F4A7C15) & M64) ^ ((b + 0x632BE59BD9B4E019) & M64)
    h ^= h >> 29
    h = (h * 0xBF58476D1CE4E5B9) & M64
    h ^= h >> 32
    return h


def squash(x):
    x = min(max(x, -30.0), 30.0)
    return 1.0 / (1.0 + math.exp(-x))


def stretch(p):
    return math.log(p / (1.0 - p))


class ContextReference:
    def __init__(self, ck, table_bits, history_bits, match_bits, vocab=256):
        self.orders, self.nin = ck.ORDERS, ck.NIN
        self.match_min, self.limit, self.lr = ck.MATCH_MIN, ck.COUNT_LIMIT, ck.MIX_LR
        self.table = {}  # slot -> (p16, check, count)
        self.mask = (1 << table_bits) - 1
        self.H, self.M = 1 << history_bits, 1 << match_bits
        self.w = [[np.float32(ck.INITIAL_WEIGHT)] * self.nin for _ in range(256)]
        self.bytes = []               # every byte so far (the ring is long enough in tests)
        self.last_seen = {}
        self.mptr = self.mlen = 0
        self.vocab = vocab
        self.dist = None

    def contexts(self):
        out, pos = [], len(self.bytes)
        for k in self.orders:
            h = k + 1
            for j in range(1, k + 1):
                h = hash2(h, self.bytes[pos - j] + 1 if pos - j >= 0 else 0)
            out.append(h)
        return out

    def inputs(self, ctx, node):
        x, slots = [], []
        for c in ctx:
            h = hash2(c, node)
            s, chk = h & self.mask, (h >> 56) & 0xFF
            p16, check, count = self.table.get(s, (0, 0, 0))
            slots.append((s, chk))
            x.append(stretch((p16 + 0.5) / 65536.0) if check == chk and count > 0 else 0.0)
        s = hash2(0, node) & self.mask
        p16, check, count = self.table.get(s, (0, 0, 0))
        slots.append((s, None))  # order 0: no check (one slot per node)
        x.append(stretch((p16 + 0.5) / 65536.0) if count > 0 else 0.0)
        m = 0.0
        if self.mlen > 0:
            expected = self.bytes[self.mptr]
            depth = node.bit_length() - 1
            if (expected | 256) >> (8 - depth) == node:
                conf = min(self.mlen, 32) / 4.0
                m = conf if (expected >> (7 - depth)) & 1 else -conf
        x += [m, 0.25]
        return x, slots

    def p_one(self, node, x):
        return squash(sum(float(self.w[node][i]) * x[i] for i in range(self.nin)))

    def update(self, s, chk, bit):
        """Slot s learns the bit; a slot holding another context (or nothing) starts afresh.
        Read when it learns, as a slot two orders share in one node has learned once."""
        p16, check, count = self.table.get(s, (0, 0, 0))
        if chk is None:
            chk = check
        fresh = check != chk or count == 0
        p, c = (32768.0, 0) if fresh else (float(p16), count)
        p += ((65535.0 if bit else 0.0) - p) / (c + 1.5)
        c = min(c + 1, self.limit) if c < self.limit else c
        self.table[s] = (min(max(int(p), 1), 65534), chk, c)

    def step(self, byte, learn=True):
        """Returns the loss of the previous distribution on ``byte`` (None at the first byte)
        and the distribution over the next byte."""
        loss = None
        if self.dist is not None:
            loss = -math.log(max(self.dist[byte], 1e-300))
            if learn:
                ctx, node = self.contexts(), 1
                for d in range(8):
                    bit = (byte >> (7 - d)) & 1
                    x, slots = self.inputs(ctx, node)
                    err = bit - self.p_one(node, x)
                    for i in range(self.nin):
                        self.w[node][i] = np.float32(float(self.w[node][i]) + self.lr * err * x[i])
                    for s, chk in slots:
                        self.update(s, chk, bit)
                    node = 2 * node + bit
        if self.mlen > 0 and self.bytes[self.mptr] == byte:
            self.mlen += 1
            self.mptr += 1
        else:
            self.mlen = 0
        self.bytes.append(byte)
        pos = len(self.bytes)
        if pos >= self.match_min:
            h = 7
            for j in range(1, self.match_min + 1):
                h = hash2(h, self.bytes[pos - j])
            k = h % self.M
            if self.mlen == 0 and self.last_seen.get(k, 0) > 0:
                self.mptr, self.mlen = self.last_seen[k], 1
            self.last_seen[k] = pos
        ctx = self.contexts()
        p1 = [0.0] * 256
        for node in range(1, 256):
            x, _ = self.inputs(ctx, node)
            p1[node] = min(max(self.p_one(node, x), 1.0 / 4096), 1.0 - 1.0 / 4096)
        dist = []
        for b in range(256):
            q = 0.0
            if b < self.vocab:
                q, node = 1.0, 1
                for d in range(8):
                    bit = (b >> (7 - d)) & 1
                    q *= p1[node] if bit else 1.0 - p1[node]
                    node = 2 * node + bit
            dist.append(q)
        total = sum(dist)
        self.dist = [q / total for q in dist]
        return loss, self.dist
