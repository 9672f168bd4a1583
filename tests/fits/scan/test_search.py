"""Tests of the global orientation search (fits/scan/search.py) on forward-model polar patterns.

The template bank itself (fits/scan/templates.py) is tested in tests/fits/scan/test_templates.py."""
import warnings
from dataclasses import replace

import numpy as np
import pytest

from fits.scan.search import (
    _nan_median,
    _ring_features,
    build_template_bank,
    estimate_lattice_constant,
    isolated_spikes,
    lattice_constant_candidates,
    localised_significance,
    neighbour_excess,
    refine_matches,
    search_orientations,
)
from xmodel import orientation
from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.noise import poisson_counts
from xmodel.parameters import params_from_config, structure_from_config
from xmodel.pattern import PatternModel

DOMAINS = ("red", "purple", "yellow", "green", "orange")
CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.linspace(0.05, 0.22, 110), np.linspace(1.75, 2.25, 30)])


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    cfg = load_config(default_paths("red"))
    exp = Experiment.from_config(cfg)
    px = exp.polar_pixels(Q, CHI)
    a0 = cfg.superlattice.lattice_constant
    p0 = params_from_config(cfg)
    model = PatternModel(px, structure_from_config(cfg, (0.85 * a0, 1.05 * a0)), p0,
                         orientation_margin_deg=None, lattice_constant_range=(0.85 * a0, 1.05 * a0),
                         width_factor=1.5)
    rng = np.random.default_rng(7)
    imgs, truth = [], []
    for i, dom in enumerate(DOMAINS):
        p = params_from_config(load_config(default_paths(dom)))
        p = p.replace(inplane=p.inplane + np.radians(rng.uniform(-20, 20)),
                      tilt1=np.radians(rng.uniform(-1.5, 1.5)), tilt2=p.tilt2 + np.radians(rng.uniform(-1.5, 1.5)),
                      sl_scale=3000.0, diffuse_scale=45.0, al_scale=4.5, background=0.045)
        img = poisson_counts(np.asarray(model.image(p), float), seed=i).astype(np.float64)
        imgs.append(np.where(px.valid.reshape(img.shape), img, np.nan))
        truth.append(p)
    empty = poisson_counts(np.full(imgs[0].shape, 0.045), seed=99).astype(np.float64)
    imgs.append(np.where(px.valid.reshape(empty.shape), empty, np.nan))
    bank = build_template_bank(CHI, wavelength_A=float(exp.geometry.wavelength) * 1e10, lattice_constant=a0,
                               step_deg=1.5, cache_dir=tmp_path_factory.mktemp("bank"))
    return {"model": model, "imgs": np.stack(imgs), "truth": truth, "bank": bank, "a0": a0, "p0": p0, "px": px}


def test_search_finds_orientation_and_lattice_constant(frames):
    a0 = frames["a0"]
    res = search_orientations(frames["imgs"], Q, frames["bank"], a_range=(0.85 * a0, 1.05 * a0))
    res = refine_matches(frames["imgs"], Q, res, frames["bank"])
    assert res.has_signal[:5].all()
    assert not res.has_signal[5]                       # empty frame: no signal
    for i, p in enumerate(frames["truth"]):
        R = np.asarray(p.sl_orientation(), float)
        mis = np.degrees(orientation.misorientation_angle(R, res.orientation[i, 0]))
        # template search only (1.5 deg templates, 2 deg chi bins); the least-squares refinement of
        # the scan fit brings interior points to ~0.1 deg (tests/fits/scan/test_driver.py)
        assert mis < 5.0, (DOMAINS[i], mis)   # red (7 deg tilt) is the worst, ~4 deg
        assert abs(res.lattice_constant[i] / float(p.lattice_constant) - 1) < 0.01


