"""A character-level LSTM learning online from a real text, scored as a compressor.

The text is the English help of the Python language that ships with CPython
(``pydoc_data.topics``: "The assert statement", "Binary arithmetic operations", ...). It is
streamed once, byte by byte, through the SDK into an LSTM in next-input mode: each byte is
predicted before it is seen, then learned from. The sum of ``-log2 p(byte)`` over the stream
is the exact length an arithmetic coder driven by the model would need, so bits per
character compare directly with gzip, bz2 and lzma compressing the same text.

    python examples/char_stream.py --spawn              # or --address HOST:PORT
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import lzma
import math
import sys
import time
import uuid

import numpy as np

from _common import server_address, server_flags
from rnnstream.clients import Client
from rnnstream.clients.datafiles import decode, encode
from rnnstream.clients.sampling import generate


def load_text() -> str:
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def compressed_bits_per_char(data: bytes, chars: int) -> dict[str, float]:
    return {"gzip -9": 8 * len(gzip.compress(data, 9)) / chars,
            "bz2 -9": 8 * len(bz2.compress(data, 9)) / chars,
            "lzma -9e": 8 * len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) / chars}


def run(address: str, *, limit: int | None = None, chunk: int = 256, hidden: int = 128, embed: int = 32,
        k: int = 32, lr: float = 0.003, sample_length: int = 300, seed: int = 0, progress: bool = False) -> dict:
    text = load_text()
    if limit:
        text = text[:limit]
    data = text.encode("utf-8")
    tokens = encode(data, "bytes", 256)
    name = f"pydoc-chars-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with Client(address) as client:
        client.create_model(name=name, cell="lstm", hidden_sizes=[hidden], vocab_size=256, input_size=embed,
                            num_classes=256, target_mode="next_input", algorithm="tbptt", tbptt_k1=k,
                            tbptt_k2=k, optimizer="adam", lr=lr, clip_norm=5.0, seed=seed)
        try:
            losses = []
            with client.stream(name, "pydoc") as session:
                for i, r in enumerate(session.pipeline(tokens[j:j + chunk] for j in range(0, len(tokens), chunk))):
                    losses.append(r.losses)
                    if progress and i % 50 == 0:
                        done = sum(map(len, losses))
                        sys.stderr.write(f"\r{done}/{len(tokens)} bytes, {done / (time.monotonic() - started):,.0f}"
                                         f" bytes/s, running loss {r.stats.running_loss:.3f} nats ")
            if progress:
                sys.stderr.write("\n")
            elapsed = time.monotonic() - started
            prime = "The \"for\" statement"
            sample = decode(generate(client, name, encode(prime, "bytes", 256), sample_length,
                                     temperature=0.7, top_k=20, seed=seed), "bytes")
        finally:
            client.delete_model(name)
    nats = np.concatenate(losses)
    # The first byte has no prediction before it (NaN): code it with 8 bits, as a raw byte.
    bits = float(np.nansum(nats)) / math.log(2) + 8.0 * int(np.isnan(nats).sum())
    tail = nats[-max(1, len(nats) // 10):]
    return {"chars": len(text), "bytes": len(data), "seconds": elapsed, "steps_per_s": len(data) / elapsed,
            "model_bits_per_char": bits / len(text),
            "last_tenth_bits_per_char": float(np.nanmean(tail)) / math.log(2) * len(data) / len(text),
            "compressors": compressed_bits_per_char(data, len(text)),
            "prime": prime, "sample": sample}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    server_flags(p)
    p.add_argument("--limit", type=int, help="use only the first N characters")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--sample-length", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with server_address(args) as address:
        r = run(address, limit=args.limit, hidden=args.hidden, lr=args.lr, sample_length=args.sample_length,
                seed=args.seed, progress=True)
    print(f"pydoc_data.topics: {r['chars']:,} characters ({r['bytes']:,} UTF-8 bytes), one online pass "
          f"in {r['seconds']:.0f}s ({r['steps_per_s']:,.0f} steps/s)")
    print(f"  {'LSTM, online (whole stream)':30} {r['model_bits_per_char']:.3f} bits/char")
    print(f"  {'LSTM, online (last tenth)':30} {r['last_tenth_bits_per_char']:.3f} bits/char")
    for name, bpc in r["compressors"].items():
        print(f"  {name:30} {bpc:.3f} bits/char")
    print("sample (temperature 0.7, top-k 20):")
    print(r["prime"] + r["sample"])
    return r


if __name__ == "__main__":
    main(sys.argv[1:])
