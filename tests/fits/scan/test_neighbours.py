"""Tests of fits/scan/neighbours.py: doubtful frames refitted from their scan neighbours, the
lattice-constant grid re-search, and the SL-gain gate that keeps noise and WAXS-only frames unfitted."""
from dataclasses import replace

import h5py
import numpy as np
import pytest

from fits.scan.driver import fit_scan
from fits.scan.neighbours import FramePoints, lattice_grid, neighbour_pass
from fits.scan.results import read_fits
from fits.scan.settings import FitSettings, settings_from_config
from fits.scan.setup import FitSetup
from fits.scan.starts import Start, params_from_row, refine_starts
from fits.status import FitStatus
from xmodel import orientation
from xmodel.config import default_paths, load_config
from xmodel.noise import poisson_counts
from xmodel.parameters import params_from_config

CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])
#: as `xmodel fit --set fit.batch=2 ...` gives them; neighbour_passes=0: the passes are run by hand
SETTINGS = settings_from_config(load_config(default_paths("red"), [
    "fit.batch=2", "fit.max_iter=40", "fit.n_candidates=4", "fit.neighbour_passes=0"]))


def test_lattice_grid_spans_the_range_in_relative_steps():
    g = lattice_grid((127.9, 158.0), 0.02)
    assert g[0] == pytest.approx(127.9) and g[-1] <= 158.0 < g[-1] * 1.02
    np.testing.assert_allclose(g[1:] / g[:-1], 1.02)
    assert lattice_grid((150.0, 150.0), 0.02).tolist() == [150.0]
    with pytest.raises(ValueError, match="a_min <= a_max"):
        lattice_grid((0.0, 150.0), 0.02)


def test_frame_points_keep_float32_polar_images_exactly_and_others_as_float64():
    """`FramePoints`: the neighbour passes keep only the doubtful frames' fit points, float32 while
    every batch is exactly float32 (reduced polar images are), float64 once one is not."""
    rng = np.random.default_rng(0)
    polar = rng.poisson(3.0, (5, 4, 6)).astype(np.float32).astype(np.float64)
    polar[1, 2, 3] = np.nan
    index = np.array([0, 3, 7, 15, 22])
    pts = FramePoints([10, 11, 12, 13, 14], index)
    pts.put(0, pts.of_polar(polar[:3]))
    pts.put(3, pts.of_polar(polar[3:]))
    assert pts.values.dtype == np.float32
    want = polar.reshape(5, -1)[:, index]
    np.testing.assert_array_equal(pts.rows([13, 11]), want[[3, 1]])
    assert pts.rows([11]).dtype == np.float64 and np.isnan(pts.rows([11])[0, 3])
    pts.put(4, want[4:] + 1e-9)                          # not a float32 value: nothing is rounded
    assert pts.values.dtype == np.float64
    np.testing.assert_array_equal(pts.rows([14, 10]), np.stack([want[4] + 1e-9, want[0]]))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two neighbouring red frames (Poisson copies of one pattern), fitted without neighbour passes."""
    tmp = tmp_path_factory.mktemp("neighbours")
    cfg = load_config(default_paths("red"))
    setup = FitSetup.build(cfg, Q, CHI, None, SETTINGS)
    p = params_from_config(cfg).replace(sl_scale=3000.0, diffuse_scale=45.0, al_scale=20.0, background=0.05)
    mu = np.asarray(setup.model(p), float)
    imgs = []
    for seed in (0, 11):
        img = np.full(CHI.size * Q.size, np.nan)
        img[setup.index] = poisson_counts(mu, seed=seed)
        imgs.append(img.reshape(CHI.size, Q.size))
    # the same sample without SL peaks: diffuse, background and the NCs' AL peaks only
    waxs = np.full(CHI.size * Q.size, np.nan)
    waxs[setup.index] = poisson_counts(np.asarray(setup.model(p.replace(sl_scale=0.0)), float), seed=3)
    path = tmp / "pair.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"] = np.stack(imgs).astype(np.float32)
        g["q"], g["chi"] = Q, CHI
        g["positions"] = np.array([[0.0, 0.0], [0.0, 1.0]])
    return {"tmp": tmp, "cfg": cfg, "setup": setup, "truth": p, "path": path, "waxs": waxs.reshape(CHI.size, Q.size)}


def _fitted(pair, name):
    """A fresh copy of the pair's scan fit (no neighbour passes) to corrupt."""
    out = pair["tmp"] / name
    fit_scan(pair["path"], pair["cfg"], out, SETTINGS, progress=False, setup=pair["setup"])
    return out


