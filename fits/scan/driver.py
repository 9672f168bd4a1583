"""Fit every frame of a scan into ``/entry/fits``: batches, checkpoints, resume, neighbour passes.

`fit_scan` reads the reduced scan (`xmodel.reduced`), builds the model and template bank
once (`fits.scan.setup.FitSetup`), fits the frames batch by batch (`fits.scan.frames.fit_frames`),
writing each batch before it advances ``frames_done`` (`fits.scan.results`), and then runs the
neighbour passes (`fits.scan.neighbours.neighbour_passes`). A killed run resumes at the first
unfinished batch or pass; a resume with other settings or another config is refused
(`fits.scan.results.prepare`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np

from fits.scan import results as store
from fits.scan.frames import fit_frames
from fits.scan.neighbours import neighbour_passes
from fits.scan.pipeline import in_order
from fits.scan.second_grain import flag_second_grains
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup, setup_from_reduction
from fits.status import FitStatus
from xmodel.progress import progress_bar
from xmodel.reduced import open_reduced

log = logging.getLogger(__name__)


def fit_scan(results: str | Path, cfg, out: str | Path | None = None, settings: FitSettings = FitSettings(),
             progress: bool = True, stop_after: int | None = None, setup: FitSetup | None = None,
             scheduler=None, tile: tuple[int, int] | None = None, until: int | None = None) -> Path:
    """Fit every frame of ``/entry/reduction/polar`` and write ``/entry/fits`` (resumable).

    Parameters
    ----------
    results : HDF5 file with ``/entry/reduction`` (`xmodel.reduction.reduce_scan`).
    cfg : loaded config of the experiment and the sample (starting values, widths, geometry);
        its resolved values are stored with the fits and a resume must agree with them.
    out : output file (default: ``results`` itself); ``/entry/reduction`` is linked in when it
        is another file.
    settings : every tuning number of the fit (`fits.scan.settings`); stored with the fits, and a
        resume must agree with them.
    stop_after : stop after this many batches (tests of the resume path).
    setup : a prebuilt `FitSetup` for ``cfg`` and ``settings`` (default: built here).
    scheduler : fit on a dask cluster, tile by tile (`fits.scan.tiles`): ``"local"``, ``"local:N"``, a
        scheduler address or file, or a ``distributed.Client``; None (default): in this process.
        ``stop_after`` then counts tiles.
    tile : (rows, cols) scan points per task of a distributed run (default
        `xmodel.distributed.DEFAULT_TILE`).
    until : fit only the frames before this one (a live run, `fits.scan.live`, whose later frames
        are not reduced yet); the neighbour passes wait for the whole scan.

    Notes
    -----
    Each batch's results are written and flushed before ``frames_done`` advances, so a killed run
    resumes at the first unfinished batch; a neighbour pass that was not recorded done is put back
    and run again (`fits.scan.results.roll_back`), so a resumed run gives the results of an
    uninterrupted one. A batch that raises is recorded as failed frames and the scan goes on; a
    write that fails (a full disk) stops the run with an `xmodel.outputs.OutputError` naming the
    file, the cause and the checkpoint, and the same call finishes the scan once it is fixed.
    """
    results = Path(results)
    out = Path(out) if out is not None else results
    scan = open_reduced(results)
    n = scan.n_frames
    store.link_reduction(out, results)
    done = store.prepare(out, n, results, cfg, settings)
    store.roll_back(out)                  # the rows of a neighbour pass a killed run did not record
    if done >= n and store.progress(out)[1] >= settings.neighbours.neighbour_passes and store.second_grains_done(out):
        store.write_maps(out, scan)
        return out
    if scheduler is not None:
        from fits.scan.tiles import fit_tiles
        from xmodel.distributed import DEFAULT_TILE

        fit_tiles(out, scan, cfg, settings, scheduler, progress=progress, stop_after=stop_after, setup=setup,
                  tile=tile or DEFAULT_TILE)
        return out
    setup = setup or setup_from_reduction(scan, cfg, settings)
    setup.bounds(settings.refine.vary)        # a width that cannot be refined: say so before the first batch
    batch = settings.run.batch
    t0 = time.perf_counter()
    bar = progress_bar(n, desc="xmodel fit", unit="frames", enabled=bool(progress), initial=done)
    end = n if until is None else min(int(until), n)
    batches = fit_batches(lambda a, b: scan.polar(slice(a, b)), setup, settings, range(done, end, batch), end,
                          where=out)
    # closing: on a stop after some batches, or a write that fails, the batch still in flight is
    # dropped and its thread ends here
    with closing(batches):
        for written, ((start, stop), r) in enumerate(batches, start=1):
            store.write_batch(out, start, stop, r)
            log.debug("%s: frames %d to %d written, checkpoint at frame %d", out, start, stop - 1, stop)
            bar.update(stop - start)
            bar.set_postfix_str(f"{(time.perf_counter() - t0) / max(stop - done, 1):.2f} s per frame")
            if stop_after is not None and written >= stop_after:
                break
    bar.close()
    neighbour_passes(out, scan, setup, settings, progress)
    flag_second_grains(out, scan, setup, settings, progress)
    store.write_maps(out, scan)
    return out


def fit_batches(read: Callable[[int, int], np.ndarray], setup: FitSetup, settings: FitSettings,
                starts: Iterable[int], end: int, where: str | Path = "", timings: dict | None = None
                ) -> Iterator[tuple[tuple[int, int], dict[str, np.ndarray]]]:
    """``((start, stop), results)`` of the batches from each of ``starts`` (to ``end`` at most), in order.

    ``read(start, stop)`` gives the polar images of frames ``start`` to ``stop - 1`` (e.g.
    ``scan.polar(slice(start, stop))``); it is called in the caller's thread. Up to
    ``settings.run.batches_in_flight`` batches are fitted at once (`fits.scan.pipeline`). A batch
    whose fit raises comes back as failed frames (`fits.status.FitStatus.FAILED`, the exception in the message; logged with
    ``where``), so one bad batch never stops the scan. ``timings`` (if given) receives the
    seconds per stage of `fits.scan.frames.fit_frames`, summed over the batches (with batches
    side by side, the sum exceeds the wall time).
    """
    batch = settings.run.batch

    def jobs():
        for start in starts:
            stop = min(start + batch, end)
            yield start, stop, read(start, stop)

    def fit(job) -> tuple[dict, dict]:
        start, stop, polar = job
        tm: dict = {}
        try:
            return fit_frames(polar, setup, settings, timings=tm), tm
        except Exception as exc:  # noqa: BLE001 - one bad batch never stops the scan
            r = store.empty_results(stop - start)
            r["message"][:] = f"{FitStatus.FAILED.value}: {type(exc).__name__}: {exc}"
            log.warning("%s: the fit of frames %d to %d raised %s: %s; they are flagged failed and the scan "
                        "goes on", where, start, stop - 1, type(exc).__name__, exc)
            return r, tm

    for (start, stop, _), (r, tm) in in_order(fit, jobs(), settings.run.batches_in_flight):
        if timings is not None:
            for k, v in tm.items():
                timings[k] = timings.get(k, 0.0) + v
        yield (start, stop), r
