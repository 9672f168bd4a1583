"""Tests of fits/scan/setup.py's polar points at the centroids of the reduced bins."""
import logging

import h5py
import numpy as np

import fits.scan.setup as scan_setup
from fits.scan.setup import bin_centroid_pixels
from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.reduction import PolarBins, build_bin_map

#: log-spaced q bins about 1.2 % wide through the SL 111 ring, 10 deg chi bins: many pixels in each
Q_EDGES = np.geomspace(0.05, 0.09, 50)
CHI_EDGES = np.linspace(-180.0, 180.0, 37)


def _experiment():
    """The full detector (a reduction bins unbinned pixels): about 6 pixels per bin here."""
    return Experiment.from_config(load_config(default_paths("red")), binning=1)


def test_centroids_are_the_mean_q_and_chi_of_each_bins_pixels():
    exp = _experiment()
    geo = exp.geometry
    q, chi = np.sqrt(Q_EDGES[:-1] * Q_EDGES[1:]), 0.5 * (CHI_EDGES[:-1] + CHI_EDGES[1:])
    px = bin_centroid_pixels(exp, q, chi, Q_EDGES, CHI_EDGES)
    bin_map = build_bin_map(geo.q(), geo.chi(), exp.mask, PolarBins(q_edges=Q_EDGES, chi_edges=CHI_EDGES))
    n = bin_map.counts.reshape(-1)
    assert px.shape == (chi.size, q.size) and np.array_equal(px.valid, n > 0)
    assert np.all(px.weight[~px.valid] == 0.0) and np.all(px.weight[px.valid] > 0.0)
    on = bin_map.pixel_bin >= 0
    b = bin_map.pixel_bin[on]
    q_mean = np.bincount(b, geo.q().reshape(-1)[on], n.size)[px.valid] / n[px.valid]
    np.testing.assert_allclose(px.q_abs[px.valid], q_mean, rtol=1e-9)
    # the chi of the point (pyFAI's: arctan2 of the detector-plane components, as Geometry.chi)
    row, col = geo.pixel_from_q_lab(px.q_lab[px.valid])
    t = geo.positions(row, col).reshape(-1, 3)
    chi_pt = np.degrees(np.arctan2(t[:, 0], t[:, 1]))
    c = np.radians(geo.chi().reshape(-1)[on])
    chi_mean = np.degrees(np.arctan2(np.bincount(b, np.sin(c), n.size), np.bincount(b, np.cos(c), n.size)))[px.valid]
    np.testing.assert_allclose(np.angle(np.exp(1j * np.radians(chi_pt - chi_mean))), 0.0, atol=1e-9)


def test_bin_spread_is_the_covariance_of_each_bins_pixel_q_vectors():
    """`bin_q_covariance` (two passes over pixel blocks) against numpy's covariance of the
    q-vectors of each bin's pixels, bins with one pixel or none at zero."""
    exp = _experiment()
    geo = exp.geometry
    q, chi = np.sqrt(Q_EDGES[:-1] * Q_EDGES[1:]), 0.5 * (CHI_EDGES[:-1] + CHI_EDGES[1:])
    bin_map = build_bin_map(geo.q(), geo.chi(), exp.mask, PolarBins(q_edges=Q_EDGES, chi_edges=CHI_EDGES))
    n = bin_map.counts.reshape(-1)
    # blocks smaller than the detector, so that bins straddle them
    spread = scan_setup.bin_q_covariance(geo, bin_map.pixel_bin, n, block=300_007)
    on = np.flatnonzero(bin_map.pixel_bin >= 0)
    q_lab, pixel_bin = geo.q_lab().reshape(-1, 3)[on], bin_map.pixel_bin[on]
    checked = 0
    for b in np.flatnonzero(n >= 2)[::40]:
        pts = q_lab[pixel_bin == b]
        np.testing.assert_allclose(spread[b], np.cov(pts.T, bias=True), rtol=1e-9, atol=1e-12 * np.max(spread[b]))
        checked += 1
    assert checked > 10
    assert np.all(spread[n < 2] == 0.0)
    px = bin_centroid_pixels(exp, q, chi, Q_EDGES, CHI_EDGES)
    np.testing.assert_array_equal(px.spread, scan_setup.bin_q_covariance(geo, bin_map.pixel_bin, n))
    assert np.array_equal(px.subset(np.array([5, 2])).spread, px.spread[[5, 2]])

def test_centroid_model_matches_a_reduced_narrow_ring_better_than_the_bin_centre():
    """A radial Gaussian about twice as wide as a bin (the SL peaks), averaged over each bin's
    pixels as the reduction does: the centroid is exact to first order in the bin size, the bin
    centre is not."""
    exp = _experiment()
    geo = exp.geometry
    q, chi = np.sqrt(Q_EDGES[:-1] * Q_EDGES[1:]), 0.5 * (CHI_EDGES[:-1] + CHI_EDGES[1:])
    q0, sigma = 0.0712, 0.0015

    def ring(qa):
        return np.exp(-0.5 * ((qa - q0) / sigma) ** 2)

    bin_map = build_bin_map(geo.q(), geo.chi(), exp.mask, PolarBins(q_edges=Q_EDGES, chi_edges=CHI_EDGES))
    n = bin_map.counts.reshape(-1)
    data = (bin_map.matrix.astype(np.float64) @ ring(geo.q().reshape(-1)))[n > 0] / n[n > 0]
    at_centroid = ring(bin_centroid_pixels(exp, q, chi, Q_EDGES, CHI_EDGES).q_abs[n > 0])
    at_centre = ring(np.meshgrid(q, chi)[0].reshape(-1)[n > 0])
    err_centroid = np.sqrt(np.mean((at_centroid - data) ** 2))
    err_centre = np.sqrt(np.mean((at_centre - data) ** 2))
    # left: the second-order term (the curvature of the peak over the spread of the bin's pixels);
    # on the full detector the centroid cuts the rms error 3.8 times
    assert err_centroid < 0.4 * err_centre, (err_centroid, err_centre)