def test_hot_pixel_is_masked_and_no_peak_is(frames):
    """A hot pixel (one polar bin of 5000 counts) in an empty frame is found and masked, so the
    frame keeps no signal; no bin of the five domains' SL peaks is a spike."""
    a0 = frames["a0"]
    imgs = frames["imgs"]
    bank = frames["bank"]
    mosaic = float(bank.key["mosaic_deg"])
    assert not isolated_spikes(imgs[:5], Q, mosaic_deg=mosaic).any()
    hot = imgs[5:].copy()
    c, k = 40, int(np.argmin(np.abs(Q - 0.128)))
    hot[0, c, k] = 5000.0
    spikes = isolated_spikes(hot, Q, mosaic_deg=mosaic)
    assert spikes.sum() == 1 and spikes[0, c, k]
    assert not search_orientations(hot, Q, bank, a_range=(0.85 * a0, 1.05 * a0)).has_signal[0]
    unmasked = search_orientations(hot, Q, bank, a_range=(0.85 * a0, 1.05 * a0), spike_sigma=np.inf)
    assert unmasked.has_signal[0]                        # what the hot pixel did before


def test_a_streak_along_q_is_no_ring_peak(frames):
    """A streak (30 counts on one chi row at every q) lights every ring at one chi: the ring
    significance against the chi median sees a peak, the one against the radial surroundings does not."""
    from fits.scan.search import ring_profiles, ring_significance

    a0, shells = frames["a0"], tuple(frames["bank"].shells)
    streak = frames["imgs"][5:].copy()
    streak[0, 40, :] += 30.0
    prof, level = ring_profiles(streak, Q, np.array([a0]), shells)
    assert ring_significance(prof, level).max() > 8.0
    assert localised_significance(streak, Q, np.array([[a0]]), shells).max() < 8.0
    lit = localised_significance(frames["imgs"][:5], Q, np.array([[a0]] * 5), shells)
    assert (lit.max(axis=(1, 2)) > 8.0).all()


def test_search_shape_message(frames):
    with pytest.raises(ValueError, match="expected \\(frames, 180 chi"):
        search_orientations(frames["imgs"][:, :10], Q, frames["bank"], a_range=(130, 160))


def test_kept_matches_are_distinct_and_all_refined(frames):
    a0 = frames["a0"]
    bank = frames["bank"]
    res = search_orientations(frames["imgs"][:5], Q, bank, a_range=(0.85 * a0, 1.05 * a0), n_best=4)
    step = float(bank.key["step_deg"])
    for z, a in zip(res.zone_axis, res.match_lattice_constant):
        for a_i in np.unique(a):                       # non-maximum suppression per lattice constant
            zi = z[a == a_i]
            cos = np.abs(zi @ zi.T)[np.triu_indices(len(zi), 1)]
            assert np.all(np.degrees(np.arccos(np.clip(cos, -1, 1))) >= 3 * step - 1e-6)
    np.testing.assert_array_equal(res.lattice_constant, res.match_lattice_constant[:, 0])
    ref = refine_matches(frames["imgs"][:5], Q, res, bank, n_refine=4)
    assert np.all(np.diff(ref.score, axis=1) <= 1e-12)          # re-ordered by refined score
    # each match is replaced only by a better one, so the sorted scores can only rise
    assert np.all(ref.score >= res.score - 1e-12)
    np.testing.assert_array_equal(ref.lattice_constant, ref.match_lattice_constant[:, 0])


@pytest.fixture(scope="module")
def compressed(frames):
    """Green domain at a = 0.88 a0 tilted 10 deg about e1: its 111 ring sits where 200 of 1.15 a would."""
    a0, px = frames["a0"], frames["px"]
    p = params_from_config(load_config(default_paths("green")))
    p = p.replace(lattice_constant=0.88 * a0, tilt1=np.radians(-10.0), sl_scale=3000.0, diffuse_scale=45.0,
                  al_scale=4.5, background=0.045)
    img = poisson_counts(np.asarray(frames["model"].image(p), float), seed=3).astype(np.float64)
    return np.where(px.valid.reshape(img.shape), img, np.nan)[None], p


