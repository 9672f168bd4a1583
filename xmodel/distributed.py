"""Run a scan's reduction and fit on a dask.distributed cluster: schedulers, spatial tiles, one writer.

A scan is cut into spatial tiles, blocks of ``rows x cols`` points of its scan grid (`plan_tiles`;
contiguous runs of frames when the scan has no grid). Each tile is one task: it reads only its own
frames, reduces or fits them on a worker, and returns the rows. The calling process is the only
writer: it writes each tile's rows into the results file as the tile completes and records which
frames are done, so the file stays consistent and a killed run resumes at the tiles not yet
written (`run_tasks`). Workers must see the scan's files at the same paths (a shared file system).

``scheduler`` is ``"local"`` (a `distributed.LocalCluster` of one single-threaded worker per core),
``"local:N"`` (N workers), ``"local:NxT"`` (N workers of T threads each: the T tasks of a worker
share its model, template bank and compiled programs, so a node needs the memory of one fitting
process per worker, not per core), the address of a running scheduler (``tcp://host:8786``), the path of a
scheduler file (``dask scheduler --scheduler-file FILE``, dask-jobqueue, dask-mpi), or a
`distributed.Client`. dask is optional (``pip install 'xmodel[distributed]'``): nothing here is
imported unless a scheduler is given.

The tile reduction (`reduce_tiles`) lives here; the tile fit with its neighbour passes is
`fits.scan.tiles`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: default tile: 8 x 8 scan points (64 frames; an Eiger 4M tile's polar images are about 46 MB)
DEFAULT_TILE = (8, 8)
#: tasks kept in flight per worker thread (one running, one waiting): bounds the results held in memory
IN_FLIGHT_PER_WORKER = 2
#: task arguments larger than this (bytes) are scattered to the cluster before the task is submitted
SCATTER_BYTES = 1 << 20
#: how the optional dependency is installed (the message of a missing dask)
INSTALL_HINT = "pip install 'xmodel[distributed]'"


def require_distributed():
    """The `distributed` package, or ModuleNotFoundError naming the ``distributed`` extra."""
    try:
        import distributed
    except ImportError as err:
        raise ModuleNotFoundError(f"running on a dask cluster (--scheduler) needs dask.distributed, which is not "
                                  f"installed; install the distributed extra: {INSTALL_HINT}",
                                  name="distributed") from err
    return distributed


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``--scheduler`` value.

    Attributes
    ----------
    text : the value as given
    workers : workers of a local cluster (None: a remote scheduler)
    threads : threads of each local worker (tasks it runs at once)
    address : scheduler address (``tcp://host:port``) or None
    scheduler_file : path of a scheduler file or None
    """

    text: str
    workers: int | None = None
    threads: int = 1
    address: str | None = None
    scheduler_file: str | None = None


def parse_scheduler(text: str) -> SchedulerSpec:
    """``"local"``, ``"local:N"``, ``"local:NxT"``, ``"tcp://host:port"`` / ``"host:port"`` or a scheduler file.

    Raises
    ------
    ValueError
        For ``local:N`` or ``local:NxT`` with N or T not a positive integer, or a value that is neither an address, an
        existing file nor a ``.json`` path (a scheduler file a batch job will write; `open_client`
        checks that it exists); the message gives the accepted forms.
    """
    text = str(text).strip()
    forms = ("local (one worker per core), local:N (N workers), local:NxT (N workers of T threads), a scheduler address such as tcp://10.0.0.5:8786, "
             "or a scheduler file written by `dask scheduler --scheduler-file FILE`")
    if text == "local" or text.startswith("local:"):
        n = text.partition(":")[2]
        if not n:
            return SchedulerSpec(text, workers=max(1, os.cpu_count() or 1))
        m = re.fullmatch(r"(\d+)(?:x(\d+))?", n)
        if not m or int(m[1]) < 1 or (m[2] is not None and int(m[2]) < 1):
            raise ValueError(f"--scheduler {text!r}: the number of local workers (and of threads per worker) must be "
                             f"a positive integer; use {forms}.")
        return SchedulerSpec(text, workers=int(m[1]), threads=int(m[2] or 1))
    if re.fullmatch(r"[a-z]+://\S+", text) or re.fullmatch(r"[\w.\-]+:\d+", text):
        return SchedulerSpec(text, address=text)
    if text and (Path(text).expanduser().is_file() or text.endswith(".json")):
        # a scheduler file (JSON) may be written by a batch job after the command line is parsed
        return SchedulerSpec(text, scheduler_file=str(Path(text).expanduser()))
    raise ValueError(f"--scheduler {text!r} is neither an address nor an existing scheduler file; use {forms}.")


