"""Fault injection, analyses stage: bad arguments are errors naming the argument (and its option),
the value and the valid range; bad data (hot pixels, masked rings, empty windows) is rejected or
flagged per frame, never turned into a silent wrong number.

Every table row is one distinct fault. Data are small synthetic rings and profiles, so the whole
module runs in seconds.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from fits.analyses import classify, disorder, facets, indexing, peak_profile, qmap, shell_comb, xcca
from fits.analyses.classify import EMPTY, MIXED, NO_DATA, RingClasses
from fits.status import FitStatus

CHI = np.arange(-180.0, 180.0, 1.0) + 0.5
QS = np.array([0.080, 0.083, 0.086, 2.10, 2.12, 2.14])      # 3 SAXS and 3 WAXS q bins
HOT = 5.0e4                                                  # a hot pixel's lift of its polar bin


def _pattern(rng: np.random.Generator, n_frames: int = 1) -> np.ndarray:
    """Polar images (n_frames, n_chi, 6): 4 SL peaks (sigma 1.2 deg) and 4 broad AL peaks, Poisson."""
    saxs = xcca.gaussian_ring(CHI, np.arange(4) * 90.0 + 10, 200.0, 1.2) + 20
    waxs = xcca.gaussian_ring(CHI, np.arange(4) * 90.0 + 55, 30.0, 6.0) + 5
    img = np.empty((n_frames, CHI.size, QS.size))
    img[..., :3] = saxs[:, None]
    img[..., 3:] = waxs[:, None]
    return rng.poisson(img * 5) / 5.0


def _add_hot(img: np.ndarray, where=((33, 1), (140, 0), (250, 4), (300, 2), (77, 5))) -> np.ndarray:
    out = img.copy()
    for j, k in where:
        out[..., j, k] += HOT
    return out


def _ccf(img: np.ndarray, **kw) -> xcca.CCF:
    return xcca.domain_ccf(img, QS, CHI, 0.083, 2.12, dq1=0.004, dq2=0.03, **kw)


# --- XCCA: hot pixels ------------------------------------------------------------------------

def test_hot_pixels_do_not_change_the_ccf_maxima():
    """Five hot pixels (two rings, three q bins) leave the maxima of the clean pattern."""
    img = _pattern(np.random.default_rng(3))
    clean = _ccf(img)
    expected = xcca.ccf_maxima(clean.delta_deg, clean.ccf)
    assert expected.size == 4
    hot = _ccf(_add_hot(img))
    np.testing.assert_allclose(xcca.ccf_maxima(hot.delta_deg, hot.ccf), expected, atol=0.2)
    assert xcca.ccf_score(hot.ccf, clean.ccf) > 0.999
    assert hot.extra["hot_bins"].tolist() == [[3, 2]]           # flagged per frame and ring


def test_without_rejection_hot_pixels_would_wreck_the_ccf():
    """The fault is real: the same rings without rejection give other maxima."""
    img = _add_hot(_pattern(np.random.default_rng(3)))
    r1 = xcca.ring_profile(img, QS, CHI, 0.083, 0.004, hot_nsigma=None)
    r2 = xcca.ring_profile(img, QS, CHI, 2.12, 0.03, hot_nsigma=None)
    clean = _ccf(_pattern(np.random.default_rng(3)))
    assert xcca.ccf_score(xcca.ccf_of_rings(r1, r2).ccf, clean.ccf) < 0.5


def test_hot_pixel_counted_in_its_own_frame_only():
    img = _pattern(np.random.default_rng(4), n_frames=4)
    img[2, 120, 1] += HOT                                      # chi = -59.5 deg, between two SL peaks
    ring = xcca.ring_profile(img, QS, CHI, 0.083, 0.004)
    assert ring.hot_bins.tolist() == [0, 0, 1, 0]
    assert ring.weight[2, 120] == 1.0                          # the other q bins of the band remain
    assert ring.intensity[2, 120] < 40.0


def test_hot_pixel_beside_a_module_gap_is_rejected():
    img = _pattern(np.random.default_rng(5))[0]
    img[60:64, :3] = np.nan                                    # a gap across the SAXS band
    img[64, 1] += HOT
    ring = xcca.ring_profile(img, QS, CHI, 0.083, 0.004)
    assert int(ring.hot_bins) == 1 and np.all(ring.weight[60:64] == 0)


@pytest.mark.parametrize("sigma_bins", [0.8, 1.0, 2.0, 5.0])
def test_no_peak_is_taken_for_a_hot_pixel(sigma_bins):
    """Noisy rings with peaks from 0.8 chi bins wide and 20-20000 counts high: nothing rejected."""
    rng = np.random.default_rng(int(sigma_bins * 10))
    rings = [rng.poisson(xcca.gaussian_ring(CHI, rng.uniform(-180, 180, 6), amp,
                                            np.hypot(sigma_bins, np.sqrt(1 / 12))) + 10.0)
             for amp in (20.0, 200.0, 2e3, 2e4) for _ in range(5)]
    assert not xcca.hot_bins(np.array(rings, float), circular=True).any()


# --- XCCA: masks, empty frames and rings --------------------------------------------------------

def test_per_frame_validity_mask_gives_weight_zero():
    img = _pattern(np.random.default_rng(6), n_frames=2)
    valid = np.ones(img.shape, bool)
    valid[1, 10:20, :3] = False                                # frame 1 lost these SAXS pixels
    ring = xcca.ring_profile(img, QS, CHI, 0.083, 0.004, valid=valid)
    assert np.all(ring.weight[1, 10:20] == 0) and np.all(ring.weight[0, 10:20] == 1)


def test_infinite_bins_are_masked_not_averaged():
    img = _pattern(np.random.default_rng(7))[0]
    img[5:8, :3] = np.inf
    ring = xcca.ring_profile(img, QS, CHI, 0.083, 0.004)
    assert np.all(ring.weight[5:8] == 0) and np.all(np.isfinite(ring.intensity))


def test_frame_with_a_fully_masked_ring_is_left_out_and_listed():
    img = _pattern(np.random.default_rng(8), n_frames=3)
    img[1, :, 3:] = np.nan                                     # frame 1: the WAXS ring is masked
    res = _ccf(img)
    assert res.n_frames == 2 and res.extra["empty_frames"].tolist() == [1]
    np.testing.assert_allclose(res.ccf, _ccf(img[[0, 2]]).ccf, atol=1e-12)


def test_ring_masked_in_every_frame_is_an_error():
    img = _pattern(np.random.default_rng(9), n_frames=2)
    img[:, :, :3] = np.nan
    with pytest.raises(ValueError, match=r"the ring at q = 0.083 1/A \(\+- 0.004\) is fully masked"):
        _ccf(img)


XCCA_ARGUMENT_FAULTS = [
    (lambda: xcca.ring_profile(np.ones((360, 6)), QS, CHI, 0.083, 0.0),
     r"dq \(--dq\) = 0.0 1/A for the ring at q = 0.083 1/A: expected the half-width of the ring's q band, "
     r"a number in \(0, 0.083\] 1/A, e.g. 0.002"),
    (lambda: xcca.ring_profile(np.ones((360, 6)), QS, CHI, 0.083, -0.01), r"dq \(--dq\) = -0.01 1/A"),
    (lambda: xcca.ring_profile(np.ones((360, 6)), QS, CHI, 2.12, np.nan), r"dq \(--dq\) = nan 1/A .* q = 2.12"),
    (lambda: xcca.ring_profile(np.ones((360, 6)), QS, CHI, 0.083, 0.5), r"dq \(--dq\) = 0.5 1/A .*\(0, 0.083\]"),
    (lambda: xcca.domain_ccf(np.ones((360, 6)), QS, CHI, 0.083, 2.12, dq2=0),
     r"dq \(--dq\) = 0 1/A for the ring at q = 2.12 1/A"),
    (lambda: xcca.ring_profile(np.ones((360, 6)), QS, CHI, 0.0, 0.01), r"ring q = 0.0 1/A must be a positive number"),
    (lambda: xcca.ring_profile(np.ones((360, 6)), QS, CHI, np.nan, 0.01), r"ring q = nan 1/A must be a positive"),
    (lambda: xcca.ring_profile(np.ones((360, 6)), QS, CHI, 5.0, 0.01),
     r"ring q = 5 1/A .* lies outside the polar grid"),
    (lambda: xcca.domain_ccf(np.ones((2, 360, 6)), QS, CHI, 0.083, 2.12, frames=[0, 2]),
     r"frames must be indices in 0..1 of the 2 patterns; got \[0, 2\]"),
    (lambda: xcca.domain_ccf(np.ones((2, 360, 6)), QS, CHI, 0.083, 2.12, frames=[-1]),
     r"frames must be indices in 0..1"),
    (lambda: xcca.domain_ccf(np.ones((2, 360, 6)), QS, CHI, 0.083, 2.12, frames=[0.5]), r"frames must be indices"),
    (lambda: xcca.domain_ccf(np.ones((2, 360, 6)), QS, CHI, 0.083, 2.12, frames=[]), r"no frames selected for the CCF"),
    (lambda: xcca.domain_ccf(np.ones(6), QS, CHI, 0.083, 2.12), r"polar images must be \(n_chi, n_q\) or"),
    (lambda: xcca.cross_correlation(np.ones(7), 1, np.ones(7), 1, np.arange(7) * 50.0 + 0.5),
     r"chi step 50 deg does not divide 360 deg"),
    (lambda: xcca.ccf_maxima(CHI, np.zeros(360), min_height=2),
     r"min_height = 2: expected a finite number >= 0 and <= 1"),
    (lambda: xcca.ccf_maxima(CHI, np.zeros(360), min_prominence=-0.1), r"min_prominence = -0.1: expected"),
    (lambda: xcca.gaussian_ring(CHI, [10.0], 1.0, 0.0), r"sigma_deg = 0.0: expected a finite number > 0 \(deg\)"),
    (lambda: xcca.angular_window(CHI, np.nan, 10.0), r"phi1_deg = nan: expected a finite number \(deg\)"),
    (lambda: xcca.normalise_ccf(np.array([0.0, np.inf, 1.0])), r"CCF holds non-finite values"),
    (lambda: xcca.ccf_score(np.ones(360), np.arange(360.0)), r"a constant CCF has no correlation"),
]


@pytest.mark.parametrize("call, match", XCCA_ARGUMENT_FAULTS,
                         ids=[f"xcca{i}" for i in range(len(XCCA_ARGUMENT_FAULTS))])
def test_xcca_argument_fault(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.fixture
def reduced_rings(tmp_path):
    """A reduced scan of 3 frames with polar images, q and chi (no other datasets)."""
    path = tmp_path / "rings.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"], g["q"], g["chi"] = _pattern(np.random.default_rng(10), 3), QS, CHI
    return path


@pytest.mark.parametrize("kwargs, match", [
    ({"rings": [(0.083, 0.0), (2.12, None)]}, r"dq \(--dq\) = 0.0 1/A for the ring at q = 0.083"),
    ({"rings": [(0.083, None)], "batch": 0}, r"batch = 0: expected an integer >= 1"),
    ({"rings": [(0.083, None)], "frames": [3]}, r"frame indices must lie in 0..2"),
])
def test_read_rings_argument_fault(reduced_rings, kwargs, match):
    with pytest.raises(ValueError, match=match):
        xcca.read_rings(reduced_rings, **kwargs)


def test_read_rings_flags_hot_pixels_per_frame(tmp_path):
    img = _pattern(np.random.default_rng(11), 3)
    img[1, 200, 1] += HOT
    path = tmp_path / "hot.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"], g["q"], g["chi"] = img, QS, CHI
    (ring,), n = xcca.read_rings(path, [(0.083, 0.004)])
    assert n == 3 and ring.hot_bins.tolist() == [0, 1, 0]


# --- classification: masked rings and hot pixels -----------------------------------------------

TEMPLATES = np.array([xcca.gaussian_ring(CHI, np.arange(4) * 90.0 + c, 1.0, 1.5) for c in (10.0, 40.0)])


def test_fully_masked_ring_is_no_data_not_empty():
    rng = np.random.default_rng(12)
    x = rng.poisson(50 * TEMPLATES[[0, 1, 0]] + 10).astype(float)
    w = np.ones_like(x)
    w[2] = 0.0                                                 # frame 2: ring masked
    res = classify.fit_templates(x, w, TEMPLATES)
    assert res.label.tolist() == [0, 1, NO_DATA] and res.confidence[2] == 0.0


def test_fully_masked_ring_is_no_data_in_template_families():
    rng = np.random.default_rng(13)
    x = rng.poisson(50 * TEMPLATES[[1, 0]] + 10).astype(float)
    w = np.ones_like(x)
    w[0, 2:] = 0.0                                             # only 2 valid chi bins
    res = classify.fit_template_families(x, w, TEMPLATES, np.array([0, 1]))
    assert res.label.tolist() == [NO_DATA, 0]


def test_hot_pixel_does_not_make_a_class():
    """A flat, noisy ring with one hot pixel where a template has a peak stays empty."""
    rng = np.random.default_rng(14)
    img = rng.poisson(np.full((CHI.size, 3), 20.0)).astype(float)
    img[int(np.argmax(TEMPLATES[0])), 1] += HOT
    ring = xcca.ring_profile(img, QS[:3], CHI, 0.083, 0.004)
    assert int(ring.hot_bins) == 1
    res = classify.fit_templates(ring.intensity[None], ring.weight[None], TEMPLATES)
    assert res.label.tolist() == [EMPTY]


def _classes(labels):
    n = len(labels)
    return RingClasses(np.array(labels), np.full(n, 0.9), np.zeros((n, 2)), np.zeros((n, 2)))


@pytest.mark.parametrize("saxs, waxs, expected", [
    (NO_DATA, 1, 1), (0, NO_DATA, 0), (NO_DATA, EMPTY, NO_DATA), (EMPTY, NO_DATA, NO_DATA),
    (NO_DATA, NO_DATA, NO_DATA), (EMPTY, EMPTY, EMPTY), (NO_DATA, MIXED, MIXED),
])
def test_combine_rings_with_a_masked_ring(saxs, waxs, expected):
    alike = np.eye(2)
    label, conf, _ = classify.combine_rings(_classes([saxs]), _classes([waxs]), alike, alike)
    assert label.tolist() == [expected]
    if expected == NO_DATA:
        assert conf[0] == 0.0


@pytest.mark.parametrize("saxs, waxs, expected",
                         [(NO_DATA, 1, 1), (NO_DATA, EMPTY, NO_DATA), (EMPTY, NO_DATA, NO_DATA)])
def test_combine_labels_with_a_masked_ring(saxs, waxs, expected):
    label, _ = classify.combine_labels(_classes([saxs]), _classes([waxs]))
    assert label.tolist() == [expected]


@pytest.mark.parametrize("call, match", [
    (lambda: classify.cluster_templates(np.zeros((3, 360)), np.ones(360)), r"only 0 pattern\(s\) hold a peak"),
    (lambda: classify.fit_templates(np.ones((2, 360)), np.ones(360), np.ones((2, 100))),
     r"templates have 100 chi bins but the profiles 360"),
    (lambda: classify.tilted_params([], step_deg=0.0),
     r"tilt grid step_deg=0.0 and max_tilt_deg=20.0 must be positive"),
    (lambda: classify.fit_templates(np.ones((2, 360)), np.ones(360), TEMPLATES, min_significance=0),
     r"min_significance \(--min-significance\) = 0: expected a finite number > 0 \(noise sigmas\)"),
    (lambda: classify.fit_templates(np.ones((2, 360)), np.ones(360), TEMPLATES, mixed_fraction=1.5),
     r"mixed_fraction \(--mixed-fraction\) = 1.5: expected a finite number > 0 and <= 1"),
    (lambda: classify.fit_templates(np.ones((2, 360)), np.ones(360), TEMPLATES, group_correlation=2),
     r"group_correlation = 2: expected a finite number >= -1 and <= 1"),
    (lambda: classify.fit_template_families(np.ones((2, 360)), np.ones(360), TEMPLATES, np.array([0, 1]),
                                            mixed_fraction=np.nan), r"mixed_fraction \(--mixed-fraction\) = nan"),
])
def test_classify_argument_fault(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- disorder (Eq. 7) ----------------------------------------------------------------------------

DISORDER_FAULTS = [
    ((1e300, 2.5), r"fwhm_az_deg \(--fwhm-az\) = 1e\+300 deg is out of range: expected the azimuthal FWHM in "
                   r"degrees in \[0, 180\) deg"),
    ((400.0, 2.5), r"fwhm_az_deg \(--fwhm-az\) = 400.0 deg is out of range"),
    ((180.0, 2.5), r"fwhm_az_deg \(--fwhm-az\) = 180.0 deg is out of range"),
    ((np.inf, 2.5), r"fwhm_az_deg \(--fwhm-az\) must be a finite number >= 0"),
    ((np.nan, 2.5), r"fwhm_az_deg \(--fwhm-az\) must be a finite number >= 0"),
    ((-13.1, 2.5), r"fwhm_az_deg \(--fwhm-az\) must be a finite number >= 0 .*got -13.1"),
    (("wide", 2.5), r"fwhm_az_deg \(--fwhm-az\) must be a number .*got 'wide'"),
    ((13.1, 400.0), r"fwhm_rad_deg \(--fwhm-rad\) = 400.0 deg is out of range"),
    ((13.1, 2.5, 1e300, 0.1), r"fwhm_az_err_deg \(--fwhm-az-err\) = 1e\+300 deg is out of range"),
    ((13.1, 2.5, 0.5, -0.1), r"fwhm_rad_err_deg \(--fwhm-rad-err\) must be a finite number >= 0"),
    ((2.5, 13.1), r"the radial FWHM 13.1 deg is larger than the azimuthal FWHM 2.5 deg"),
    ((5.0, 6.0, 0.1, 0.1), r"the radial FWHM 6 deg is larger than the azimuthal FWHM 5 deg"),
]


@pytest.mark.parametrize("args, match", DISORDER_FAULTS, ids=[f"eq7_{i}" for i in range(len(DISORDER_FAULTS))])
def test_disorder_argument_fault(args, match):
    with pytest.raises(ValueError, match=match):
        disorder.orientational_disorder(*args)


@pytest.mark.parametrize("az, rad", [(5.0, 5.0), (5.0, 5.05), (5.0, 4.99)])
def test_equal_widths_with_errors_give_a_finite_honest_result(az, rad):
    res = disorder.orientational_disorder(az, rad, 0.5, 0.1)
    assert np.isfinite(res.dphi_err_deg) and res.resolved is False
    s_d2 = 2 * np.hypot(az * 0.5, rad * 0.1)
    assert res.dphi_deg <= np.sqrt(s_d2) and res.dphi_err_deg == pytest.approx(np.sqrt(s_d2), rel=1e-6)


def test_resolved_disorder_keeps_first_order_errors():
    res = disorder.orientational_disorder(13.1, 2.5, 0.5, 0.1)
    assert res.resolved and res.dphi_err_deg == pytest.approx(np.hypot(13.1 * 0.5, 2.5 * 0.1) / res.dphi_deg)


AL_Q = np.linspace(2.0, 2.25, 26)
AL_CHI = np.arange(-180.0, 180.0, 2.0) + 1.0


def _al_image():
    qq, cc = np.meshgrid(AL_Q, AL_CHI)
    return 100 * np.exp(-0.5 * (((qq - 2.12) / 0.03) ** 2 + ((cc + 40) / 6.0) ** 2)) + 5.0


@pytest.mark.parametrize("wavelength, match", [
    (0.0, r"wavelength_A \(--wavelength\) = 0.0 A: expected a finite X-ray wavelength in \(0, 100\) A"),
    (np.nan, r"wavelength_A \(--wavelength\) = nan A"),
    (0.898e-10, None),   # metres: the ring lies far inside the Ewald limit, so only the sphere check can catch
    (8.98,
     r"q = 2.1\d* 1/A lies beyond the Ewald-sphere limit 4 pi / lambda = 1.399 1/A of wavelength_A "
     r"\(--wavelength\) = 8.98 A"),
])
def test_domain_disorder_wavelength_fault(wavelength, match):
    if match is None:
        res, _ = disorder.domain_disorder(_al_image(), AL_Q, AL_CHI, wavelength_A=wavelength)
        assert np.isfinite(res.dphi_deg)      # a tiny wavelength is physical (cos theta ~ 1): accepted
        return
    with pytest.raises(ValueError, match=match):
        disorder.domain_disorder(_al_image(), AL_Q, AL_CHI, wavelength_A=wavelength)


@pytest.mark.parametrize("kwargs, match", [
    ({"q_nominal": -2.12}, r"q_nominal = -2.12: expected a finite number > 0 \(1/A\)"),
    ({"q_halfwidth": 0}, r"q_halfwidth = 0: expected a finite number > 0 \(1/A\)"),
    ({"chi_halfwidth_deg": 500}, r"chi_halfwidth_deg = 500: expected a finite number > 0 and <= 180 \(deg\)"),
    ({"chi_window_deg": (10, -10)}, r"chi_window_deg = \(10, -10\): expected two finite numbers LO, HI"),
])
def test_al_peak_fit_argument_fault(kwargs, match):
    with pytest.raises(ValueError, match=match):
        disorder.fit_al_peak(_al_image(), AL_Q, AL_CHI, **kwargs)


def test_domain_disorder_on_a_masked_ring():
    with pytest.raises(ValueError, match=r"the window q = .* holds 0 finite bins .*the AL ring is masked"):
        disorder.domain_disorder(np.full((AL_CHI.size, AL_Q.size), np.nan), AL_Q, AL_CHI, wavelength_A=0.898)


# --- qmap: the window holds everywhere ------------------------------------------------------------

Q = np.linspace(0.05, 0.2, 300)


def _comb_profiles(a, rng):
    lam = 30.0 - 60.0 * (Q - 0.14) + 0 * a[:, None]
    for nn in (3, 4, 8, 11, 12):
        qn = 2 * np.pi * np.sqrt(nn) / a[:, None]
        lam = lam + 80.0 * np.exp(-0.5 * ((Q - qn) / (0.008 * qn)) ** 2)
    return rng.poisson(lam).astype(float)


@pytest.fixture
def reduced_scan(tmp_path):
    """A 2 x 4 raster of radial profiles, a from 140 to 152 A."""
    a = np.linspace(140.0, 152.0, 8)
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["radial"], g["q"] = _comb_profiles(a, np.random.default_rng(15)), Q
        g["scan_shape"] = np.array([2, 4])
    return path, a


def test_qmap_window_outside_every_peak_flags_every_frame(reduced_scan, tmp_path):
    """``--window 5,6``: no family q lies there, so no frame gets a number (the headline is empty)."""
    path, _ = reduced_scan
    fits = qmap.qmap_scan(path, "200", window=(5.0, 6.0), figures=tmp_path)["fits"]
    assert np.all(np.isnan(fits["center"])) and not fits["in_window"].any()
    assert np.all(fits["status"] == FitStatus.NO_PEAK.code)
    assert np.all(fits["peak_status"] == FitStatus.NO_DATA.code)
    with h5py.File(path, "r") as f:
        assert not f["/entry/qmap/200/in_window"][()].any()


def test_qmap_narrow_window_keeps_only_the_frames_inside(reduced_scan, tmp_path):
    path, a = reduced_scan
    lo, hi = 2 * np.pi * np.sqrt(4) / 147.0, 2 * np.pi * np.sqrt(4) / 141.0     # a in 141..147 A
    fits = qmap.qmap_scan(path, "200", window=(lo, hi), figures=tmp_path)["fits"]
    inside = (a > 141.2) & (a < 146.8)
    c = fits["center"]
    assert np.all((c[np.isfinite(c)] >= lo) & (c[np.isfinite(c)] <= hi))
    assert fits["in_window"][inside].all() and not fits["in_window"][(a < 140.5) | (a > 147.5)].any()


@pytest.mark.parametrize("kwargs, match", [
    ({"window": (0.2, 0.1)}, r"window \(--window\) = \(0.2, 0.1\): expected two finite numbers Q_LO, Q_HI with "
                             r"0 < Q_LO < Q_HI in 1/A"),
    ({"window": (0.0, 0.1)}, r"window \(--window\) = \(0.0, 0.1\)"),
    ({"window": (np.nan, 0.1)}, r"window \(--window\) = \(nan, 0.1\)"),
    ({"window": (0.1,)}, r"window \(--window\) = \(0.1,\)"),
    ({"a_nominal": 0.0}, r"a_nominal \(--a-nominal\) = 0.0: expected a finite number > 0 \(A\)"),
    ({"a_nominal": np.inf}, r"a_nominal \(--a-nominal\) = inf"),
    ({"batch": 0}, r"batch \(--batch\) = 0: expected an integer >= 1"),
    ({"batch": -4}, r"batch \(--batch\) = -4"),
    ({"a_range": (156.0, 127.5)},
     r"a_range = \(156.0, 127.5\): expected two finite numbers LO, HI with 0 <= LO < HI \(A\)"),
    ({"sl_q_range": (0.2, 0.055)}, r"sl_q_range = \(0.2, 0.055\): expected two finite numbers Q_LO, Q_HI"),
    ({"background": "quadratic"}, r"background must be 'linear' or 'constant', got 'quadratic'"),
])
def test_qmap_argument_fault(reduced_scan, tmp_path, kwargs, match):
    path, _ = reduced_scan
    with pytest.raises(ValueError, match=match):
        qmap.qmap_scan(path, "311", figures=tmp_path, **kwargs)


def test_qmap_unknown_family():
    with pytest.raises(ValueError, match=r"unknown family '111'; valid are \['200', '311'\]"):
        qmap.family_window("111")


# --- peak profiles, shells, indexing, facets ----------------------------------------------------------

PROFILE = 100 * np.exp(-0.5 * ((Q - 0.083) / 0.002) ** 2) + 5


def test_empty_window_flags_each_profile_no_data():
    st = peak_profile.fit_profiles(Q, np.stack([PROFILE, PROFILE]), (5.0, 6.0))["status"]
    assert st.tolist() == [FitStatus.NO_DATA.code] * 2


def test_masked_profile_is_flagged_among_good_ones():
    y = np.stack([PROFILE, np.full(Q.size, np.nan), PROFILE])
    res = peak_profile.fit_profiles(Q, y, (0.07, 0.1))
    assert res["status"].tolist() == [FitStatus.OK.code, FitStatus.NO_DATA.code, FitStatus.OK.code]
    assert np.isnan(res["center"][1]) and np.all(np.abs(res["center"][[0, 2]] - 0.083) < 1e-4)


ARGUMENT_FAULTS = [
    (lambda: peak_profile.fit_profiles(Q, PROFILE, (0.1, 0.07)),
     r"q_window \(--window\) = \(0.1, 0.07\): expected two finite numbers LO, HI with LO < HI \(1/A\)"),
    (lambda: peak_profile.fit_profiles(Q, PROFILE, (np.nan, 0.1)), r"q_window \(--window\) = \(nan, 0.1\)"),
    (lambda: peak_profile.fit_profiles(Q, PROFILE, (0.07, 0.1), min_points=0),
     r"min_points = 0: expected an integer >= 1"),
    (lambda: peak_profile.fit_profiles(Q, PROFILE, (0.07, 0.1), min_points=5),
     r"min_points = 5: expected more finite bins than the 5 parameters of a Gaussian \+ linear background"),
    (lambda: peak_profile.fit_profiles(Q, PROFILE, (0.07, 0.1), snr_min=-1),
     r"snr_min = -1: expected a finite number >= 0 \(noise sigmas\)"),
    (lambda: peak_profile.fit_profiles(Q, PROFILE[:10], (0.07, 0.1)), r"profiles have 10 q bins but q has 300"),
    (lambda: peak_profile.fit_profile(Q, PROFILE, (0.1, 0.07)), r"q_window \(--window\) = \(0.1, 0.07\): expected two "
                                                                r"finite numbers Q_LO, Q_HI"),
    (lambda: peak_profile.fit_profile(Q, np.full(Q.size, np.nan), (0.07, 0.1)), r"the window .* holds 0 finite bins"),
    (lambda: shell_comb.fcc_shells(0), r"q_max_times_a = 0: expected a finite number > 0 and <= 30"),
    (lambda: shell_comb.fcc_shells(-1.0), r"q_max_times_a = -1.0"),
    (lambda: shell_comb.fcc_shells(1e5), r"q_max_times_a = 100000.0: expected a finite number > 0 and <= 30"),
    (lambda: shell_comb.fcc_shells(np.nan), r"q_max_times_a = nan"),
    (lambda: shell_comb.radial_spot_profiles(PROFILE[None], width_bins=0), r"width_bins = 0: expected an integer >= 1"),
    (lambda: shell_comb.radial_spot_profiles(PROFILE[None], width_bins=2.5), r"width_bins = 2.5"),
    (lambda: shell_comb.fit_lattice_comb(Q, PROFILE[None], a_range=(156.0, 127.5)),
     r"a_range must be \(a_lo, a_hi\) in Angstrom with 0 < a_lo < a_hi"),
    (lambda: indexing.radial_peaks(Q, PROFILE, q_range=(0.2, 0.06)), r"q_range = \(0.2, 0.06\): expected two finite"),
    (lambda: indexing.radial_peaks(Q, PROFILE, prominence=-1), r"prominence = -1: expected a finite number >= 0"),
    (lambda: indexing.radial_peaks(Q, PROFILE, min_separation=-0.004), r"min_separation = -0.004"),
    (lambda: indexing.radial_peaks(Q, np.full(Q.size, np.nan)), r"the radial profile has 0 positive, finite bins"),
    (lambda: indexing.index_peaks([]), r"q must be one or more positive peak positions in 1/A, got \[\]"),
    (lambda: indexing.index_peaks([np.nan]), r"q must be one or more positive peak positions"),
    (lambda: indexing.index_peaks([0.083], a_nominal=0), r"a_nominal must be a positive number, got 0"),
    (lambda: indexing.index_peaks([0.083], tolerance=-1), r"tolerance must be a positive number, got -1"),
    (lambda: indexing.index_peaks([0.083, 0.1], [1.0]), r"chi has 1 values but q has 2"),
    (lambda: indexing.index_peaks([0.083], zone=(0, 0, 0)), r"zone must be three integers \[u, v, w\], not all zero"),
    (lambda: facets.facet_interactions("conf3"), r"unknown configuration 'conf3'"),
    (lambda: facets.facet_interactions(d100=0), r"d100 must be a positive distance in Angstrom"),
    (lambda: facets.facet_interactions(d100=np.nan), r"d100 must be a positive distance .*got nan"),
    (lambda: facets.facet_interactions(max_angle_deg=400), r"max_angle_deg must be in \(0, 90\] degrees, got 400"),
]


@pytest.mark.parametrize("call, match", ARGUMENT_FAULTS, ids=[f"arg{i}" for i in range(len(ARGUMENT_FAULTS))])
def test_analysis_argument_fault(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_ccf_command_on_a_frame_with_hot_pixels(tmp_path, capsys):
    """End to end through ``xmodel ccf``: the hot frame gives the clean frame's maxima."""
    import json

    from xmodel import cli

    img = _pattern(np.random.default_rng(16))
    maxima = []
    for name, data in (("clean", img), ("hot", _add_hot(img))):
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            g = f.create_group("entry/reduction")
            g["polar"], g["q"], g["chi"] = data, QS, CHI
        assert cli.main(["ccf", str(path), "--q1", "0.083", "--q2", "2.12", "--dq", "0.004", "0.03", "--json"]) == 0
        maxima.append(json.loads(capsys.readouterr().out)["maxima_deg"])
    assert len(maxima[0]) == 4
    np.testing.assert_allclose(maxima[1], maxima[0], atol=0.2)


def test_compression_aware_ring_rejects_hot_pixels(tmp_path):
    """`classify.scaled_ring` (the SAXS ring read at each frame's own q) rejects hot pixels too."""
    q = np.linspace(0.07, 0.105, 36)
    radial_shape = np.exp(-0.5 * ((q - 0.083) / 0.0015) ** 2)
    ring = xcca.gaussian_ring(CHI, np.arange(4) * 90.0 + 10, 200.0, 1.2) + 20
    polar = np.random.default_rng(17).poisson(5 * (ring[:, None] * radial_shape[None, :] + 10)) / 5.0
    polar = np.stack([polar, polar])
    polar[1, 120, int(np.argmin(np.abs(q - 0.083)))] += HOT    # chi = -59.5 deg, between peaks
    path = tmp_path / "scaled.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"], g["q"], g["chi"], g["radial"] = polar, q, CHI, polar.mean(axis=1)
    r, q_peak = classify.scaled_ring(path, 0.083)
    np.testing.assert_allclose(q_peak, 0.083, atol=0.001)
    assert r.intensity[1, 120] < 2 * r.intensity[0, 120] + 5
    np.testing.assert_allclose(r.intensity[1, :100], r.intensity[0, :100])