def test_compressed_tilted_lattice_survives_the_shell_alias(frames, compressed):
    img, p = compressed
    a0, bank = frames["a0"], frames["bank"]
    a_true = float(p.lattice_constant)
    a_range = (0.85 * a0, 1.05 * a0)
    # the single radial estimate is the alias a sqrt(4/3) (measured 153.6 A for 132.4 A) ...
    assert abs(estimate_lattice_constant(img, Q, a_range)[0] / (a_true * np.sqrt(4 / 3)) - 1) < 0.01
    cand, _ = lattice_constant_candidates(img, Q, a_range)
    assert np.min(np.abs(cand[0] / a_true - 1)) < 0.01        # ... the true a is another maximum
    res = search_orientations(img, Q, bank, a_range=a_range)
    ref = refine_matches(img, Q, res, bank, n_refine=3)
    assert res.has_signal[0]
    R = np.asarray(p.sl_orientation(), float)
    for r in (res, ref):
        assert abs(r.lattice_constant[0] / a_true - 1) < 0.01
        assert abs(r.match_lattice_constant[0, 0] / a_true - 1) < 0.01
        mis = np.degrees(orientation.misorientation_angle(R, r.orientation[0, 0]))   # rad -> deg
        assert mis < 3.5, mis                          # measured 2.6 (search), 2.7 (refined) deg
    assert np.all(ref.score >= res.score - 1e-12)
    # a result without per-match lattice constants (older callers) and an explicit bank mosaic
    old = replace(res, match_lattice_constant=None)
    ref_old = refine_matches(img, Q, old, bank, n_refine=3, mosaic_deg=float(bank.key["mosaic_deg"]))
    assert np.all(np.abs(ref_old.match_lattice_constant / res.lattice_constant[:, None] - 1) < 1e-12)


def test_lattice_candidates_message_and_order(frames):
    with pytest.raises(ValueError, match="n_candidates must be at least 1, got 0"):
        lattice_constant_candidates(frames["imgs"][:1], Q, (130, 160), n_candidates=0)
    a, score = lattice_constant_candidates(frames["imgs"][:5], Q, (130, 160), n_candidates=3)
    np.testing.assert_allclose(a[:, 0], estimate_lattice_constant(frames["imgs"][:5], Q, (130, 160)))
    assert np.all(np.diff(score, axis=1) <= 0)
    for row in a:
        r = row[np.isfinite(row)]
        assert np.all(np.abs(r[:, None] / r[None, :] - 1)[np.triu_indices(r.size, 1)] >= 0.02)
    with pytest.raises(ValueError, match="n_lattice must be at least 1, got 0"):
        search_orientations(frames["imgs"][:1], Q, frames["bank"], a_range=(130, 160), n_lattice=0)


def test_neighbour_excess_matches_a_direct_loop():
    """Largest of the 8 neighbours, how many are measured, and the fewest pixels of a measured
    one, against a loop over every bin (chi periodic, q not)."""
    rng = np.random.default_rng(3)
    for shape in [(2, 7, 5), (1, 1, 4), (1, 2, 1), (3, 4, 6)]:
        e = rng.normal(size=shape)
        e[rng.random(shape) < 0.3] = -np.inf
        px = rng.integers(0, 4, shape[1:]).astype(float)
        nb, n_fin, n_min = neighbour_excess(e, px)
        B, C, Q = shape
        for b in range(B):
            for c in range(C):
                for k in range(Q):
                    vals, pix = [], []
                    for dc in (-1, 0, 1):
                        for dq in (-1, 0, 1):
                            if (dc or dq) and 0 <= k + dq < Q:
                                vals.append(e[b, (c + dc) % C, k + dq])
                                pix.append(px[(c + dc) % C, k + dq])
                    assert nb[b, c, k] == max(vals, default=-np.inf)
                    assert n_fin[b, c, k] == sum(v > -np.inf for v in vals)
                    assert n_min[c, k] == min([p for p in pix if p > 0], default=np.inf)


