"""The hash grid's per-corner loops in C, compiled on first use, for the PyTorch backend on CPU.

Why: at a training batch of 4,096 cells the encoding's corner rows, weights, gather and scatter-add
are dozens of small tensor operations whose overhead is most of the encoding's time (10 of a 20 ms
step on the default BDTNP field). ``_csrc/hashgrid.c`` does each of them in one loop, with the
same float32 operations in the same order, so the encoding's values and gradients are bitwise those
of the PyTorch expressions (``tests/test_hashgrid.py`` checks it).

The source is plain C (no Python or torch headers): ``cc -O3 -shared`` builds it in under a second
into a per-user cache (``$NTF_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/ntf_utils`` or
``~/.cache/ntf_utils``), named by the hash of the source and the compiler flags, written atomically
and then loaded with ``ctypes``. Where no C compiler is found or the build fails, the encoding uses
the PyTorch expressions (same numbers, slower) and :func:`native_status` says why. ``NTF_NATIVE=0``
turns the C loops off.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

__all__ = ["corners", "disabled", "interpolate", "native_status", "scatter_add", "usable"]

SOURCE = Path(__file__).with_name("_csrc") / "hashgrid.c"
# no contraction of a * b + c into one fused rounding: the results must be PyTorch's bit for bit
FLAGS = ["-O3", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-std=c99"]

_library = None
_status = "not built yet"
_off = False  # inside disabled()
_executor = None
_executor_pid = None
PARALLEL_MINIMUM = 2048  # points per thread below which one thread does all the work
_lock = threading.Lock()
_int64, _int, _ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p


def native_status() -> str:
    """Whether the C loops are in use (``"loaded <path>"``), or why not."""
    _load()
    return _status


def usable(floats=(), ints=()) -> bool:
    """Whether the C loops can serve these tensors: loaded, on the CPU, ``floats`` float32 and
    ``ints`` int32, outside ``torch.compile`` (which traces the PyTorch expressions instead)."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)()
    if _off or compiling:
        return False
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in floats):
        return False
    if any(t.device.type != "cpu" or t.dtype != torch.int32 for t in ints):
        return False
    return _load() is not None


@contextlib.contextmanager
def disabled():
    """Within the block the hash grid uses its PyTorch expressions (to compare the two, in tests
    and ``benchmarks/bench_train.py``)."""
    global _off
    before, _off = _off, True
    try:
        yield
    finally:
        _off = before


def corners(x, scales, sizes, offsets, strides, primes, n_dense: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, weights)`` ``(n, L, 2**D)`` of :meth:`HashGridEncoding.corner_rows_and_weights`."""
    x = x.contiguous()
    n, dims = x.shape
    levels = scales.shape[0]
    rows = torch.empty(n, levels, 1 << dims, dtype=torch.int32)
    weights = torch.empty(n, levels, 1 << dims, dtype=torch.float32)
    strides, primes = strides.contiguous(), primes.contiguous()
    _in_parallel(n, n, lambda begin, end: _library.ntf_corners(
        _p(x), begin, end, dims, levels, _p(scales), _p(sizes), _p(offsets), _p(strides), _p(primes), n_dense,
        _p(rows), _p(weights)))
    return rows, weights


def interpolate(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(n, L, F)``: each point's corner features of ``table`` ``(rows, F)`` blended by ``weights``."""
    n, levels, n_corners = rows.shape
    out = torch.empty(n, levels, table.shape[1], dtype=torch.float32)
    _in_parallel(n, n, lambda begin, end: _library.ntf_interpolate(
        _p(table), table.shape[1], _p(rows), _p(weights), begin, end, levels, n_corners, _p(out)))
    return out


def scatter_add(target: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, grad_out: torch.Tensor) -> None:
    """``target[rows[..., c]] += weights[..., c] * grad_out`` in place, in ``index_add_``'s order."""
    n, levels, n_corners = rows.shape
    grad_out = grad_out.contiguous()
    # threads take whole levels: their rows are disjoint, and each row's sum keeps its order
    _in_parallel(levels, n, lambda begin, end: _library.ntf_scatter(
        _p(target), target.shape[1], _p(rows), _p(weights), _p(grad_out), n, levels, n_corners, begin, end))


def _in_parallel(total: int, points: int, work) -> None:
    """``work(begin, end)`` over ``range(total)`` split between torch's intra-op threads, each part on its
    own thread (ctypes releases the GIL during the call); on this thread alone below
    :data:`PARALLEL_MINIMUM` ``points`` per thread, where handing work over costs more than it saves."""
    threads = min(torch.get_num_threads(), total, points // PARALLEL_MINIMUM)
    if threads <= 1:
        work(0, total)
        return
    bounds = [total * k // threads for k in range(threads + 1)]
    futures = [_pool(threads).submit(work, begin, end) for begin, end in zip(bounds[1:-1], bounds[2:])]
    work(bounds[0], bounds[1])
    for future in futures:
        future.result()


def _pool(threads: int):
    """A thread pool with at least ``threads - 1`` workers (this thread takes the first part).

    A forked child gets its own: it inherits the parent's pool object but not its threads, and work
    submitted to it would never run."""
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid() or _executor._max_workers < threads - 1:
        from concurrent.futures import ThreadPoolExecutor

        _executor = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="ntf-hashgrid")
        _executor_pid = os.getpid()
    return _executor


def _p(tensor: torch.Tensor) -> int:
    return tensor.data_ptr()


def _load():
    """The loaded library, building it first if needed; None (and :data:`_status` says why) if it cannot be."""
    with _lock:
        return _library if _status != "not built yet" else _load_once()


def _load_once():
    global _library, _status
    if os.environ.get("NTF_NATIVE", "1") == "0":
        _status = "off (NTF_NATIVE=0)"
        return None
    if sys.platform == "win32":
        _status = "not built: the C loops are built on Linux and macOS only"
        return None
    try:
        path = _build()
        library = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        _status = f"not built ({err}); the hash grid uses its PyTorch expressions"
        return None
    library.ntf_corners.argtypes = [_ptr, _int64, _int64, _int, _int, _ptr, _ptr, _ptr, _ptr, _ptr, _int, _ptr, _ptr]
    library.ntf_interpolate.argtypes = [_ptr, _int, _ptr, _ptr, _int64, _int64, _int, _int, _ptr]
    library.ntf_scatter.argtypes = [_ptr, _int, _ptr, _ptr, _ptr, _int64, _int, _int, _int, _int]
    for function in (library.ntf_corners, library.ntf_interpolate, library.ntf_scatter):
        function.restype = None
    _library, _status = library, f"loaded {path}"
    return _library


def _build() -> Path:
    """Compile :data:`SOURCE` into the cache (once per source and flags) and return the library's path."""
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    compiler = shlex.split(os.environ["CC"]) if os.environ.get("CC") else [found] if found else None
    if not compiler:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([*compiler, *FLAGS]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"ntf_hashgrid_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # built beside its final name and renamed: a reader never sees half a library, and two processes
    # building at once each rename a complete one
    handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        done = subprocess.run([*compiler, *FLAGS, str(SOURCE), "-o", partial, "-lm"], capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler[0]} failed: {done.stderr.strip()[:500]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _cache_dir() -> Path:
    if os.environ.get("NTF_NATIVE_CACHE"):
        return Path(os.environ["NTF_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ntf_utils"