def _without_fit(pair, name):
    """A fresh copy of the pair's scan fit whose second frame has lost its fit (no signal)."""
    out = _fitted(pair, name)
    with h5py.File(out, "a") as f:
        g = f["entry/fits"]
        g["status"][1] = FitStatus.NO_SIGNAL.code
        for k in ("objective", "lattice_constant", "orientation_matrix", "sl_scale"):
            g[k][1] = np.nan
    return out


def _mis_deg(p, R) -> float:
    return float(np.degrees(orientation.misorientation_angle(np.asarray(p.sl_orientation(), float), R)))


def test_set_fit_keys_give_the_settings_of_these_runs():
    """The runs below take their settings from --set fit.KEY=VALUE (`SETTINGS`)."""
    assert SETTINGS == FitSettings.of(batch=2, max_iter=40, n_candidates=4, neighbour_passes=0)


def test_neighbour_pass_repairs_a_frame_from_its_neighbour(pair):
    """The second frame's fit is replaced by a wrong one (20 deg off, not ok): the neighbour pass
    refits it from the first frame's orientation."""
    setup, p = pair["setup"], pair["truth"]
    out = _fitted(pair, "repair.h5")
    with h5py.File(out, "r") as f:          # fit.neighbour_passes=0 changed the run: no pass ran
        assert f["entry/fits"].attrs["neighbour_passes_done"] == 0
        assert '"neighbour_passes": 0' in f["entry/fits"].attrs["settings"]
    wrong = orientation.rotation_about_axis(0, np.radians(20.0)) @ np.asarray(p.sl_orientation(), float)
    with h5py.File(out, "a") as f:
        g = f["entry/fits"]
        g["orientation_matrix"][1] = np.asarray(wrong, float)
        g["status"][1] = FitStatus.MIXED.code
        g["objective"][1] = 1e12
    assert neighbour_pass(out, pair["path"], setup, SETTINGS, progress=False, research=False) == [1]
    fits = read_fits(out)
    assert _mis_deg(p, fits["orientation_matrix"][1]) < 2.5, fits["message"][1]   # coarse test grid
    assert fits["status"][1] == FitStatus.OK.code and "neighbour frame 0" in fits["message"][1]
    assert fits["objective"][1] < 1e12
    # nothing left to repair: a second pass changes nothing
    assert neighbour_pass(out, pair["path"], setup, SETTINGS, progress=False) == []
    assert neighbour_pass(out, pair["path"], setup, SETTINGS, progress=False, near=np.array([1])) == []


def test_research_repairs_a_frame_whose_neighbour_is_wrong_too(pair):
    """Both fits corrupted (the ok neighbour 45 deg off, the frame itself 20 deg off with an
    aliased a): only the grid re-search can find the frame's orientation and lattice constant."""
    setup, p = pair["setup"], pair["truth"]
    out = _fitted(pair, "research.h5")
    R = np.asarray(p.sl_orientation(), float)
    with h5py.File(out, "a") as f:
        g = f["entry/fits"]
        g["orientation_matrix"][0] = orientation.rotation_about_axis(2, np.radians(45.0)) @ \
            orientation.rotation_about_axis(0, np.radians(30.0)) @ R
        g["orientation_matrix"][1] = orientation.rotation_about_axis(0, np.radians(20.0)) @ R
        g["lattice_constant"][1] = float(p.lattice_constant) * np.sqrt(4.0 / 3.0)
        g["status"][1] = FitStatus.MIXED.code
        g["objective"][1] = 1e12
    assert 1 in neighbour_pass(out, pair["path"], setup, SETTINGS, progress=False)
    fits = read_fits(out)
    assert "searched again" in fits["message"][1], fits["message"][1]
    assert _mis_deg(p, fits["orientation_matrix"][1]) < 2.5
    assert fits["lattice_constant"][1] == pytest.approx(float(p.lattice_constant), rel=0.01)
    assert fits["status"][1] == FitStatus.OK.code and fits["configuration"][1] == "conf1"