def test_numpy_rotation_and_median_helpers():
    phi = np.array([-170.0, -3.2, 0.0, 47.5, 179.9])
    want = np.asarray(orientation.rotation_about_axis(2, np.radians(phi)), float)
    np.testing.assert_allclose(orientation.rotation_about_beam(phi), want, rtol=0, atol=1e-15)
    x = np.random.default_rng(2).normal(size=(4, 7, 30))
    x[x > 1.0] = np.nan                                    # odd and even valid counts
    x[1, 2] = np.nan                                       # an all-NaN slice -> NaN, no warning
    for axis in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.nanmedian(x, axis=axis)
        np.testing.assert_array_equal(_nan_median(x, axis), want)


def test_ring_features_of_several_lattice_constants_per_frame(frames):
    # refine_matches extracts the rings of every match at once: (B, T) lattice constants
    imgs, shells = frames["imgs"][:3], np.array([3, 4, 8, 11])
    a = np.array([[140.0, 150.0], [152.0, 131.0], [145.0, 160.0]])
    f, m, _ = _ring_features(imgs, Q, a, shells, 0.0015)
    assert f.shape == (3, 2, 4, CHI.size)
    for t in range(2):
        f1, m1, _ = _ring_features(imgs, Q, a[:, t], shells, 0.0015)
        np.testing.assert_allclose(f[:, t], f1, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(m[:, t], m1)


def test_search_at_given_lattice_constants(frames, compressed):
    """The compressed frame searched on a 2 % grid of a (the neighbour passes' re-search): the
    best match sits at the grid value nearest the true a, not at the radial alias."""
    from fits.scan.neighbours import lattice_grid

    img, p = compressed
    a_true, bank = float(p.lattice_constant), frames["bank"]
    a_range = (0.85 * frames["a0"], 1.05 * frames["a0"])
    grid = lattice_grid(a_range, 0.02)
    res = search_orientations(img, Q, bank, a_range=a_range, lattice_constants=grid[None, :])
    assert abs(res.match_lattice_constant[0, 0] / a_true - 1) <= 0.011
    assert set(np.round(res.match_lattice_constant[0], 6)) <= set(np.round(grid, 6))
    mis = np.degrees(orientation.misorientation_angle(np.asarray(p.sl_orientation(), float), res.orientation[0, 0]))
    assert mis < 5.0, mis
    with pytest.raises(ValueError, match=r"lattice_constants has shape \(3,\); expected \(1, N\)"):
        search_orientations(img, Q, bank, a_range=a_range, lattice_constants=grid[:3])


def test_radial_surroundings_follow_a_streak_not_a_peak():
    """A row constant along q (a streak) has its own value around every point; a narrow peak
    along q (sigma 0.0015 1/A) has the background around its centre; bins without pixels are
    skipped and the mean is weighted by the pixels (its variance is mean / n)."""
    from fits.scan.search import radial_surroundings

    q = np.arange(0.05, 0.15, 0.0005)
    img = np.zeros((1, 2, q.size))
    img[0, 0] = 7.0                                                        # the streak
    img[0, 1] = 1.0 + 40.0 * np.exp(-0.5 * ((q - 0.1) / 0.0015) ** 2)    # a peak on a background of 1
    mean, n = radial_surroundings(img, q, 4 * 0.0015, 0.0015)
    k = int(np.argmin(np.abs(q - 0.1)))
    assert np.allclose(mean[0, 0, 20:-20], 7.0)
    assert mean[0, 1, k] == pytest.approx(1.0, abs=0.5) and n[0, 1, k] == 14
    holes = img.copy()
    holes[..., ::2] = np.nan                                               # every other bin without pixels
    pixels = np.where(np.arange(q.size) % 4 == 1, 3.0, 1.0)
    m2, n2 = radial_surroundings(holes, q, 4 * 0.0015, 0.0015, pixels)
    assert np.allclose(m2[0, 0, 20:-20], 7.0)
    assert np.all(n2[0, 0, 20:-20] >= 6) and np.isfinite(m2[0, 1, k])
