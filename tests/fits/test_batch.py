"""Batched Levenberg-Marquardt: a scan of frames with a broken and an empty one finishes."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fits.batch import fit_batch
from fits.parameters import pack
from fits.pattern_fit import fit_pattern
from fits.status import FitStatus
from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.noise import poisson_counts
from xmodel.parameters import FWHM_PER_SIGMA, Structure, params_from_config
from xmodel.pattern import PatternModel

VARY = ["lattice_constant", "sl_scale", "diffuse_scale", "al_scale", "disorder_deg", "inplane_deg",
        "tilt1_deg", "tilt2_deg", "background"]
N_FRAMES, BROKEN, EMPTY = 6, 3, 4


@pytest.fixture(scope="module")
def scan():
    """Six synthetic frames (1e6 counts) on a small polar grid; frame 3 has a NaN count on a
    valid bin, frame 4 is background only. The grid equals tests/fits/test_pattern_fit.py's
    so that the compiled model is shared through the persistent cache. The tilts start at half
    their true values: from 0 the sign of a tilt is only weakly determined (through the
    curvature of the Ewald sphere) and is the global search's job."""
    cfg = load_config(default_paths("yellow"))
    ex = Experiment.from_config(cfg, binning=8)
    a0 = cfg.superlattice.lattice_constant
    a_range = (0.9 * a0, 1.1 * a0)
    st = Structure.build(lattice_constant=a0, q_max_sl=0.16, q_max_al=2.3, lattice_constant_range=a_range)
    p = params_from_config(cfg, dtype=jnp.float64).replace(sl_mosaic=np.radians(3.0))
    q = np.concatenate([np.linspace(0.065, 0.155, 45), np.linspace(1.75, 2.2, 25)])
    px = ex.polar_pixels(q, np.linspace(-120, 30, 40))
    model = PatternModel(px, st, p, dtype=jnp.float64, orientation_margin_deg=None,
                         lattice_constant_range=a_range, width_factor=1.5)
    weight = px.valid * 4.0
    rng = np.random.default_rng(0)
    truths, frames, starts = [], [], []
    for i in range(N_FRAMES):
        t = p.replace(lattice_constant=147.5 + i, inplane=p.inplane + np.radians(rng.uniform(-1, 1)),
                      tilt1=np.radians(rng.uniform(-2, 2)), tilt2=np.radians(rng.uniform(-2, 2)),
                      disorder=np.radians(rng.uniform(10, 20)) / FWHM_PER_SIGMA, background=0.5)
        s = 1e6 / float(np.sum(np.asarray(model(t)) * weight))
        t = t.replace(sl_scale=t.sl_scale * s, diffuse_scale=t.diffuse_scale * s, al_scale=t.al_scale * s,
                      background=t.background * s)
        if i == EMPTY:
            t = t.replace(sl_scale=0.0, diffuse_scale=0.0, al_scale=0.0)
        counts = poisson_counts(np.asarray(model(t)) * weight, seed=i).astype(float)
        frame = counts / np.where(weight > 0, weight, 1.0)
        frame[weight == 0] = np.nan                      # as the reduction writes empty bins
        truths.append(t)
        frames.append(frame)
        starts.append(t.replace(lattice_constant=150.0, inplane=p.inplane, tilt1=t.tilt1 / 2, tilt2=t.tilt2 / 2,
                                disorder=np.radians(15.0) / FWHM_PER_SIGMA, sl_scale=t.sl_scale * 0.8 + 1,
                                al_scale=t.al_scale * 1.2 + 1, diffuse_scale=t.diffuse_scale + 1))
    frames = np.array(frames)
    frames[BROKEN, np.flatnonzero(weight)[10]] = np.nan
    init = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *starts)
    weights = np.tile(weight, (N_FRAMES, 1))
    fit = fit_batch(frames, weights, model, init, VARY)
    return model, frames, weights, init, truths, fit