def test_a_refinement_that_cannot_beat_the_frame_is_given_up_and_none_that_can(pair):
    """The early stop of the neighbour passes (`RefineSettings.give_up_after`, ``give_up_factor``,
    ``give_up_gap``; `fits.batch.GiveUp`): on both frames, starts 1, 15, 30 and 45 deg off the
    truth are refined with the frame's fitted deviance plus the replace margin as the target, and
    without one. Every start that ends below the target without the early stop ends there with
    it, bit for bit; a start that is given up could not have got below it, and stops sooner. The
    test's share of the target is lower than the default (which gives up little on these small
    frames) so that the test gives some start up."""
    settings = SETTINGS.replace(give_up_gap=0.25)
    setup, p = pair["setup"], pair["truth"]
    fits = read_fits(_fitted(pair, "give_up.h5"))
    with h5py.File(pair["path"], "r") as f:
        obs = f["entry/reduction/polar"][()].reshape(2, -1)[:, setup.index].astype(float)
    R = np.asarray(p.sl_orientation(), float)
    starts = [Start(frame=i, params=params_from_row(fits, i, setup, SETTINGS).replace(
        base_orientation=orientation.rotation_about_axis(axis, np.radians(deg)) @ R),
        stop_above=float(fits["objective"][i] + SETTINGS.neighbours.replace_margin))
        for i in (0, 1) for axis, deg in ((0, 1.0), (0, 15.0), (2, 30.0), (1, 45.0))]
    free = refine_starts(setup, obs, [replace(s, stop_above=np.inf) for s in starts], settings)
    held = refine_starts(setup, obs, starts, settings)
    winners = [n for n, (s, c) in enumerate(zip(starts, free)) if c.status.success and c.objective < s.stop_above]
    given_up = [n for n, c in enumerate(held) if c.fit.gave_up[c.row]]
    assert winners and given_up and not set(winners) & set(given_up)
    for n in winners:
        assert held[n].objective == free[n].objective and held[n].status is free[n].status
        np.testing.assert_array_equal(held[n].orientation, free[n].orientation)
    for n in given_up:
        assert free[n].objective >= starts[n].stop_above
        assert held[n].fit.n_iter[held[n].row] < free[n].fit.n_iter[free[n].row]
        assert held[n].status is FitStatus.NOT_CONVERGED and "given up" in held[n].fit.messages[held[n].row]


def test_a_later_pass_reuses_the_refinements_of_unchanged_neighbours(pair, monkeypatch):
    """Frame 1 is doubtful (marked mixed, its deviance made unbeatable) and its neighbour's
    orientation 2 deg off its own: the start from it is refined once; a later pass with the same
    memo reuses that refinement while the neighbour's fit is unchanged, and refines again once it
    changed."""
    import fits.scan.neighbours as nb

    setup = pair["setup"]
    out = _fitted(pair, "memo.h5")
    with h5py.File(out, "a") as f:
        g = f["entry/fits"]
        g["orientation_matrix"][0] = orientation.rotation_about_axis(0, np.radians(2.0)) @ g["orientation_matrix"][0]
        g["status"][1] = FitStatus.MIXED.code
        g["objective"][1] = 1.0
    refined = []

    def counting(setup, obs, starts, settings, **kw):
        refined.append(len(starts))
        return refine_starts(setup, obs, starts, settings, **kw)

    monkeypatch.setattr(nb, "refine_starts", counting)
    memo: dict = {}
    first = neighbour_pass(out, pair["path"], setup, SETTINGS, progress=False, research=False, memo=memo)
    again = neighbour_pass(out, pair["path"], setup, SETTINGS, progress=False, research=False, memo=memo)
    assert first == again == [] and refined == [1, 0] and list(memo) == [(1, 0)]
    with h5py.File(out, "a") as f:
        f["entry/fits/lattice_constant"][0] *= 1.001
    neighbour_pass(out, pair["path"], setup, SETTINGS, progress=False, research=False, memo=memo)
    assert refined == [1, 0, 1]


