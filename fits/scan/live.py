"""``xmodel fit MASTER --follow``: fit a scan's frames while the detector writes them.

`fit_live` runs the live reduction (`xmodel.follow`, through `xmodel.reduction.reduce_scan` with
``follow=``) and, after each round of newly reduced frames, fits every whole batch of
``run.batch`` frames that is reduced (`fits.scan.driver.fit_scan` with ``until``), which also
rewrites the scan maps of ``/entry/fits``. When the scan's last frame is in, the last frames and
the neighbour passes (which need every frame) are fitted as in a run on the finished scan, so the
results equal those of ``xmodel reduce`` then ``xmodel fit`` (tests/xmodel/test_follow.py).
The lag report of the live reduction counts the fitted frames too.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from fits.scan.driver import fit_scan
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup, setup_from_reduction
from xmodel.follow import FollowOptions, FollowTimeout
from xmodel.reduced import open_reduced, reduced_frames
from xmodel.reduction import reduce_scan

log = logging.getLogger(__name__)


def fit_live(master: str | Path, reduced_path: str | Path, out: str | Path, cfg, settings: FitSettings,
             options: FollowOptions, *, progress: bool = True, setup: FitSetup | None = None,
             **reduce_kwargs) -> Path:
    """Reduce and fit the frames of ``master`` as they arrive; returns ``out``.

    Parameters
    ----------
    master : the Eiger master file (it may not exist yet: the run waits for it)
    reduced_path : the reduction file it writes (`xmodel.reduced` schema)
    out : the fits file (``/entry/fits``; ``reduced_path`` itself is allowed)
    cfg, settings : as `fits.scan.driver.fit_scan`
    options : `xmodel.follow.FollowOptions` (its ``on_frames`` is set here)
    setup : a prebuilt `FitSetup` (default: built when the first frames are reduced)
    reduce_kwargs : passed to `xmodel.reduction.reduce_scan` (bins, positions, monitor, ...)

    Raises
    ------
    xmodel.follow.FollowTimeout
        When no new frame arrives for ``options.idle_timeout_s``; the frames reduced by then
        are fitted first, and the run resumes when started again.
    """
    state = {"setup": setup, "fitted": 0}
    batch = settings.run.batch

    def fit_until(until: int) -> int:
        if until > state["fitted"]:
            if state["setup"] is None:
                state["setup"] = setup_from_reduction(open_reduced(reduced_path), cfg, settings)
            fit_scan(reduced_path, cfg, out, settings, progress=False, setup=state["setup"], until=until)
            state["fitted"] = until
        return state["fitted"]

    def on_frames(done: int) -> int:
        if "n" not in state:
            state["n"] = open_reduced(reduced_path).n_frames
        return fit_until(done if done >= state["n"] else done - done % batch)

    try:
        reduce_scan(master, reduced_path, follow=replace(options, on_frames=on_frames), progress=progress,
                    **reduce_kwargs)
    except FollowTimeout:
        if Path(reduced_path).exists():
            fit_until(_reduced_prefix(reduced_path))
        raise
    n = open_reduced(reduced_path).n_frames
    done = _reduced_prefix(reduced_path)
    if done < n:
        log.warning("live: %d of %d frames are in; the neighbour passes wait for the whole scan", done, n)
    fit_scan(reduced_path, cfg, out, settings, progress=progress, setup=state["setup"],
             until=None if done >= n else done)
    return Path(out)


def _reduced_prefix(path: str | Path) -> int:
    """Frames reduced from the first on."""
    done = reduced_frames(path)
    return int(done.argmin()) if not done.all() else int(done.size)
