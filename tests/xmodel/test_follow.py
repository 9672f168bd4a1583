"""Tests of live mode (xmodel/follow.py, fits/scan/live.py): another process writes a scan frame by
frame while ``--follow`` reduces and fits it; the results equal those of a run on the finished scan."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from fits.scan.results import read_fits
from xmodel.cli import main
from xmodel.dectris import write_scan
from xmodel.follow import FollowOptions, FollowTimeout, LagMeter
from xmodel.geometry import Geometry
from xmodel.positions import grid_positions
from xmodel.reduction import reduce_scan

SHAPE = (60, 50)
N = 12
REPO = Path(__file__).resolve().parents[2]
RED = [str(REPO / "configs/experiment/p10_eiger4m.toml"), str(REPO / "configs/domains/red.toml")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3 x 4 scan of Poisson frames, 4 frames per data file, some dummy pixels."""
    tmp = tmp_path_factory.mktemp("finished")
    geo = Geometry(dist=0.05, poni1=30.3 * 75e-6, poni2=20.7 * 75e-6, rot1=0.0, rot2=0.0, rot3=0.0,
                   wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=SHAPE, detector_name="")
    frames = np.random.default_rng(6).poisson(9.0, (N, *SHAPE)).astype(np.uint32)
    frames[2, 10, 7] = frames[9, 40:42, 30] = 2**32 - 1
    return write_scan(tmp, "s", iter(frames), N, geo, positions_um=None, pixel_mask=None, frames_per_file=4)


def _replay(master: Path, out_dir: Path, interval: float, swmr: bool, stop_after: int | None = None,
            stop_file: Path | None = None) -> subprocess.Popen:
    """Another process writes the scan again frame by frame (`xmodel.follow.replay_scan`), then the stop file."""
    code = (f"from xmodel.follow import replay_scan; replay_scan({str(master)!r}, {str(out_dir)!r}, "
            f"frame_interval_s={interval}, swmr={swmr}, stop_after={stop_after})")
    if stop_file is not None:
        code += f"; open({str(stop_file)!r}, 'w').close()"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def _same_reduction(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as f, h5py.File(b, "r") as g:
        x, y = f["entry/reduction"], g["entry/reduction"]
        assert x.attrs["frames_done"] == y.attrs["frames_done"] and x.attrs["fingerprint"] == y.attrs["fingerprint"]
        for name in ("polar", "radial", "invalid_pixels", "invalid_bins"):
            np.testing.assert_array_equal(x[name][()], y[name][()])


def test_follow_reduces_a_growing_scan_like_the_finished_one(finished, tmp_path, caplog):
    """SWMR data files growing frame by frame: the live reduction starts before the master exists."""
    kw = {"q_bins": 20, "chi_bins": 12, "positions_um": grid_positions((3, 4), (0.25, 0.25), "raster"),
          "progress": False}
    ref = reduce_scan(finished, tmp_path / "ref.h5", poni=finished.parent / "s.poni", **kw)
    live = tmp_path / "live"
    writer = _replay(finished, live, 0.05, swmr=True)
    try:
        with caplog.at_level(logging.INFO, logger="xmodel.follow"):
            out = reduce_scan(live / finished.name, tmp_path / "live.h5", poni=finished.parent / "s.poni", **kw,
                              follow=FollowOptions(poll_s=0.02, idle_timeout_s=60, report_s=0.0))
    finally:
        assert writer.wait(60) == 0
    _same_reduction(out, ref)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("live:")]
    assert lines and lines[-1].startswith(f"live: {N}/{N} frames in (") and "behind acquisition" in lines[-1]
    # a later run on the finished scan finds the live run's file complete
    assert reduce_scan(live / finished.name, out, poni=finished.parent / "s.poni", **kw) == out


def test_stop_file_ends_cleanly_and_the_idle_timeout_names_the_frames(finished, tmp_path, capsys):
    """A writer without SWMR (whole files) stops after 6 of the 12 frames and leaves a stop file:
    --follow ends cleanly with the 6 frames checkpointed; a second live run, without the stop
    file, gives up after the idle timeout, naming where the data end."""
    live, stop = tmp_path / "live", tmp_path / "stop"
    writer = _replay(finished, live, 0.02, swmr=False, stop_after=6, stop_file=stop)
    out = tmp_path / "r.h5"
    args = ["reduce", str(live / finished.name), "--out", str(out), "--poni", str(finished.parent / "s.poni"),
            "--q-bins", "20", "--chi-bins", "12", "--scan-shape", "3x4", "--follow", "--poll", "0.02", "-q"]
    try:
        assert main(args + ["--stop-file", str(stop), "--idle-timeout", "60"]) == 0
    finally:
        assert writer.wait(60) == 0
    with h5py.File(out, "r") as f:
        assert f["entry/reduction"].attrs["frames_done"] == 6
        assert np.isnan(f["entry/reduction/polar"][6]).all() and np.isfinite(f["entry/reduction/radial"][5]).any()
    capsys.readouterr()
    assert main(args + ["--idle-timeout", "0.3"]) == 3
    assert "no new frame for 0.3 s (--idle-timeout) after 6 of 12 frames; frames 0 to 5 are reduced" in \
        capsys.readouterr().err
    with pytest.raises(FollowTimeout, match=r"no frame could be read within 0.2 s \(--idle-timeout\)"):
        reduce_scan(tmp_path / "none_master.h5", tmp_path / "n.h5", follow=FollowOptions(poll_s=0.05,
                                                                                        idle_timeout_s=0.2))


