"""Amortised time per frame of the whole scan fit, neighbour passes included, with the machine and load.

Usage: python benchmarks/fit.py RESULTS.h5 [--domain red] [--frames N] [--out DIR] [--no-baseline]
       [--scheduler local:N] [--set fit.KEY=VALUE ...]

Fits the reduced scan (its first ``--frames`` frames, whole rows of a raster scan so that every
frame keeps its scan neighbours) as ``xmodel fit`` does (`fits.scan.driver.fit_scan`): the main
pass in batches of ``fit.batch`` frames (`fits.scan.frames.fit_frames`: template search,
refinement of the matches, linear stage, Levenberg-Marquardt refinement, mixed flag), then the
neighbour passes (`fits.scan.neighbours.neighbour_passes`) and the neighbour-grain mixed test
(`fits.scan.second_grain.flag_second_grains`). Prints wall and CPU seconds per frame
amortised over the frames fitted and per stage, the machine (usable cores, CPU model, library
versions), the load average before and after, and the command line. On a loaded machine the
fair figure is the CPU time per frame divided by the cores (printed too).

Then, unless ``--no-baseline``, the neighbour passes again from the same main pass without the
early stop of refinements that cannot beat their frame (``fit.give_up_factor = inf``) and
without reusing the refinements of unchanged neighbours between passes: the ratio of the two
times, and how many frames' fits differ (none, if the early stop never drops a start that would
have won).

With ``--scheduler`` (``local:N`` or a scheduler address, as ``xmodel fit --scheduler``) the whole
fit runs tile by tile on that dask cluster (`fits.scan.tiles.fit_tiles`, what ``xmodel fit
--scheduler`` runs): the figure is the wall time per frame amortised over the scan, cluster start
and each worker's compiling included, and the CPU time of this process and of its worker
processes (the local cluster's, counted once they have exited); the per-stage split and the
baseline are those of the single-process run. ``benchmarks/scale_out.py`` gives the speed-up
from 1 to 2 workers with compiling left out.

JAX compiles the model's programs on first use and keeps them in the persistent cache of
``xmodel fit`` (``~/.cache/xmodel/jax``, `xmodel.cli.enable_compilation_cache`); the compile
time is part of the figures, so run it twice for the warm figure. Figures: docs/performance.md
("Fits").
"""
from __future__ import annotations

from xmodel.cli import enable_compilation_cache

enable_compilation_cache()      # before JAX is imported, as `xmodel fit` does

import argparse
import os
import platform
import resource
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

from fits.scan import results as store
from fits.scan.driver import fit_batches
from fits.scan.neighbours import neighbour_passes
from fits.scan.results import read_fits
from fits.scan.second_grain import flag_second_grains
from fits.scan.settings import settings_from_config
from fits.scan.setup import setup_from_reduction
from fits.scan.tiles import fit_tiles
from xmodel.config import default_paths, load_config
from xmodel.distributed import DEFAULT_TILE
from xmodel.reduced import GROUP, open_reduced

#: per-frame datasets of /entry/reduction that a subset keeps the rows of
_PER_FRAME = ("polar", "radial", "positions", "monitor", "invalid_pixels")


def subset(path: Path, n: int, folder: Path) -> Path:
    """A copy of the reduction ``path`` holding its first ``n`` frames (whole scan rows where the
    scan shape is known), positions included, in ``folder``."""
    scan = open_reduced(path)
    if scan.scan_shape is not None and n < scan.n_frames:
        n = max(scan.scan_shape[1], n - n % scan.scan_shape[1])
    n = min(n, scan.n_frames)
    out = folder / f"first_{n}_frames.h5"
    with h5py.File(path, "r") as f, h5py.File(out, "w") as g:
        src, dst = f[GROUP], g.create_group(GROUP)
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        dst.attrs["frames_done"] = n
        for name, ds in src.items():
            if not isinstance(ds, h5py.Dataset) or name in ("scan_shape", "grid_index"):
                continue
            dst[name] = ds[:n] if name in _PER_FRAME and ds.shape[:1] == (scan.n_frames,) else ds[()]
        if "scan_shape" in dst.attrs:
            del dst.attrs["scan_shape"]
    return out