def test_a_frame_without_sl_peaks_gets_no_fit_from_its_neighbour(pair, tmp_path):
    """A frame with the NCs' AL peaks but no SL peaks, beside a fitted frame and made to look
    doubtful (ring significance 5): the SL deviance gain keeps it without a fit."""
    setup = pair["setup"]
    path = tmp_path / "waxs.h5"
    with h5py.File(pair["path"], "r") as f, h5py.File(path, "w") as g:
        r = g.create_group("entry/reduction")
        r["polar"] = np.stack([f["entry/reduction/polar"][0], pair["waxs"].astype(np.float32)])
        for k in ("q", "chi", "positions"):
            r[k] = f["entry/reduction"][k][()]
    out = tmp_path / "fits.h5"
    fit_scan(path, pair["cfg"], out, SETTINGS, progress=False, setup=setup)
    fits = read_fits(out)
    assert fits["status"][1] == FitStatus.NO_SIGNAL.code
    with h5py.File(out, "a") as f:
        f["entry/fits/significance"][1] = 5.0
    assert neighbour_pass(out, path, setup, SETTINGS, progress=False) == []
    fits = read_fits(out)
    assert fits["status"][1] == FitStatus.NO_SIGNAL.code and not np.isfinite(fits["objective"][1])


def test_a_near_tie_goes_to_the_fit_that_agrees_with_the_neighbours(pair):
    """The second frame's fit is made a near tie of the truth: 20 deg off, its deviance only 5 above
    the true fit's (less than the replace margin, `NeighbourSettings.replace_margin`). The deviance alone would keep it; the grain's
    continuity replaces it with the fit from the neighbour's orientation."""
    REPLACE_MARGIN = SETTINGS.neighbours.replace_margin

    setup, p = pair["setup"], pair["truth"]
    out = _fitted(pair, "tie.h5")
    fits = read_fits(out)
    assert fits["status"][1] == FitStatus.OK.code
    wrong = orientation.rotation_about_axis(0, np.radians(20.0)) @ np.asarray(p.sl_orientation(), float)
    with h5py.File(out, "a") as f:
        g = f["entry/fits"]
        g["orientation_matrix"][1] = np.asarray(wrong, float)
        g["objective"][1] = fits["objective"][1] + REPLACE_MARGIN / 2
    assert neighbour_pass(out, pair["path"], setup, SETTINGS, progress=False, research=False) == [1]
    fits = read_fits(out)
    assert _mis_deg(p, fits["orientation_matrix"][1]) < 2.5 and "neighbour frame 0" in fits["message"][1]


def test_neighbours_of_a_snake_scan_with_encoder_jitter_are_its_grid_neighbours():
    """Positions as a P10 scan file gives them (snake order, 5 nm encoder jitter on 0.25 um steps):
    every frame has the frames at the four adjacent grid points among its neighbours, whatever
    the acquisition order, and none farther than 1.5 steps. (The diagonal points, 1.41 steps
    away, sit close to the 1.5-step radius and may drop out under jitter.)"""
    from fits.scan.neighbours import neighbours
    from xmodel.positions import acquisition_order, grid_positions

    shape, step = (5, 6), 0.25
    pos = grid_positions(shape, step, "snake")
    pos = pos + np.random.default_rng(3).normal(0.0, 0.005, pos.shape)
    rc = np.argwhere(np.ones(shape, bool))[acquisition_order(shape, "snake")]
    for i, nb in enumerate(neighbours(pos, 1.5)):
        dist = np.hypot(*(rc - rc[i]).T)
        adjacent = set(np.flatnonzero(dist == 1.0).tolist())
        assert adjacent <= set(nb.tolist()) and np.all(dist[nb] <= 1.5), (i, rc[i])


