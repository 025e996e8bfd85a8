"""The CLI's progress bar: tqdm on stderr, steps with steps/s and the running loss."""
from __future__ import annotations

import sys

from tqdm import tqdm


class _Off:
    n = 0

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


class _OnFirstNews:
    """A tqdm bar drawn from the first step or message on, so that a file refused before any
    step prints its error alone (no "0 steps" bar in front of it)."""

    def __init__(self, **tqdm_args):
        self._args, self._bar = tqdm_args, None

    @property
    def n(self) -> int:
        return self._bar.n if self._bar is not None else 0

    def _drawn(self) -> tqdm:
        if self._bar is None:
            self._bar = tqdm(**self._args)
        return self._bar

    def update(self, n: int) -> None:
        self._drawn().update(n)

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self._drawn().set_postfix_str(text, refresh=refresh)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_bar(desc: str, enabled: bool = True, total: int | None = None, stream=None):
    """A bar counting steps; ``set_postfix_str`` shows the running loss (or a reconnect)."""
    if not enabled:
        return _Off()
    return _OnFirstNews(desc=desc, total=total, unit=" steps", file=stream or sys.stderr,
                        dynamic_ncols=True, mininterval=0.5)