def test_follow_fit_equals_the_fit_of_the_finished_scan(finished, tmp_path, monkeypatch):
    """``xmodel fit MASTER --follow`` against ``xmodel fit MASTER`` on the finished scan: same fits,
    neighbour passes and maps (the frames hold counting noise only: the fits are quick). Whole
    batches are fitted while the frames arrive, the last ones and the passes at the end."""
    import fits.scan.live as live_fit

    common = ["--set", "fit.batch=4", "--scan-shape", "3x4", "--q-bins", "40", "--chi-bins", "36", "-q"]
    assert main(["fit", str(finished), *RED, "--out", str(tmp_path / "ref.h5"), *common]) == 0
    calls = []

    def spy(*args, until=None, **kwargs):
        calls.append(until)
        return fit_scan(*args, until=until, **kwargs)

    fit_scan = live_fit.fit_scan
    monkeypatch.setattr(live_fit, "fit_scan", spy)
    live = tmp_path / "live"
    writer = _replay(finished, live, 0.2, swmr=True)
    try:
        assert main(["fit", str(live / finished.name), *RED, "--out", str(tmp_path / "live.h5"), *common,
                     "--follow", "--poll", "0.02", "--idle-timeout", "60"]) == 0
    finally:
        assert writer.wait(60) == 0
    assert calls[-1] is None and any(u is not None and 0 < u < N and u % 4 == 0 for u in calls), calls
    _same_reduction(tmp_path / "live_reduced.h5", tmp_path / "ref_reduced.h5")
    a, b = read_fits(tmp_path / "live.h5"), read_fits(tmp_path / "ref.h5")
    assert a["frames_done"] == b["frames_done"] == N
    for key in ("status", "message", "significance", "search_score", "objective"):
        np.testing.assert_array_equal(a[key], b[key])
    with h5py.File(tmp_path / "live.h5", "r") as f, h5py.File(tmp_path / "ref.h5", "r") as g:
        assert f["entry/fits"].attrs["neighbour_passes_done"] == g["entry/fits"].attrs["neighbour_passes_done"]
        np.testing.assert_array_equal(f["entry/fits/maps/status/status"][()], g["entry/fits/maps/status/status"][()])


def test_a_frame_that_does_not_decompress_yet_is_read_at_the_next_look(finished, tmp_path, monkeypatch):
    """A chunk still being written fails to decompress: the live run tries it again instead of
    stopping, and the result is the finished scan's."""
    from xmodel import reduction
    from xmodel.io import ScanError

    kw = {"poni": finished.parent / "s.poni", "q_bins": 20, "chi_bins": 12, "progress": False}
    ref = reduce_scan(finished, tmp_path / "ref.h5", **kw)
    real, failed = reduction.reduce_scan_frames, []

    def half_written(scan, bin_map, frames):
        if 5 in frames and not failed:
            failed.append(list(frames))
            raise ScanError("Cannot read frame 5: the LZ4 block is truncated")
        return real(scan, bin_map, frames)

    monkeypatch.setattr(reduction, "reduce_scan_frames", half_written)
    out = reduce_scan(finished, tmp_path / "live.h5", **kw, batch_size=4,
                      follow=FollowOptions(poll_s=0.01, idle_timeout_s=30))
    assert failed == [[4, 5, 6, 7]]
    _same_reduction(out, ref)


def test_lag_meter_rates_and_lag():
    t = [0.0]
    lag = LagMeter(100, clock=lambda: t[0])
    for now, arrived, reduced in ((0.0, 0, 0), (10.0, 30, 20), (20.0, 60, 45)):
        t[0] = now
        lag.note("in", arrived)
        lag.note("reduced", reduced)
    assert lag.rate("in") == pytest.approx(3.0) and lag.rate("reduced") == pytest.approx(2.25)
    assert lag.text() == ("60/100 frames in (3.0 frames/s), 45 reduced (2.2 frames/s): 15 frames (5 s) behind "
                          "acquisition")
    assert LagMeter(10).text() == "0/10 frames in: 0 frames behind acquisition"