def _streak_and_true_frame(setup, truth, model, seeds):
    """Two frames and their fits by the linear scales of ``model``'s terms: the NCs' AL peaks with
    a streak along q (a row of chi, 20 counts per pixel at every q < 1 1/A) through ``model``'s
    brightest SL spot, and the true frame of ``truth``. Returns (obs, fitted params, scales)."""
    from fits.scan.linear import COMPONENTS, component_images, linear_scales
    from fits.scan.starts import stack_params

    sl = np.asarray(component_images(setup.model, stack_params([model])), float)[0, COMPONENTS.index("sl_scale")]
    c = int(np.argmax(np.bincount(setup.index // Q.size, weights=sl, minlength=CHI.size)))
    row = (setup.index // Q.size == c) & (Q[setup.index % Q.size] < 1.0)
    mu = np.asarray(setup.model(truth.replace(sl_scale=0.0)), float) + np.where(row, 20.0, 0.0)
    obs = np.stack([poisson_counts(mu, seed=seeds[0]),
                    poisson_counts(np.asarray(setup.model(truth), float), seed=seeds[1])]).astype(float)
    comps = np.asarray(component_images(setup.model, stack_params([model, model])), float)
    scales, _ = linear_scales(comps, obs, np.ones(obs.shape, bool))
    return obs, stack_params([model.replace(**dict(zip(COMPONENTS, s))) for s in scales]), scales


def test_an_sl_spot_on_a_streak_gains_nothing_a_real_one_keeps_its_gain(pair, monkeypatch):
    """A frame of the NCs' AL peaks and a streak along q (a row of chi, 20 counts per pixel at every
    q) through the brightest SL spot of the true orientation, fitted by the linear scales at that
    orientation: the SL term takes up part of the streak and gains far more than `sl_min_gain`
    against the model without it, but nothing once both follow the streak's radial surroundings
    (`term_gains`); the true frame's SL gain stays far above the gate."""
    import fits.scan.neighbours as nb
    from fits.scan.linear import COMPONENTS

    setup, p = pair["setup"], pair["truth"]
    gate = SETTINGS.evidence.sl_min_gain
    obs, fitted, scales = _streak_and_true_frame(setup, p, p, seeds=(5, 6))
    assert scales[0, COMPONENTS.index("sl_scale")] > 0           # the SL spot takes up part of the streak
    local, _ = nb.term_gains(setup, fitted, obs)
    monkeypatch.setattr(nb, "radial_surroundings", lambda img, *a, **k: (np.full(img.shape, np.nan), np.zeros(img.shape)))
    plain, _ = nb.term_gains(setup, fitted, obs)
    assert plain[0] > gate > local[0], (plain, local)
    assert local[1] > 10 * gate and local[1] > 0.8 * plain[1], (plain, local)


def test_a_widened_sl_term_is_judged_by_the_surroundings_of_its_own_width(pair, monkeypatch):
    """With the SL radial width refined, the surroundings lie 3-5 of the frame's own sigmas away
    (a wide term would otherwise cover its own surroundings): the surroundings follow each frame's
    width, an SL term widened to the fit's ceiling over a streak gains less than the gate and the
    true frame keeps its gain. The placement is what this test pins: at this grid's ceiling (1.5
    times the config's width) the gain stays under the gate with the config's surroundings too; on
    the realistic twin, whose widths run to 2.5 times, those let 16 empty frames through
    (docs/validation.md)."""
    import fits.scan.neighbours as nb
    from fits.scan.starts import stack_params

    setup, p = pair["setup"], pair["truth"]
    gate = SETTINGS.evidence.sl_min_gain
    wide = p.replace(sl_radial_width=setup.width_factor * float(p.sl_radial_width))
    obs, fitted, _ = _streak_and_true_frame(setup, p, wide, seeds=(7, 8))
    calls = []
    surroundings = nb.radial_surroundings

    def spy(img, q, offset, half_width, pixels=None):
        calls.append((img.shape[0], offset, half_width))
        return surroundings(img, q, offset, half_width, pixels)

    monkeypatch.setattr(nb, "radial_surroundings", spy)
    local, _ = nb.term_gains(setup, fitted, obs)
    w = float(wide.sl_radial_width)
    assert len(calls) == 1 and calls[0][1:] == pytest.approx((4 * w, w))
    assert gate > local[0] and local[1] > 10 * gate, local
    # a batch of two widths: each frame at its own
    calls.clear()
    nb.term_gains(setup, stack_params([p.replace(sl_scale=1.0), wide.replace(sl_scale=1.0)]), obs)
    sigma_q = SETTINGS.search.ring_sigma_q
    held = max(sigma_q, float(p.sl_radial_width))
    np.testing.assert_allclose(sorted(c[1:] for c in calls), [(4 * held, held), (4 * w, w)], rtol=1e-6)


def test_a_frame_without_a_fit_takes_none_whose_sl_width_is_on_its_ceiling(pair, monkeypatch):
    """A frame left without a fit is given its neighbour's when the SL term gains enough; not when
    the fit's SL radial width ends on its ceiling (a lower bound of the width, by which the gain's
    radial surroundings are placed). Here the ceiling is put at the config's width, where the
    held width stays."""
    import shutil

    import fits.scan.neighbours as nb

    setup, p = pair["setup"], pair["truth"]
    assert nb.sl_width_ceiling(setup, SETTINGS) == np.inf           # held widths: no ceiling
    results = {}
    fitted = _without_fit(pair, "without.h5")
    for name, ceiling in (("admitted.h5", None), ("refused.h5", float(p.sl_radial_width))):
        out = shutil.copy(fitted, pair["tmp"] / name)
        if ceiling is not None:
            monkeypatch.setattr(nb, "sl_width_ceiling", lambda *a, c=ceiling: c)
        results[name] = neighbour_pass(out, pair["path"], setup, SETTINGS, progress=False, research=False)
        results[name + " status"] = int(read_fits(out)["status"][1])
    assert results["admitted.h5"] == [1] and results["admitted.h5 status"] == FitStatus.OK.code
    assert results["refused.h5"] == [] and results["refused.h5 status"] == FitStatus.NO_SIGNAL.code


def test_a_refused_research_fit_does_not_keep_a_frame_from_its_neighbours_start(pair, monkeypatch):
    """A frame without a fit whose re-search returns a fit far below every other in deviance but
    without the SL term the frame needs (its SL scale zero: no SL gain) still takes its neighbour's
    start: the SL-gain rule sorts the candidates before the deviance does, so the refused fit
    neither wins the frame nor makes the neighbour start give up below its deviance."""
    import shutil

    import fits.scan.neighbours as nb

    real = nb.fit_frames

    def sl_free_and_low(*args, **kw):
        rs = real(*args, **kw)
        rs["sl_scale"] = np.zeros_like(rs["sl_scale"])
        rs["objective"] = np.full_like(rs["objective"], 1.0)
        rs["status"] = np.full_like(rs["status"], FitStatus.OK.code)
        return rs

    monkeypatch.setattr(nb, "fit_frames", sl_free_and_low)
    fitted = _without_fit(pair, "refused_research.h5")
    out = shutil.copy(fitted, pair["tmp"] / "refused_research_pass.h5")
    assert neighbour_pass(out, pair["path"], pair["setup"], SETTINGS, progress=False, research=True) == [1]
    fits = read_fits(out)
    assert fits["status"][1] == FitStatus.OK.code and "started from neighbour frame 0" in fits["message"][1]
    assert fits["sl_scale"][1] > 0 and fits["objective"][1] > 1.0
    assert _mis_deg(pair["truth"], fits["orientation_matrix"][1]) < 2.5
