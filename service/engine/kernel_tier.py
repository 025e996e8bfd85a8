"""Which build of the kernels the engine calls: numba's compiled kernels, or, on a cold numba
cache while those compile, the same kernels run by the interpreter (``kernels/interpreted.py``).

The server switches to the interpreted build when it starts with nothing compiled, so that it
answers at once, and back for good once the compiled kernels are loaded (``service/coldstart.py``,
"Cold start" in README.md). Every kernel call reads ``active()``; both builds take and write the
same arrays, so a switch between two calls is safe.
"""
from __future__ import annotations

import contextlib
import threading

import rnnstream.kernels as _compiled
from rnnstream.kernels import chunk, context, interpreted, narx, normalize  # noqa: F401 - their attributes

COMPILED = _compiled
_active = COMPILED


class _ThisThread(threading.local):
    build = None  # a class default: no per-thread lookup miss on the hot path


_this_thread = _ThisThread()


def active():
    """The kernels package to call now: ``.chunk``, ``.narx``, ``.normalize``, ``.context``."""
    return _this_thread.build or _active


@contextlib.contextmanager
def compiled_in_this_thread():
    """Calls from this thread run compiled whatever the rest do: ``warm_up`` loads (or
    compiles) the compiled kernels while the server still answers interpreted."""
    _this_thread.build = COMPILED
    try:
        yield
    finally:
        _this_thread.build = None


def interpreting() -> bool:
    return _active is not COMPILED


def use_interpreted() -> None:
    """Calls from now on run the interpreted kernels (until ``use_compiled``)."""
    global _active
    _active = interpreted.load()


def use_compiled() -> None:
    global _active
    _active = COMPILED