def test_broken_and_empty_frames_are_recorded_and_the_batch_finishes(scan):
    _, _, _, _, _, fit = scan
    assert fit.status[BROKEN] is FitStatus.BAD_DATA
    assert "frame 3 has 1 non-finite or negative counts" in fit.messages[BROKEN]
    assert fit.status[EMPTY] is FitStatus.NO_SIGNAL
    assert "no-signal threshold" in fit.messages[EMPTY]
    good = [i for i in range(N_FRAMES) if i not in (BROKEN, EMPTY)]
    assert all(fit.status[i] is FitStatus.OK for i in good), fit.messages
    assert list(fit.codes) == [s.code for s in fit.status]
    for name in VARY:                                    # never a NaN
        assert not np.any(np.isnan(fit.values[name])) and not np.any(np.isnan(fit.stderr[name]))
    assert np.isinf(fit.objective[BROKEN]) and np.all(np.isfinite(fit.objective[good]))
    assert fit.values["lattice_constant"][BROKEN] == 150.0   # the start, untouched
    assert fit.params.lattice_constant.shape == (N_FRAMES,)


def test_good_frames_recover_known_parameters(scan):
    _, _, weights, _, truths, fit = scan
    tol = {"lattice_constant": 0.03, "inplane_deg": 0.03, "tilt1_deg": 0.25, "tilt2_deg": 0.25, "disorder_deg": 1.0}
    n = int((weights[0] > 0).sum())
    for i in (0, 1, 2, 5):
        true = dict(zip(VARY, np.asarray(pack(truths[i], VARY))))
        for name, t in tol.items():
            assert abs(fit.values[name][i] - true[name]) < t, (i, name)
            assert abs(fit.values[name][i] - true[name]) < 5 * fit.stderr[name][i], (i, name)
        assert abs(fit.objective[i] - n) < 6 * np.sqrt(2 * n)
        assert fit.deviance_gain[i] > 1e4 and 1 <= fit.n_iter[i] < 50


def test_batch_agrees_with_lmfit_on_the_same_frame(scan):
    model, frames, weights, init, _, fit = scan
    one = jax.tree_util.tree_map(lambda x: x[0], init)
    ref = fit_pattern(np.where(weights[0] > 0, frames[0], 0.0), weights[0], model, one, VARY)
    assert fit.objective[0] == pytest.approx(ref.objective, rel=1e-8, abs=1e-3)
    for name in VARY:
        assert fit.values[name][0] == pytest.approx(ref.values[name], abs=0.05 * ref.stderr[name]), name
        assert fit.stderr[name][0] == pytest.approx(ref.stderr[name], rel=1e-3), name


def test_not_converged_at_bound_and_argument_errors(scan):
    model, frames, weights, init, _, _ = scan
    # same (B, P) shape as the fixture's batch: max_iter and bounds are traced, no recompiling
    fit = fit_batch(frames, weights, model, init, VARY, max_iter=1)
    assert [fit.status[i] for i in (0, 1, 2, 5)] == [FitStatus.NOT_CONVERGED] * 4
    assert fit.status[BROKEN] is FitStatus.BAD_DATA and "max_iter=1" in fit.messages[0]
    fit = fit_batch(frames, weights, model, init, VARY, bounds={"lattice_constant": (140.0, 148.0)})
    assert fit.status[1] is FitStatus.AT_BOUND and fit.values["lattice_constant"][1] == pytest.approx(148.0)
    assert "lattice_constant" in fit.messages[1]
    sub = jax.tree_util.tree_map(lambda x: x[:2], init)
    with pytest.raises(ValueError, match=r"init holds parameters for \(6,\) frames but observed has 2"):
        fit_batch(frames[:2], weights[:2], model, init, VARY)
    with pytest.raises(ValueError, match="must have the same shape"):
        fit_batch(frames[:2], weights[:1], model, sub, VARY)
    with pytest.raises(ValueError, match=r"bounds given for 'radius', which does not vary"):
        fit_batch(frames[:2], weights[:2], model, sub, VARY, bounds={"radius": (10, 40)})
    with pytest.raises(KeyError, match="unknown fit parameter 'a'"):
        fit_batch(frames[:2], weights[:2], model, sub, ["a"])