@contextlib.contextmanager
def open_client(scheduler) -> Iterator[Any]:
    """A `distributed.Client` for ``scheduler`` (see the module docstring), closed at the end
    together with a local cluster it started; a given Client is used as it is and left open."""
    distributed = require_distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    spec = scheduler if isinstance(scheduler, SchedulerSpec) else parse_scheduler(scheduler)
    if spec.workers is not None:
        import dask

        # the workers' statistical profiler samples every task's stack 100 times a second: ~10 % of a
        # fit task's CPU time on one core, for a dashboard a local run does not show
        with dask.config.set({"distributed.worker.profile.enabled": False}), \
                distributed.LocalCluster(n_workers=spec.workers, threads_per_worker=spec.threads, processes=True,
                                         dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            log.info("dask: local cluster of %d workers of %d threads", spec.workers, spec.threads)
            yield client
        return
    if spec.scheduler_file and not Path(spec.scheduler_file).is_file():
        raise FileNotFoundError(f"--scheduler {spec.text}: the scheduler file {spec.scheduler_file} does not exist; "
                                f"start the scheduler with `dask scheduler --scheduler-file {spec.scheduler_file}` "
                                f"first (docs/user_guide.md, 'Running on a cluster').")
    kwargs = {"scheduler_file": spec.scheduler_file} if spec.scheduler_file else {"address": spec.address}
    try:
        client = distributed.Client(**kwargs, timeout="30s")
    except OSError as err:
        raise OSError(f"--scheduler {spec.text}: cannot reach the dask scheduler ({err}); start it first "
                      f"(docs/user_guide.md, 'Running on a cluster').") from err
    with client:
        log.info("dask: scheduler %s with %d workers", spec.text, len(client.scheduler_info().get("workers", {})))
        yield client


def parse_tile(text: str) -> tuple[int, int]:
    """``"8x8"`` -> (8, 8): a tile of rows x cols scan points.

    Raises
    ------
    ValueError
        If it is not two positive integers.
    """
    m = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"--tile {text!r} is not ROWSxCOLS with positive integers; write e.g. --tile 8x8.")
    return int(m.group(1)), int(m.group(2))


