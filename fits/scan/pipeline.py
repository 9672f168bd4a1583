"""Batches of a scan fit computed side by side in threads, their results taken in order.

A batch's fit (`fits.scan.frames.fit_frames`) alternates between stages that keep one core busy
(the template search: numpy FFTs and einsums; the linear stage; the mixed test) and the
Levenberg-Marquardt refinement, which runs its frames in ``XMODEL_FIT_THREADS`` threads
(`fits.batch`) and leaves a core idle while the batch's last frame finishes. With two batches in
flight, one batch's single-core stages run beside the other's refinement. numpy's FFTs and
einsums and XLA's compiled programs release the GIL, so the threads share the cores.

Each batch's result depends on its frames only, so the results, and the order they are written
in, are those of one batch at a time. The jobs (reading the polar images) are drawn, and the
results consumed (writing them), in the caller's thread: HDF5 files are only ever touched from
there.
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

J = TypeVar("J")
R = TypeVar("R")


def in_order(fn: Callable[[J], R], jobs: Iterable[J], in_flight: int = 2) -> Iterator[tuple[J, R]]:
    """``(job, fn(job))`` for every job, in the order of ``jobs``, up to ``in_flight`` computed at once.

    Parameters
    ----------
    fn : the work of one job (run in a worker thread when ``in_flight > 1``); an exception it
        raises is raised here, when its job's turn comes.
    jobs : drawn lazily in the caller's thread, at most ``in_flight`` ahead of the results.
    in_flight : jobs computed at once; 1 computes each in the caller's thread, one after the other.
        Sized ``jobs`` (a list, a range) cap it at their number: a single job runs in the caller's
        thread.

    Notes
    -----
    Leaving the loop early (``break``, an exception) cancels the jobs not yet started and waits for
    those running, so no thread outlives the call. Where the generator is closed or finalised in
    one of its own worker threads (a job that closes it, or the garbage collector running there),
    that thread cannot wait for itself: the jobs not started are cancelled and the pool's other
    threads end with their job.
    """
    in_flight = int(in_flight)
    if in_flight < 1:
        raise ValueError(f"in_flight = {in_flight}: at least 1 job must be computed at once")
    if isinstance(jobs, Sized):
        in_flight = max(1, min(in_flight, len(jobs)))
    if in_flight == 1:
        for job in jobs:
            yield job, fn(job)
        return
    pending: deque[tuple[J, Future]] = deque()
    prefix = f"xmodel-batch-{next(_POOLS)}"
    pool = ThreadPoolExecutor(in_flight, thread_name_prefix=prefix)
    try:
        it = iter(jobs)
        for job in it:
            pending.append((job, pool.submit(fn, job)))
            if len(pending) >= in_flight:
                break
        while pending:
            job, fut = pending.popleft()
            result = fut.result()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append((nxt, pool.submit(fn, nxt)))
            yield job, result
    finally:
        own = threading.current_thread().name.startswith(prefix + "_")
        pool.shutdown(wait=not own, cancel_futures=True)


_END = object()
#: numbers the pools of `in_order`, so that a thread knows whether it is one of a pool's own
_POOLS = itertools.count()
