"""Keep numba's on-disk cache honest.

numba keys a cached function on its own file's time stamp only, so after an edit (or an
upgrade) of a callee in another file a caller would keep running the old machine code. At
import we compare one digest of every kernel source with the one the cache was built from,
and drop the cached code when they differ.
"""
import hashlib
import pathlib

_ROOT = pathlib.Path(__file__).resolve().parent
_STAMP = "kernels-source.sha256"


def drop_stale_cache() -> None:
    sources = sorted(_ROOT.rglob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    stamp = _ROOT / "__pycache__" / _STAMP
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        for cached in _ROOT.rglob("__pycache__/*.nb[ic]"):
            cached.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: numba will not cache there either
        pass