def plan_tiles(n_frames: int, grid, tile: tuple[int, int] = DEFAULT_TILE) -> list[np.ndarray]:
    """Frames of each tile (increasing indices), tiles in row-major order of the scan grid.

    Parameters
    ----------
    n_frames : frames of the scan
    grid : `xmodel.positions.ScanGrid` (grid row and column of every frame) or None
    tile : (rows, cols) scan points per tile; without a grid, ``rows * cols`` consecutive frames

    Every frame is in exactly one tile.
    """
    rows, cols = (int(v) for v in tile)
    if rows < 1 or cols < 1:
        raise ValueError(f"tile {tile!r} must be two positive integers (rows, cols).")
    if grid is None:
        size = rows * cols
        return [np.arange(s, min(s + size, n_frames)) for s in range(0, n_frames, size)]
    key = (np.asarray(grid.row) // rows) * (-(-int(grid.shape[1]) // cols)) + np.asarray(grid.col) // cols
    order = np.argsort(key, kind="stable")
    cuts = np.flatnonzero(np.diff(key[order])) + 1
    return [np.sort(t) for t in np.split(order, cuts)]


def _nbytes(value) -> int:
    """Bytes of the arrays in an argument (an array, or a dict of arrays)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(int(v.nbytes) for v in value.values() if isinstance(v, np.ndarray))
    return 0


def n_workers(client) -> int:
    """Worker threads the scheduler knows now, the tasks its workers run at once (at least 1)."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1) or 1) for w in workers.values()))


def run_tasks(client, function: Callable, jobs: Sequence[tuple[Any, tuple]], on_result: Callable[[Any, Any], None],
              *, in_flight: int | None = None, stop_after: int | None = None) -> int:
    """Run ``function(*args)`` for every ``(key, args)`` of ``jobs`` on the cluster and hand each
    result to ``on_result(key, result)`` in this process as it completes; returns the results handed.

    ``args`` may be a callable returning the arguments: it is called when the task is submitted
    (a tile's images are then read only shortly before a worker needs them).

    At most ``in_flight`` tasks are submitted at a time (default `IN_FLIGHT_PER_WORKER` per
    worker thread), so that finished results never pile up. ``stop_after``: stop after this many results
    (the remaining tasks are cancelled; tests of the resume path). A task that raises, or an
    exception of ``on_result``, cancels the rest and is raised here: what was handed before stays
    written.
    """
    distributed = require_distributed()
    limit = max(1, int(in_flight or IN_FLIGHT_PER_WORKER * n_workers(client)))
    pending = list(jobs)[::-1]
    live: dict = {}                     # future -> (key, its arguments: scattered data stay referenced)
    running = distributed.as_completed()

    def submit() -> None:
        key, args = pending.pop()
        args = args() if callable(args) else args
        # large arrays go to the cluster as data of their own, not inside the task
        args = [client.scatter([a], hash=False)[0] if _nbytes(a) > SCATTER_BYTES else a for a in args]
        future = client.submit(function, *args, pure=False)
        live[future] = (key, args)
        running.add(future)

    for _ in range(min(limit, len(pending))):
        submit()
    handed = 0
    try:
        for future in running:
            result = future.result()
            on_result(live.pop(future)[0], result)
            handed += 1
            if stop_after is not None and handed >= stop_after:
                break
            if pending:
                submit()
    finally:
        if live:
            client.cancel(list(live))
    return handed


# ----------------------------------------------------------------------------- the reduction
def _reduce_tile(master: str, poni: str | None, frames: np.ndarray, bin_map) -> tuple:
    """Task: read and reduce the frames of one tile (`xmodel.reduction.reduce_scan_frames`)."""
    from xmodel.io import open_scan
    from xmodel.reduction import reduce_scan_frames

    with open_scan(master, poni=poni) as scan:
        return (frames,) + reduce_scan_frames(scan, bin_map, frames)


def reduce_tiles(scan, out: Path, bin_map, grid, scheduler, *, poni: str | Path | None = None,
                 report: Callable[[int, int], None] | None = None,
                 tile: tuple[int, int] = DEFAULT_TILE) -> int:
    """Reduce the frames of ``scan`` not yet in ``out`` tile by tile on a dask cluster; returns
    the frames reduced by this call.

    Parameters
    ----------
    scan : the open scan (`xmodel.io.Scan`); the workers open its master themselves
    out : reduction file prepared by `xmodel.reduction.reduce_scan` (`xmodel.reduced` schema)
    bin_map : the `xmodel.reduction.BinMap`, sent once to every worker
    grid : the scan grid (`xmodel.positions.ScanGrid`) or None: how frames are grouped in tiles
    scheduler : see the module docstring
    poni : the geometry file the scan was opened with (the workers need it when the master
        lacks the NeXus geometry)
    report : ``report(frames_done, n_frames)`` after each tile is written (may raise to stop)
    tile : (rows, cols) scan points per tile

    Notes
    -----
    A frame is done when its ``invalid_pixels`` is written (`xmodel.reduced.reduced_frames`):
    each tile's images, radial profiles and lost pixels are written first, its
    ``invalid_pixels`` last, then flushed, and ``frames_done`` advances to the first frame not
    done. A rerun (with or without a scheduler) finds every written frame.
    """
    import h5py

    from xmodel import reduced

    done = reduced.reduced_frames(out)
    tiles = [t[~done[t]] for t in plan_tiles(scan.n_frames, grid, tile)]
    jobs = [t for t in tiles if t.size]
    if not jobs:
        return 0
    count = {"done": int(done.sum()), "new": 0}
    with open_client(scheduler) as client, h5py.File(out, "r+") as f:
        shared = client.scatter(bin_map, broadcast=True, hash=False)     # a key of its own: see fit_tiles
        poni_arg = None if poni is None else str(poni)

        def write(_, result) -> None:
            frames, polar, radial, invalid, lost = result
            reduced.write_frames(f, frames, polar, radial, invalid, lost)
            f.flush()
            done[frames] = True
            reduced.set_frames_done(f, int(np.argmin(done)) if not done.all() else done.size)
            f.flush()
            count["done"] += frames.size
            count["new"] += frames.size
            if report is not None:
                report(count["done"], scan.n_frames)

        run_tasks(client, _reduce_tile, [(k, (str(scan.master), poni_arg, t, shared)) for k, t in enumerate(jobs)],
                  write)
    return count["new"]