def main_pass(reduced: Path, out: Path, cfg, settings, setup, tm: dict) -> None:
    """The batches of `fits.scan.driver.fit_scan` (`fits.scan.driver.fit_batches`, without the progress bar)."""
    scan = open_reduced(reduced)
    store.link_reduction(out, reduced)
    store.prepare(out, scan.n_frames, reduced, cfg, settings)
    for (start, stop), r in fit_batches(lambda a, b: scan.polar(slice(a, b)), setup, settings,
                                        range(0, scan.n_frames, settings.run.batch), scan.n_frames, where=out,
                                        timings=tm):
        store.write_batch(out, start, stop, r)


class TrialCount:
    """Levenberg-Marquardt trials (`fits.batch.BatchFit.n_iter`) of every refinement of the scan fit:
    the work of the refinement, which does not scatter from run to run as its time does."""

    def __init__(self):
        import fits.scan.starts as starts

        self.total, self._lock, self._fit = 0, threading.Lock(), starts.fit_batch

        def counted(*args, **kw):
            f = self._fit(*args, **kw)
            with self._lock:
                self.total += int(np.sum(f.n_iter))
            return f
        starts.fit_batch = counted


def timed(fn, *args, **kw) -> tuple[float, float]:
    """Wall and CPU seconds (all threads of this process) of ``fn(*args, **kw)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args, **kw)
    return time.perf_counter() - t0, time.process_time() - c0


def machine() -> str:
    """Cores, CPU model, load and library versions, for the record."""
    import jax

    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cores()} cores usable ({os.cpu_count()} online), {model}; jax {jax.__version__} "
            f"({jax.default_backend()}), numpy {np.__version__}, Python {platform.python_version()}")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def stages(tm: dict, n: int) -> str:
    return ", ".join(f"{k} {v / n:.3f}" for k, v in tm.items())


def differing(a: Path, b: Path) -> int:
    """Frames whose status, objective or orientation differ between two fits files."""
    ra, rb = read_fits(a), read_fits(b)
    same = (ra["status"] == rb["status"]) & np.isclose(ra["objective"], rb["objective"], rtol=0, atol=1e-3,
                                                        equal_nan=True)
    same &= np.all(np.isclose(ra["orientation_matrix"], rb["orientation_matrix"], atol=1e-6, equal_nan=True),
                   axis=(1, 2))
    return int(np.sum(~same))


def children_cpu() -> float:
    """CPU seconds of this process's exited and reaped child processes (a local cluster's workers)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def distributed(reduced: Path, fits: Path, cfg, settings, scheduler: str, n: int) -> None:
    """The whole fit of ``reduced`` on the dask cluster ``scheduler``, timed (wall, CPU of this process
    and of the local cluster's worker processes)."""
    t0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu()
    scan = open_reduced(reduced)               # as `fit_scan` with a scheduler, keeping fit_tiles' report
    store.link_reduction(fits, reduced)
    store.prepare(fits, scan.n_frames, reduced, cfg, settings)
    store.roll_back(fits)                    # a pass a killed run did not record, as fit_scan
    report = fit_tiles(fits, scan, cfg, settings, scheduler, progress=False, tile=DEFAULT_TILE)
    store.write_maps(fits, scan)
    wall, cpu, workers = time.perf_counter() - t0, time.process_time() - c0, children_cpu() - k0
    total, c = cpu + workers, cores()
    print(f"{n} frames ({reduced.name}), whole fit with the neighbour passes on the dask cluster {scheduler}: "
          f"{wall / n:.3f} s per frame amortised (wall {wall:.0f} s, cluster start and compiling included), "
          f"{total / n:.3f} CPU-s per frame ({cpu:.0f} CPU-s this process, {workers:.0f} CPU-s worker processes"
          f"{'' if workers else ': none counted, the workers are not children of this process'}) = "
          f"{total / n / c:.3f} s per frame on {c} cores")
    print(f"  main pass: {report.main_s:.0f} s wall ({report.tiles} tasks of tile {DEFAULT_TILE[0]}x{DEFAULT_TILE[1]}); "
          f"neighbour passes: {report.passes_s:.0f} s wall (tasks per pass: {report.pass_tiles}); the rest (cluster "
          f"start, writing the maps) {wall - report.main_s - report.passes_s:.0f} s")
    print("load average after:", load())
    print("fits:", fits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="reduced scan (xmodel reduce)")
    ap.add_argument("--domain", default="red", help="sample config of configs/domains (default red)")
    ap.add_argument("--frames", type=int, default=0, help="fit the first N frames (default all)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the fits files (default a temporary one)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the neighbour passes without the early stop")
    ap.add_argument("--set", action="append", default=[], metavar="fit.KEY=VALUE",
                    help="a config override, as xmodel fit --set (repeatable), e.g. fit.neighbour_passes=0")
    ap.add_argument("--scheduler", default=None,
                    help="fit tile by tile on this dask cluster: local:N or a scheduler address (default: this process)")
    a = ap.parse_args()
    print("command:", shlex.join([os.path.basename(sys.executable)] + sys.argv))
    print("machine:", machine())
    print("load average before:", load())
    folder = Path(a.out or tempfile.mkdtemp(prefix="fit_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    reduced = subset(a.results, a.frames, folder) if a.frames else a.results
    n = open_reduced(reduced).n_frames
    cfg = load_config(default_paths(a.domain), a.set)
    settings = settings_from_config(cfg)
    if a.scheduler:
        distributed(reduced, folder / "fits.h5", cfg, settings, a.scheduler, n)
        return
    t0, c0 = time.perf_counter(), time.process_time()
    setup = setup_from_reduction(reduced, cfg, settings)
    wall_setup, cpu_setup = time.perf_counter() - t0, time.process_time() - c0
    fits = folder / "fits.h5"
    main_tm: dict = {}
    trials = TrialCount()
    wall_main, cpu_main = timed(main_pass, reduced, fits, cfg, settings, setup, main_tm)
    trials_main = trials.total
    main_only = folder / "main_pass.h5"
    shutil.copyfile(fits, main_only)
    nb_tm: dict = {}
    wall_nb, cpu_nb = timed(neighbour_passes, fits, reduced, setup, settings, False, timings=nb_tm)
    wall_sg, cpu_sg = timed(flag_second_grains, fits, reduced, setup, settings, False)
    trials_nb = trials.total - trials_main
    wall, cpu = wall_setup + wall_main + wall_nb + wall_sg, cpu_setup + cpu_main + cpu_nb + cpu_sg
    c = cores()
    print(f"{n} frames ({reduced.name}), whole fit with the neighbour passes: {wall / n:.3f} s per frame amortised "
          f"(wall {wall:.0f} s), {cpu / n:.3f} CPU-s per frame = {cpu / n / c:.3f} s per frame on {c} cores")
    print(f"  setup (model, template bank): {wall_setup:.1f} s wall, {cpu_setup:.1f} CPU-s")
    print(f"  main pass: {wall_main / n:.3f} s per frame ({cpu_main / n:.3f} CPU-s); per stage, s per frame: "
          f"{stages(main_tm, n)}")
    print(f"  neighbour passes: {wall_nb / n:.3f} s per frame ({cpu_nb / n:.3f} CPU-s); per stage, s per frame: "
          f"{stages(nb_tm, n)}")
    print(f"  neighbour-grain mixed test: {wall_sg / n:.3f} s per frame ({cpu_sg / n:.3f} CPU-s)")
    print(f"  Levenberg-Marquardt trials (each a model evaluation, an accepted one also a Jacobian): main pass "
          f"{trials_main} ({trials_main / n:.2f} per frame), neighbour passes {trials_nb} ({trials_nb / n:.2f} per frame)")
    if not a.no_baseline:
        plain = folder / "fits_no_early_stop.h5"
        shutil.copyfile(main_only, plain)
        base = settings.replace(source="benchmarks/fit.py", give_up_factor=float("inf"))
        wall_b, cpu_b = timed(neighbour_passes, plain, reduced, setup, base, False, reuse=False)
        flag_second_grains(plain, reduced, setup, base, False)          # as on the fits, untimed
        print(f"  neighbour passes without the early stop and without reuse between passes: {wall_b / n:.3f} s per "
              f"frame ({cpu_b / n:.3f} CPU-s); with them {wall_nb / wall_b:.2f} x the wall time, "
              f"{cpu_nb / cpu_b:.2f} x the CPU time; frames whose fit differs: {differing(fits, plain)}")
    print("load average after:", load())
    print("fits:", fits)


if __name__ == "__main__":
    main()
