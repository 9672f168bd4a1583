"""Tests of xmodel.reduction: agreement with pyFAI (no pixel splitting) and resumable scans."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from xmodel.dectris import write_scan
from xmodel.geometry import Geometry
from xmodel.reduction import (ReductionError, build_bin_map, default_bins, reduce_frames, reduce_scan)

SHAPE = (120, 100)


def geometry() -> Geometry:
    return Geometry(dist=0.05, poni1=60.3 * 75e-6, poni2=40.7 * 75e-6, rot1=0.02, rot2=-0.01, rot3=0.0,
                    wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=SHAPE, detector_name="")


def smooth_frame(geo: Geometry) -> np.ndarray:
    q, chi = geo.q(), np.deg2rad(geo.chi())
    return (100.0 + 50.0 * np.cos(2 * chi) + 30.0 * q).astype(np.float32)


def mask() -> np.ndarray:
    m = np.zeros(SHAPE, dtype=bool)
    m[:, 50:53] = True
    m[10:20, 10:30] = True
    return m


def pyfai_integrator(geo, tmp_path):
    pyFAI = pytest.importorskip("pyFAI")
    geo.to_poni(tmp_path / "g.poni")
    return pyFAI.load(str(tmp_path / "g.poni"))


@pytest.mark.parametrize("chi_range", [(-180.0, 180.0), (-100.0, 150.0)])
def test_polar_matches_pyfai_no_splitting(tmp_path, chi_range):
    geo = geometry()
    ai = pyfai_integrator(geo, tmp_path)
    bins = default_bins(geo, mask(), n_q=30, n_chi=18, q_range=(0.05, 0.6), chi_range=chi_range)
    bin_map = build_bin_map(geo.q(), geo.chi(), mask(), bins)
    frame = smooth_frame(geo)
    polar, radial = reduce_frames(frame[None], bin_map)
    res = ai.integrate2d_ng(frame, 30, 18, unit="q_A^-1", radial_range=(0.05, 0.6), azimuth_range=chi_range,
                            mask=mask(), method=("no", "histogram", "cython"), correctSolidAngle=False,
                            polarization_factor=None)
    # pyFAI stretches the upper edge by one float32 epsilon (1.2e-7): same bins to that precision
    np.testing.assert_allclose(res.radial, bins.q_centres, rtol=1e-6)
    np.testing.assert_allclose(res.azimuthal, bins.chi_centres, atol=1e-4)
    full = bin_map.counts >= 10
    if chi_range[0] > -180.0:
        # pyFAI (no splitting) truncates (chi - lower) / width towards zero, so pixels up to one
        # bin below the azimuth range land in its first bin; we leave them out (they are outside).
        full[0] = False
    assert full.sum() > 100
    np.testing.assert_allclose(polar[0][full], res.intensity[full], rtol=1e-4)
    assert np.all(np.isnan(polar[0][bin_map.counts == 0]))


def test_radial_matches_pyfai_integrate1d(tmp_path):
    geo = geometry()
    ai = pyfai_integrator(geo, tmp_path)
    bins = default_bins(geo, mask(), n_q=50, n_chi=36, q_range=(0.02, 0.7))
    bin_map = build_bin_map(geo.q(), geo.chi(), mask(), bins)
    frame = smooth_frame(geo)
    _, radial = reduce_frames(frame, bin_map)
    res = ai.integrate1d_ng(frame, 50, unit="q_A^-1", radial_range=(0.02, 0.7), mask=mask(),
                            method=("no", "histogram", "cython"), correctSolidAngle=False, polarization_factor=None)
    full = bin_map.radial_counts >= 10
    full[0] = False  # pyFAI also puts pixels up to one bin below the lower q edge in bin 0
    np.testing.assert_allclose(radial[0][full], res.intensity[full], rtol=1e-4)


def test_chi_range_across_cut_wraps():
    geo = geometry()
    chi = geo.chi()
    bins = default_bins(geo, mask(), n_q=10, n_chi=4, chi_range=(90.0, 270.0))
    bin_map = build_bin_map(geo.q(), chi, mask(), bins)
    expected = ((chi >= 90) | (chi <= -90)) & ~mask()
    assert bin_map.counts.sum() == expected.sum()
    with pytest.raises(ReductionError, match=r"spans more than 360 degrees"):
        default_bins(geo, mask(), chi_range=(-180.0, 200.0))


def test_batch_equals_single_frames():
    geo = geometry()
    bin_map = build_bin_map(geo.q(), geo.chi(), mask(), default_bins(geo, mask(), n_q=30, n_chi=24))
    frames = np.random.default_rng(1).poisson(5.0, (3, *SHAPE)).astype(np.uint32)
    polar, radial = reduce_frames(frames, bin_map)
    for i in range(3):
        p1, r1 = reduce_frames(frames[i], bin_map)
        np.testing.assert_allclose(polar[i], p1[0], rtol=1e-6)
        np.testing.assert_allclose(radial[i], r1[0], rtol=1e-6)
    with pytest.raises(ReductionError, match=r"Frames of shape \(5, 5\) do not match"):
        reduce_frames(np.zeros((5, 5)), bin_map)


@pytest.fixture
def scan(tmp_path):
    geo = geometry()
    frames = np.random.default_rng(2).poisson(4.0, (7, *SHAPE)).astype(np.uint32)
    master = write_scan(tmp_path / "raw", "s", iter(frames), 7, geo, positions_um=np.zeros((7, 2)),
                        pixel_mask=mask(), frames_per_file=3)
    return master, frames


def poni_of(master):
    return master.parent / "s.poni"


class Killed(RuntimeError):
    pass


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_kill(scan, tmp_path, workers):
    master, frames = scan
    reference = reduce_scan(master, tmp_path / "ref.h5", poni=poni_of(master), q_bins=30, chi_bins=24, batch_size=2, progress=False)

    def kill_after_first_batch(done, total):
        if done >= 2:
            raise Killed("simulated kill")

    out = tmp_path / "run.h5"
    with pytest.raises(Killed):
        reduce_scan(master, out, poni=poni_of(master), q_bins=30, chi_bins=24, batch_size=2, workers=workers,
                    progress=kill_after_first_batch)
    with h5py.File(out, "r") as f:
        assert f["entry/reduction"].attrs["frames_done"] == 2
        assert np.isnan(f["entry/reduction/polar"][4]).all()
    seen = []
    reduce_scan(master, out, poni=poni_of(master), q_bins=30, chi_bins=24, batch_size=2, workers=workers,
                progress=lambda done, total: seen.append(done))
    assert seen == [4, 6, 7]
    with h5py.File(out, "r") as f, h5py.File(reference, "r") as g:
        a, b = f["entry/reduction"], g["entry/reduction"]
        assert a.attrs["frames_done"] == 7
        np.testing.assert_array_equal(a["polar"][()], b["polar"][()])
        np.testing.assert_array_equal(a["radial"][()], b["radial"][()])
        assert a["q"].attrs["units"] == "1/angstrom" and a["polar"].shape == (7, 24, 30)
        assert "Distance" in a.attrs["poni"]
        # the stored polar images are reduce_frames of the frames (masked pixels excluded)
        bin_map = build_bin_map(geometry().q(), geometry().chi(), mask(),
                                default_bins(geometry(), mask(), n_q=30, n_chi=24))
        polar, _ = reduce_frames(frames[5:7], bin_map)
        np.testing.assert_allclose(a["polar"][5:7], polar, rtol=1e-6)


def test_resume_refuses_other_bins(scan, tmp_path):
    master, _ = scan
    out = reduce_scan(master, tmp_path / "o.h5", q_bins=30, chi_bins=24, progress=False)
    with pytest.raises(ReductionError, match=r"different geometry, mask, bins, positions or monitor.*delete it"):
        reduce_scan(master, out, q_bins=31, chi_bins=24, progress=False)


def test_progress_is_logged_without_carriage_returns(scan, tmp_path, caplog):
    import logging

    master, _ = scan
    with caplog.at_level(logging.INFO, logger="xmodel.progress"):
        reduce_scan(master, tmp_path / "p.h5", q_bins=10, chi_bins=8, batch_size=4)
    text = caplog.text
    assert "reduce: 7/7 frames (100 %)" in text and "\r" not in text


def test_log_spaced_q_bins_equal_a_direct_histogram():
    geo = geometry()
    frame = np.random.default_rng(4).poisson(20.0, SHAPE).astype(np.float32)
    bins = default_bins(geo, mask(), n_q=25, n_chi=8, q_spacing="log")
    ratio = bins.q_edges[1:] / bins.q_edges[:-1]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)            # constant dq/q
    polar, radial = reduce_frames(frame, build_bin_map(geo.q(), geo.chi(), mask(), bins))
    q, chi, ok = geo.q(), geo.chi(), ~mask()
    qi = np.searchsorted(bins.q_edges, q, side="right") - 1
    ci = np.searchsorted(bins.chi_edges, chi, side="right") - 1
    qi[q == bins.q_edges[-1]] = 24                                     # upper edge: last bin
    ci[chi == bins.chi_edges[-1]] = 7
    ok &= (qi >= 0) & (qi < 25) & (ci >= 0) & (ci < 8)
    sums = np.zeros((8, 25))
    cnt = np.zeros((8, 25))
    np.add.at(sums, (ci[ok], qi[ok]), frame[ok])
    np.add.at(cnt, (ci[ok], qi[ok]), 1)
    with np.errstate(invalid="ignore"):
        expected = sums / cnt
    np.testing.assert_allclose(polar[0], expected, rtol=1e-5)
    with pytest.raises(ReductionError, match="q_spacing must be 'linear' or 'log'"):
        default_bins(geo, mask(), q_spacing="sqrt")


# ----------------------------------------------------------------------------- real scans
def dummy_scan(tmp_path, n=6, name="d", seed=5, **kwargs):
    """A scan with pixel_mask applied, a few frames with dummy pixels outside the pixel mask."""
    geo = geometry()
    frames = np.random.default_rng(seed).poisson(20.0, (n, *SHAPE)).astype(np.uint32)
    frames[1, 70, 30] = 2**32 - 1       # dummy (overflow) in frame 1 only
    frames[1, 90:92, 60] = 2**32 - 1
    frames[4, 5, 80] = 2**32 - 1
    master = write_scan(tmp_path / name, name, iter(frames), n, geo, positions_um=None, pixel_mask=mask(),
                        frames_per_file=4, **kwargs)
    return master, frames


def test_polar_equals_exact_histogram_over_pyfai_pixel_centres(tmp_path):
    """Polar images are exact float64 histograms over pyFAI's own pixel-centre q and chi
    (AzimuthalIntegrator.center_array), each frame's dummy pixels left out of that frame only."""
    master, frames = dummy_scan(tmp_path)
    ai = pyfai_integrator(geometry(), tmp_path)
    q = ai.center_array(SHAPE, unit="q_A^-1")
    chi = ai.center_array(SHAPE, unit="chi_deg")
    bins = default_bins(geometry(), mask(), n_q=20, n_chi=12, q_range=(0.05, 0.95), q_spacing="linear")
    out = reduce_scan(master, tmp_path / "r.h5", poni=master.parent / "d.poni", bins=bins, batch_size=4,
                      progress=False, positions_um=np.zeros((6, 2)) + np.arange(6)[:, None])
    from xmodel.reduced import open_reduced

    red = open_reduced(out)
    polar = red.polar()
    qi = np.searchsorted(bins.q_edges, q, side="right") - 1      # exact: edges[k] <= q < edges[k + 1]
    ci = np.searchsorted(bins.chi_edges, chi, side="right") - 1
    for i in range(6):
        ok = ~mask() & (frames[i] != 2**32 - 1) & (qi >= 0) & (qi < 20) & (ci >= 0) & (ci < 12)
        sums = np.zeros((12, 20))
        cnt = np.zeros((12, 20))
        np.add.at(sums, (ci[ok], qi[ok]), frames[i][ok].astype(np.float64))
        np.add.at(cnt, (ci[ok], qi[ok]), 1)
        full = cnt >= 10
        np.testing.assert_allclose(polar[i][full], sums[full] / cnt[full], rtol=1e-3)
        if i == 1:  # the frame's own pixel counts lose exactly its dummy pixels
            assert red.frame_pixel_counts(1).sum() == red.pixel_counts.sum() - 3
    assert red.invalid_pixels.tolist() == [0, 3, 0, 0, 1, 0]
    assert red.count_time == pytest.approx(0.3)
    assert np.all(np.isfinite(red.radial()[:, red.radial_counts > 0]))


