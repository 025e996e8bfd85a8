"""The CLI's progress bar: tqdm when installed, otherwise one plain line redrawn on stderr."""
from __future__ import annotations

import sys
import time


class _Plain:
    """Steps, steps/s and the postfix on one line, redrawn at most twice a second."""

    def __init__(self, desc: str, stream=sys.stderr):
        self.desc, self.stream = desc, stream
        self.n, self.postfix = 0, ""
        self._start = self._last = time.monotonic()

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= 0.5:
            self._last = now
            self._draw(now)

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text

    def _draw(self, now: float) -> None:
        rate = self.n / max(now - self._start, 1e-9)
        self.stream.write(f"\r{self.desc}: {self.n} steps [{rate:,.0f} steps/s] {self.postfix}   ")
        self.stream.flush()

    def close(self) -> None:
        self._draw(time.monotonic())
        self.stream.write("\n")


class _Off:
    n = 0

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(desc: str, enabled: bool = True, total: int | None = None):
    """A bar counting steps; ``set_postfix_str`` shows the running loss beside the rate."""
    if not enabled:
        return _Off()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Plain(desc)
    return tqdm(desc=desc, total=total, unit="step", unit_scale=True, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)