def _reduction(path, edges: bool):
    """A minimal /entry/reduction: one frame on a 3 chi x 4 q grid, with or without bin edges."""
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"] = np.zeros((1, 3, 4), np.float32)
        g["q"] = np.array([0.06, 0.07, 0.08, 0.09])
        g["chi"] = np.array([-60.0, 0.0, 60.0])
        if edges:
            g["q_edges"] = np.array([0.055, 0.065, 0.075, 0.085, 0.095])
            g["chi_edges"] = np.array([-90.0, -30.0, 30.0, 90.0])
    return path


def test_setup_from_reduction_uses_the_edges_and_falls_back_to_bin_centres_with_a_note(tmp_path, monkeypatch,
                                                                                        caplog):
    calls = []
    monkeypatch.setattr(scan_setup.FitSetup, "build", classmethod(lambda cls, *a, **k: calls.append(k)))
    scan_setup.setup_from_reduction(_reduction(tmp_path / "edges.h5", True), cfg=None)
    np.testing.assert_array_equal(calls[-1]["q_edges"], [0.055, 0.065, 0.075, 0.085, 0.095])
    np.testing.assert_array_equal(calls[-1]["chi_edges"], [-90.0, -30.0, 30.0, 90.0])
    with caplog.at_level(logging.INFO, logger="fits.scan.setup"):
        scan_setup.setup_from_reduction(_reduction(tmp_path / "old.h5", False), cfg=None)
    assert "q_edges" not in calls[-1]
    assert "old.h5 stores no bin edges" in caplog.text and "at the bin centres" in caplog.text


class _Stop(Exception):
    pass


def test_centroids_on_the_detector_the_reduction_read(monkeypatch):
    """A scan written on a binned detector (its reduction's mask has the binned shape) gets the
    centroids of the binned pixels; a real scan (full-size mask, or none) those of the full detector."""
    cfg = load_config(default_paths("red"), ["detector.binning=4"])
    binned = Experiment.from_config(cfg)
    full = Experiment.from_config(cfg, binning=1)
    assert binned.geometry.shape != full.geometry.shape
    seen = []

    def capture(exp, *args, **kwargs):
        seen.append(tuple(exp.geometry.shape))
        raise _Stop

    monkeypatch.setattr(scan_setup, "bin_centroid_pixels", capture)
    q, chi = 0.5 * (Q_EDGES[1:] + Q_EDGES[:-1]), 0.5 * (CHI_EDGES[1:] + CHI_EDGES[:-1])
    for mask in (np.zeros(binned.geometry.shape, bool), np.zeros(full.geometry.shape, bool), None):
        try:
            scan_setup.FitSetup.build(cfg, q, chi, None, q_edges=Q_EDGES, chi_edges=CHI_EDGES, mask=mask)
        except _Stop:
            pass
    assert seen == [tuple(binned.geometry.shape), tuple(full.geometry.shape), tuple(full.geometry.shape)]


def test_fit_bounds_keep_the_widths_within_the_reach_of_the_fit_points():
    """A refined width may grow to width_factor times the config's (the support's reach, where the
    fit points and SL windows end) and shrink to its floor; the lattice constant stays in a_range."""
    from types import SimpleNamespace

    import pytest

    from xmodel.parameters import params_from_config
    template = params_from_config(load_config(default_paths("red")))
    setup = SimpleNamespace(a_range=(130.0, 160.0), width_factor=2.5, template=template)
    vary = ["lattice_constant", "sl_radial_width", "mosaic_deg", "al_radial_width", "sl_scale"]
    b = scan_setup.FitSetup.bounds(setup, vary)
    assert set(b) == {"lattice_constant", "sl_radial_width", "mosaic_deg", "al_radial_width"}
    assert b["lattice_constant"] == (130.0, 160.0)
    assert b["sl_radial_width"] == pytest.approx((1e-5, 2.5 * float(template.sl_radial_width)))
    assert b["mosaic_deg"] == pytest.approx((0.01, 2.5 * np.degrees(float(template.sl_mosaic))))
    assert b["al_radial_width"] == pytest.approx((1e-3, 2.5 * float(template.al_radial_width)))
    assert scan_setup.FitSetup.bounds(setup, ["sl_scale"]) == {}
    thin = SimpleNamespace(a_range=(130.0, 160.0), width_factor=1.0, template=template.replace(sl_radial_width=1e-5))
    with pytest.raises(ValueError, match=r"sl_radial_width = 1e-05 1/A of the config times fit.width_factor = 1"):
        scan_setup.FitSetup.bounds(thin, ["sl_radial_width"])