def test_saturated_pixels_above_the_count_cutoff_are_masked_in_their_frame(tmp_path):
    master, frames = dummy_scan(tmp_path, count_cutoff=60)
    frames_hot = frames.copy()
    out = reduce_scan(master, tmp_path / "s.h5", q_bins=10, chi_bins=6, progress=False)
    from xmodel.reduced import open_reduced

    red = open_reduced(out)
    binned = build_bin_map(geometry().q(), geometry().chi(), mask(), default_bins(geometry(), mask(), 10, 6))
    expected = [int(((frames_hot[i].reshape(-1) > 60) & (binned.pixel_bin >= 0)).sum()) for i in range(6)]
    assert red.invalid_pixels.tolist() == expected and expected[1] >= 3


def test_failed_write_stops_with_a_clear_message_and_the_rerun_finishes(scan, tmp_path, monkeypatch):
    """A full disk mid-run: ReductionError naming ENOSPC and the file, checkpoint at the last batch
    really written, and the rerun finishes with the same result as an uninterrupted run."""
    import errno

    from xmodel import reduction

    master, _ = scan
    reference = reduce_scan(master, tmp_path / "ref.h5", q_bins=30, chi_bins=24, batch_size=2, progress=False)
    real = reduction._write_batch
    calls = []

    def disk_full(f, start, polar, radial, *rest):
        calls.append(start)
        if len(calls) == 2:
            f["/entry/reduction/polar"][start] = np.nan  # half a batch, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, start, polar, radial, *rest)

    monkeypatch.setattr(reduction, "_write_batch", disk_full)
    out = tmp_path / "full.h5"
    with pytest.raises(ReductionError, match=r"Writing frames 2 to 3 to .*full\.h5 failed: the disk is full "
                                             r"\(ENOSPC\)\. The checkpoint stays at frame 2 .*run the same command again"):
        reduce_scan(master, out, q_bins=30, chi_bins=24, batch_size=2, progress=False)
    with h5py.File(out, "r") as f:
        assert f["entry/reduction"].attrs["frames_done"] == 2
    monkeypatch.setattr(reduction, "_write_batch", real)
    reduce_scan(master, out, q_bins=30, chi_bins=24, batch_size=2, progress=False)
    with h5py.File(out, "r") as f, h5py.File(reference, "r") as g:
        np.testing.assert_array_equal(f["entry/reduction/polar"][()], g["entry/reduction/polar"][()])


