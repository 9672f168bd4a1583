"""The C allocator of a fitting process: freed buffers are kept for reuse, not handed back to the kernel.

glibc's malloc (``man 3 mallopt``) serves a block above its mmap threshold with a fresh ``mmap``
and unmaps it again on ``free``; the threshold adapts to the blocks freed but never beyond 32 MiB
on 64-bit Linux, and the top of the heap is returned to the kernel beyond the trim threshold. A
scan fit allocates and frees buffers of megabytes in every model evaluation (XLA's temporaries,
the polar images of a batch), so with the defaults every one of them comes back as new zeroed
pages from the kernel: about 3,200 page faults per frame and 12-14 % of a fit's CPU time spent in
the kernel (one 8 x 8 tile of the 31 x 31 twin, 2 cores; 34 % over the whole 121 x 121 run on a
two-worker cluster). With an mmap threshold of 64 MiB and a trim threshold of 256 MiB the same
tile faults 30 times less, spends under 1 CPU-s in the kernel instead of 3, and takes 16-25 %
less wall time, for about 75 MB more resident memory (docs/performance.md, "The allocator").

`tune_allocator` sets both once per process (`fits.scan.setup.FitSetup.build` calls it, so a fit in
this process or on a dask worker gets it). A value the user chose with glibc's own environment
variables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``) is left as it is, and
``XMODEL_MALLOC_TUNING=0`` leaves the allocator alone. Elsewhere than glibc (macOS, Windows,
musl) nothing is changed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import threading

log = logging.getLogger(__name__)

#: blocks up to this size (bytes) come from the heap and are reused after ``free``
MMAP_THRESHOLD = 64 << 20
#: free memory at the heap's top kept for reuse up to this size (bytes)
TRIM_THRESHOLD = 256 << 20
#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the glibc environment variable that overrides each parameter
_ENVIRONMENT = {"mmap_threshold": "MALLOC_MMAP_THRESHOLD_", "trim_threshold": "MALLOC_TRIM_THRESHOLD_"}

_lock = threading.Lock()
_applied: dict[str, int] | None = None


def tune_allocator() -> dict[str, int]:
    """Raise glibc's mmap and trim thresholds for this process (once; later calls return the first result).

    Returns
    -------
    dict
        The parameters set, ``{"mmap_threshold": bytes, "trim_threshold": bytes}``, without those
        the user set through glibc's environment variables; empty when nothing was changed (not
        glibc, ``XMODEL_MALLOC_TUNING=0``, or ``mallopt`` refused).
    """
    global _applied
    with _lock:
        if _applied is not None:
            return dict(_applied)
        _applied = {}
        if os.environ.get("XMODEL_MALLOC_TUNING", "").strip() == "0":
            log.debug("XMODEL_MALLOC_TUNING=0: the C allocator is left at its settings")
            return {}
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return {}
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError as err:
            log.debug("the C library could not be loaded (%s): the allocator is left at its settings", err)
            return {}
        wanted = {"mmap_threshold": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                  "trim_threshold": (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)}
        for name, (param, value) in wanted.items():
            if os.environ.get(_ENVIRONMENT[name]):
                continue            # the user's own choice
            if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
                _applied[name] = value
            else:
                log.debug("mallopt(%s = %d) refused: left at glibc's setting", name, value)
        if _applied:
            log.debug("C allocator: %s", ", ".join(f"{k} {v >> 20} MiB" for k, v in _applied.items()))
        return dict(_applied)