def test_frames_recorded_done_without_data_are_reduced_again(scan, tmp_path):
    master, _ = scan
    out = reduce_scan(master, tmp_path / "n.h5", q_bins=30, chi_bins=24, batch_size=2, progress=False)
    reference = h5py.File(out, "r")["entry/reduction/polar"][()]
    with h5py.File(out, "r+") as f:  # what an older version left after a full disk: done, but NaN
        f["entry/reduction/polar"][4:] = np.nan
        f["entry/reduction/radial"][4:] = np.nan
    reduce_scan(master, out, q_bins=30, chi_bins=24, batch_size=2, progress=False)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["entry/reduction/polar"][()], reference)


def test_resume_refuses_another_master_of_the_same_shape(tmp_path):
    a, _ = dummy_scan(tmp_path, name="a", seed=1)
    b, _ = dummy_scan(tmp_path, name="b", seed=2)
    out = tmp_path / "o.h5"
    reduce_scan(a, out, q_bins=10, chi_bins=6, progress=False)
    with h5py.File(out, "r+") as f:
        f["entry/reduction"].attrs["frames_done"] = 2  # as if killed
    with pytest.raises(ReductionError, match=r"different scan \(another master file, even if of the same shape\)"):
        reduce_scan(b, out, q_bins=10, chi_bins=6, progress=False)


def test_positions_monitor_and_the_no_positions_message(tmp_path, caplog):
    from xmodel.positions import grid_positions
    from xmodel.reduced import open_reduced

    master, _ = dummy_scan(tmp_path)
    with caplog.at_level("WARNING"):
        out = reduce_scan(master, tmp_path / "none.h5", q_bins=10, chi_bins=6, progress=False)
    assert caplog.text.count("no scan positions: maps need --scan-shape or --positions; the neighbour "
                             "passes are skipped") == 1
    red = open_reduced(out)
    assert red.positions_um is None and red.grid is None and not red.has_positions()
    with pytest.raises(ValueError, match="cannot be arranged on a map: no scan positions"):
        red.map_image(np.arange(6))

    pos = grid_positions((2, 3), (0.5, 0.25), "snake")
    monitor = np.array([100.0, 50.0, 100.0, 100.0, 120.0, 80.0])
    out = reduce_scan(master, tmp_path / "pos.h5", q_bins=10, chi_bins=6, progress=False, positions_um=pos,
                      monitor=monitor)
    red = open_reduced(out)
    np.testing.assert_array_equal(red.positions_um, pos)
    assert red.scan_shape == (2, 3)
    np.testing.assert_array_equal(red.map_image(np.arange(6)), [[0, 1, 2], [5, 4, 3]])  # snake undone
    np.testing.assert_array_equal(red.monitor, monitor)
    # counts are stored as measured; the normalised view scales frame 1 (half flux) by 2
    np.testing.assert_allclose(red.flux_factor(), 100.0 / monitor)
    np.testing.assert_allclose(red.polar_normalised(1), red.polar(1) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(red.radial_normalised([0, 1])[1], red.radial(1) * 2.0, rtol=1e-6)


def test_hot_pixels_are_masked_for_the_scan(tmp_path):
    geo = geometry()
    frames = np.random.default_rng(3).poisson(20.0, (5, *SHAPE)).astype(np.uint32)
    frames[:, 40, 40] = 5000     # hot in every frame
    frames[2, 41, 60] = 5000     # bright in one frame only: not hot
    master = write_scan(tmp_path / "h", "h", iter(frames), 5, geo, positions_um=None, pixel_mask=mask())
    from xmodel.reduced import open_reduced
    from xmodel.reduction import hot_pixel_mask
    from xmodel.io import open_scan

    with open_scan(master) as sc:
        hot = hot_pixel_mask(sc, 5, sc.mask)
    assert set(zip(*np.nonzero(hot))) == {(40, 40)}
    red = open_reduced(reduce_scan(master, tmp_path / "h.h5", q_bins=10, chi_bins=6, progress=False, hot_pixels=5))
    assert red.mask[40, 40] and not red.mask[41, 60] and red.attrs["hot_pixels"] == 5


def test_cli_reduce_with_scan_shape_and_with_a_fio_scan_file(tmp_path, capsys):
    """`xmodel reduce MASTER --scan-shape 2x3 --step-um 1 --q-spacing linear`, then the same scan
    with its positions and monitor from a P10-style .fio file; both stored in the results."""
    from xmodel.cli import main
    from xmodel.fio import write_fio
    from xmodel.positions import grid_positions
    from xmodel.reduced import open_reduced

    master, _ = dummy_scan(tmp_path)
    out = tmp_path / "shape.h5"
    assert main(["reduce", str(master), "--out", str(out), "--scan-shape", "2x3", "--step-um", "1",
                 "--q-spacing", "linear", "--q-bins", "20", "--chi-bins", "12", "--quiet"]) == 0
    red = open_reduced(out)
    assert red.scan_shape == (2, 3) and red.positions_um.tolist() == grid_positions((2, 3), 1.0).tolist()
    assert red.attrs["positions_source"].startswith("--scan-shape 2x3")
    pos_mm = grid_positions((2, 3), 0.25, "snake") / 1000.0
    write_fio(tmp_path / "p10.fio", {"smpx": pos_mm[:, 1], "smpy": pos_mm[:, 0], "ion1": [9, 10, 11, 10, 12, 8]},
              parameters={"smpx_unit": "mm", "smpy_unit": "mm"})
    out = tmp_path / "fio.h5"
    assert main(["reduce", str(master), "--out", str(out), "--positions", str(tmp_path / "p10.fio"),
                 "--position-columns", "smpx,smpy", "--monitor", f"{tmp_path / 'p10.fio'}:ion1",
                 "--q-bins", "20", "--chi-bins", "12", "--quiet"]) == 0
    red = open_reduced(out)
    np.testing.assert_allclose(red.positions_um, grid_positions((2, 3), 0.25, "snake"), atol=1e-9)
    assert red.monitor.tolist() == [9, 10, 11, 10, 12, 8] and red.grid.shape == (2, 3)
    assert main(["reduce", str(master), "--out", str(tmp_path / "x.h5"), "--scan-shape", "4x4", "--quiet"]) == 3
    assert "--scan-shape 4x4 holds 16 points but the scan has 6 frames" in capsys.readouterr().err


def test_failed_creation_of_the_output_is_a_clear_error(scan, tmp_path, monkeypatch):
    import errno

    from xmodel import reduction

    def disk_full(path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reduction, "_create_output", disk_full)
    master, _ = scan
    with pytest.raises(ReductionError, match=r"to .*new\.h5 failed: the disk is full \(ENOSPC\)\. The checkpoint "
                                             r"stays at frame 0 \(no frame is written yet\)"):
        reduce_scan(master, tmp_path / "new.h5", q_bins=10, chi_bins=6, progress=False)
