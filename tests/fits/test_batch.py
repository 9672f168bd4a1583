"""Batched Levenberg-Marquardt: a scan of frames with a broken and an empty one finishes."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fits.batch import GiveUp, fit_batch
from fits.parameters import pack
from fits.pattern_fit import fit_pattern
from fits.status import FitStatus
from xmodel.noise import poisson_counts
from xmodel.parameters import FWHM_PER_SIGMA

VARY = ["lattice_constant", "sl_scale", "diffuse_scale", "al_scale", "disorder_deg", "inplane_deg",
        "tilt1_deg", "tilt2_deg", "background"]
N_FRAMES, BROKEN, EMPTY = 6, 3, 4


@pytest.fixture(scope="module")
def scan(yellow_polar_model):
    """Six synthetic frames (1e6 counts) on a small polar grid; frame 3 has a NaN count on a
    valid bin, frame 4 is background only. The grid is the shared ``yellow_polar_model``
    (tests/fits/conftest.py). The tilts start at half their true values: from 0 the sign of a
    tilt is only weakly determined (through the curvature of the Ewald sphere) and is the global
    search's job."""
    model, px, p = yellow_polar_model
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
    # both scale the Fisher information by the same dispersion rule (fits.batch.covariance_scale)
    assert fit.dispersion[0] == pytest.approx(ref.dispersion, rel=1e-6)
    for name in VARY:
        assert fit.values[name][0] == pytest.approx(ref.values[name], abs=0.05 * ref.stderr[name]), name
        assert fit.stderr[name][0] == pytest.approx(ref.stderr[name], rel=1e-3), name


def test_dispersion_scales_the_covariance_and_the_no_signal_test(scan):
    """Poisson frames have a dispersion of 1 within its sampling error; frames with three times the
    Poisson variance have 3, and their standard errors are sqrt(3) times the unscaled ones."""
    model, frames, weights, init, truths, fit = scan
    n = int((weights[0] > 0).sum())
    good = [0, 1, 2, 5]
    # X^2 / (n - p) of Poisson noise: 1 +- sqrt(2 / (n - p))
    assert np.all(np.abs(fit.dispersion[good] - 1.0) < 5 * np.sqrt(2.0 / (n - len(VARY))))
    assert np.isnan(fit.dispersion[BROKEN])
    np.testing.assert_allclose(np.sqrt(np.diagonal(fit.covariance[good], axis1=1, axis2=2)),
                               np.stack([fit.stderr[k][good] for k in VARY], axis=1), rtol=1e-12)
    assert fit.names == tuple(VARY)
    rng = np.random.default_rng(5)
    w = weights[:2]
    mu = np.stack([np.asarray(model(t)) for t in truths[:2]])
    # counts per bin w d with mean w mu and variance 3 w mu: three times a Poisson count of w mu / 3
    counts = 3.0 * rng.poisson(mu * w / 3.0)
    over = np.where(w > 0, counts / np.where(w > 0, w, 1.0), np.nan)
    sub = jax.tree_util.tree_map(lambda x: x[:2], init)
    f = fit_batch(over, w, model, sub, VARY)
    assert all(s is FitStatus.OK for s in f.status), f.messages
    np.testing.assert_allclose(f.dispersion, 3.0, rtol=0.1)
    np.testing.assert_array_equal(f.effective_dispersion(), f.dispersion)
    for name in ("lattice_constant", "inplane_deg", "disorder_deg"):
        # the unscaled errors of the overdispersed frames are those of the Poisson frames
        unscaled = f.stderr[name] / np.sqrt(f.dispersion)
        np.testing.assert_allclose(unscaled, fit.stderr[name][:2] / np.sqrt(fit.effective_dispersion()[:2]),
                                   rtol=0.1)
    # the no-signal test divides the deviance gain by the dispersion
    tight = fit_batch(over, w, model, sub, VARY, no_signal_deviance=float(f.deviance_gain[0]) / 2)
    assert tight.status[0] is FitStatus.NO_SIGNAL and "divided by the dispersion" in tight.messages[0]


def test_not_converged_at_bound_and_argument_errors(scan):
    model, frames, weights, init, _, _ = scan
    # same (B, P) shape as the fixture's batch: max_iter and bounds are traced, no recompiling
    fit = fit_batch(frames, weights, model, init, VARY, max_iter=1)
    assert [fit.status[i] for i in (0, 1, 2, 5)] == [FitStatus.NOT_CONVERGED] * 4
    assert fit.status[BROKEN] is FitStatus.BAD_DATA and "max_iter=1" in fit.messages[0]
    fit = fit_batch(frames, weights, model, init, VARY, bounds={"lattice_constant": (140.0, 148.0)})
    assert fit.status[1] is FitStatus.AT_BOUND and fit.values["lattice_constant"][1] == pytest.approx(148.0)
    assert "lattice_constant" in fit.messages[1]



def test_a_width_at_its_floor_is_a_measurement_and_at_its_ceiling_a_bound(scan, monkeypatch):
    """A parameter whose table minimum is its physical floor (a peak width, `ParamSpec.floor`)
    ends the fit OK there, with a note; the same parameter on its maximum is at a bound. The
    lattice constant stands in for a width here (same compiled program, traced bounds)."""
    import dataclasses

    from fits import parameters
    row = parameters.spec("lattice_constant")
    monkeypatch.setitem(parameters._BY_NAME, "lattice_constant", dataclasses.replace(row, floor=True))
    model, frames, weights, init, _, _ = scan
    fit = fit_batch(frames, weights, model, init, VARY, bounds={"lattice_constant": (148.0, 151.0)})
    assert fit.values["lattice_constant"][0] == pytest.approx(148.0)          # truth 147.5: on the floor
    assert fit.status[0] is FitStatus.OK, fit.messages[0]
    assert fit.messages[0].endswith("unresolved (at their floor): lattice_constant")
    assert fit.values["lattice_constant"][5] == pytest.approx(151.0)          # truth 152.5: on the ceiling
    assert fit.status[5] is FitStatus.AT_BOUND and "unresolved" not in fit.messages[5]
    assert fit.status[2] is FitStatus.OK and "unresolved" not in fit.messages[2]
    sub = jax.tree_util.tree_map(lambda x: x[:2], init)
    with pytest.raises(ValueError, match=r"init holds parameters for \(6,\) frames but observed has 2"):
        fit_batch(frames[:2], weights[:2], model, init, VARY)
    with pytest.raises(ValueError, match="must have the same shape"):
        fit_batch(frames[:2], weights[:1], model, sub, VARY)
    with pytest.raises(ValueError, match=r"bounds given for 'radius', which does not vary"):
        fit_batch(frames[:2], weights[:2], model, sub, VARY, bounds={"radius": (10, 40)})
    with pytest.raises(KeyError, match="unknown fit parameter 'a'"):
        fit_batch(frames[:2], weights[:2], model, sub, ["a"])
    with pytest.raises(ValueError, match="pass stop_above and give_up together"):
        fit_batch(frames[:2], weights[:2], model, sub, VARY, stop_above=1e3)
    with pytest.raises(ValueError, match="stop_above holds NaN"):
        fit_batch(frames[:2], weights[:2], model, sub, VARY, stop_above=[np.nan, 1.0], give_up=GiveUp(3, 30.0, 0.25))
    with pytest.raises(ValueError, match="GiveUp needs after >= 1"):
        GiveUp(0, 30.0, 0.25)


def test_split_jacobian_equals_jacfwd(scan):
    """The two-group forward-mode normal equations equal those of one jacfwd (float64)."""
    from fits.batch import _normal_equations
    from fits.objective import make_residual_fn, split_residual_function

    model, frames, weights, init, _, _ = scan
    one = jax.tree_util.tree_map(lambda x: x[0], init)
    x = jnp.asarray(pack(one, VARY), jnp.float64)
    obs, w = jnp.asarray(np.where(weights[0] > 0, frames[0], 0.0)), jnp.asarray(weights[0])
    res, jacobian = make_residual_fn(model, VARY, one)          # jitted, shared with test_pattern_fit
    split, (nl, lin) = split_residual_function(model, VARY)
    assert sorted(VARY[i] for i in lin) == sorted(["sl_scale", "diffuse_scale", "al_scale", "background"])
    r, jac = res(x, obs, w), jacobian(x, obs, w)
    ne = jax.jit(lambda arrays, x, one: _normal_equations(lambda u, v: split(arrays, u, v, one, obs, w), x, nl, lin))
    a, g = ne(model.arrays, x, one)
    scale = np.sqrt(np.outer(np.diag(jac.T @ jac), np.diag(jac.T @ jac)))
    np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(jac.T @ jac) / scale, atol=1e-10)
    np.testing.assert_allclose(g, jac.T @ r, rtol=1e-9, atol=1e-9 * float(np.max(np.abs(jac.T @ r))))


def test_null_deviance_equals_long_em():
    """EM + projected Newton (12 iterations) reaches the minimum that 3000 EM steps approach,
    also with the optimum on the bound c = 0."""
    from fits.objective import null_deviance, poisson_deviance

    rng = np.random.default_rng(2)
    a = rng.uniform(0.5, 1.5, 4000)
    b = np.exp(-np.linspace(0, 4, 4000))
    w = rng.integers(0, 4, 4000).astype(float)
    for mu in (3.0 * a + 40.0 * b, 2.0 * a, 0.01 * a + 5.0 * b):
        d = rng.poisson(mu * np.maximum(w, 1)) / np.maximum(w, 1)
        c = np.array([1.0, 1.0])
        for _ in range(3000):                  # plain EM (Shepp & Vardi 1982)
            m = np.maximum(c[0] * a + c[1] * b, 1e-6)
            c = c * np.array([np.sum(w * a * d / m), np.sum(w * b * d / m)]) / np.array([np.sum(w * a), np.sum(w * b)])
        em = float(poisson_deviance(c[0] * a + c[1] * b, d, w))
        got = float(null_deviance(a, b, d, w))
        assert got <= em + 1e-6 * em and got == pytest.approx(em, rel=1e-6)


def test_threads_agree_and_a_raising_frame_is_failed(scan, monkeypatch):
    import fits.batch as batch

    model, frames, weights, init, _, fit = scan
    monkeypatch.setenv("XMODEL_FIT_THREADS", "1")
    one = fit_batch(frames[:3], weights[:3], model, jax.tree_util.tree_map(lambda x: x[:3], init), VARY)
    for name in VARY:                          # same single-frame program: identical numbers
        np.testing.assert_array_equal(one.values[name], fit.values[name][:3])
    real = batch.compiled

    def flaky(model_, key, build):
        run = real(model_, key, build)
        calls = []

        def wrapped(*args):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("simulated XLA failure")
            return run(*args)
        return wrapped

    monkeypatch.setattr(batch, "compiled", flaky)
    f = fit_batch(frames[:3], weights[:3], model, jax.tree_util.tree_map(lambda x: x[:3], init), VARY)
    assert f.status[1] is FitStatus.FAILED and f.status[0] is FitStatus.OK and f.status[2] is FitStatus.OK
    assert "the fit of frame 1 raised RuntimeError: simulated XLA failure" in f.messages[1]
    assert f.values["lattice_constant"][1] == 150.0 and np.isinf(f.objective[1])
    monkeypatch.setenv("XMODEL_FIT_THREADS", "two")
    with pytest.raises(ValueError, match="XMODEL_FIT_THREADS = 'two' is not an integer"):
        fit_batch(frames[:3], weights[:3], model, jax.tree_util.tree_map(lambda x: x[:3], init), VARY)


def test_covariance_at_the_solution_is_the_fits(scan):
    """`covariance_at` at fit_batch's solution gives fit_batch's dispersion and scaled covariance;
    a broken frame is bad data with infinite errors."""
    from fits.batch import covariance_at

    model, frames, weights, _, _, fit = scan
    rows = [0, 1, BROKEN]
    params = jax.tree_util.tree_map(lambda x: x[np.array(rows)], fit.params)
    c = covariance_at(frames[rows], weights[rows], model, params, VARY)
    np.testing.assert_allclose(c.dispersion[:2], fit.dispersion[:2], rtol=1e-9)
    np.testing.assert_allclose(c.objective[:2], fit.objective[:2], rtol=1e-9)
    np.testing.assert_allclose(c.covariance[:2], fit.covariance[:2], rtol=1e-6,
                               atol=1e-9 * np.abs(fit.covariance[:2]).max())
    assert c.status[2] is FitStatus.BAD_DATA and np.all(np.isinf([c.stderr[k][2] for k in VARY]))


def test_a_gaussian_prior_adds_its_residuals_and_its_information(scan):
    """A prior ``N(mean, sigma^2)`` adds ``((x - mean) / sigma)^2`` to the objective and
    ``1 / sigma^2`` to the parameter's diagonal of the information ``J^T J`` (the posterior's
    normal approximation), nothing else; the dispersion does not see it."""
    from fits.batch import covariance_at

    model, frames, weights, _, _, fit = scan
    rows = np.array([0, 1])
    params = jax.tree_util.tree_map(lambda x: x[rows], fit.params)
    prior = {"tilt1_deg": (0.3, 0.5), "lattice_constant": (150.0, 0.1)}
    c0 = covariance_at(frames[rows], weights[rows], model, params, VARY)
    c1 = covariance_at(frames[rows], weights[rows], model, params, VARY, prior=prior)
    x = {n: fit.values[n][rows] for n in prior}
    penalty = sum(((x[n] - m) / s) ** 2 for n, (m, s) in prior.items())
    np.testing.assert_allclose(c1.objective, c0.objective + penalty, rtol=1e-10)
    np.testing.assert_array_equal(c1.dispersion, c0.dispersion)
    factor = np.maximum(c0.dispersion, 1.0)
    for k in range(len(rows)):
        added = (np.linalg.inv(c1.covariance[k]) - np.linalg.inv(c0.covariance[k])) * factor[k]
        expect = np.zeros((len(VARY), len(VARY)))
        for n, (_, s) in prior.items():
            expect[VARY.index(n), VARY.index(n)] = 1.0 / s ** 2
        np.testing.assert_allclose(added, expect, atol=1e-6 * np.abs(np.linalg.inv(c0.covariance[k])).max() * factor[k])


def test_a_prior_moves_the_fit_as_a_gaussian_update_and_a_wrong_prior_is_an_error(scan):
    """With a prior on tilt1 as narrow as the data's own error and two errors away from the
    maximum likelihood ``x``, the fit moves to ``x - C e_i (x_i - mean) / (sigma^2 + C_ii)`` (the
    posterior mode of a quadratic log-likelihood with covariance ``C``, the unscaled inverse
    information, Gelman et al. 2013, sec. 2.5): the model is nonlinear, so to a tenth of the
    shift. One frame: each prior (its mean and sigma) is a program of its own to compile."""
    model, frames, weights, init, _, fit = scan
    rows = np.array([0])
    i = VARY.index("tilt1_deg")
    start = jax.tree_util.tree_map(lambda x: x[rows], fit.params)       # from the maximum likelihood
    c = fit.covariance[rows] / np.maximum(fit.dispersion[rows], 1.0)[:, None, None]
    sigma = np.sqrt(c[:, i, i])
    x_ml = np.stack([fit.values[n][rows] for n in VARY], axis=1)
    for k in range(len(rows)):
        mean = x_ml[k, i] + 2.0 * sigma[k]
        prior = {"tilt1_deg": (float(mean), float(sigma[k]))}
        f = fit_batch(frames[rows[k]][None], weights[rows[k]][None], model,
                      jax.tree_util.tree_map(lambda x, k=k: x[k], start), VARY, prior=prior)
        assert f.status[0] is FitStatus.OK, f.messages
        shift = -c[k][:, i] * (x_ml[k, i] - mean) / (sigma[k] ** 2 + c[k][i, i])
        got = np.array([f.values[n][0] for n in VARY]) - x_ml[k]
        scale = np.sqrt(np.diag(c[k]))
        np.testing.assert_allclose(got / scale, shift / scale, atol=0.1 * np.abs(shift / scale).max())
        assert abs(got[i] / shift[i] - 1) < 0.1
        assert f.objective[0] > fit.objective[rows[k]] and f.deviance_gain[0] > 1e4
    with pytest.raises(ValueError, match="a prior on 'mis1_deg', which does not vary"):
        fit_batch(frames[:1], weights[:1], model, init, VARY, prior={"mis1_deg": (0.0, 2.0)})
    for bad in ((0.0, 0.0), (0.0, np.nan), (np.inf, 1.0)):
        with pytest.raises(ValueError, match="expected a finite mean and a finite sigma > 0"):
            fit_batch(frames[:1], weights[:1], model, init, VARY, prior={"tilt1_deg": bad})
    with pytest.raises(ValueError, match=r"expected \(mean, sigma\)"):
        fit_batch(frames[:1], weights[:1], model, init, VARY, prior={"tilt1_deg": 2.0})


def _polar_clusters(rings: bool = False):
    """`fits.robust.tile_clusters` of every point of the shared yellow polar grid (conftest), or
    its `fits.robust.ring_clusters`."""
    from fits.robust import ring_clusters, tile_clusters

    q = np.concatenate([np.linspace(0.065, 0.155, 45), np.linspace(1.75, 2.2, 25)])
    chi = np.linspace(-120, 30, 40)
    index = np.arange(chi.size * q.size)
    return ring_clusters(q, index) if rings else tile_clusters(chi, q, index)


def test_cluster_robust_errors_are_the_sandwich_where_wider_and_quasi_likelihood_on_a_right_model(scan):
    """With clusters, `covariance_at` and `fit_batch` report the quasi-likelihood covariance
    widened to the sandwich (`fits.robust.robust_covariance`) of a reference built from
    ``jax.jacfwd`` and numpy sums; on Poisson frames of the model itself the sandwich estimates
    the quasi-likelihood errors; on a frame whose SL peaks are wider than the model's (a
    peak-shape misfit) the lattice constant's and the angles' errors widen several times."""
    from fits.batch import covariance_at
    from fits.objective import residual_function
    from fits.robust import robust_covariance, sandwich

    model, frames, weights, init, truths, fit = scan
    ids = _polar_clusters()
    rows = np.array([0, 1, 2, 5])
    params = jax.tree_util.tree_map(lambda x: x[rows], fit.params)
    c = covariance_at(frames[rows], weights[rows], model, params, VARY, clusters=ids)
    from fits.objective import intensity_function

    _, arrays = intensity_function(model)
    res = residual_function(model, VARY, "deviance")
    res_j, jac_j = jax.jit(res), jax.jit(jax.jacfwd(res, argnums=1))
    sand = []
    for k, i in enumerate(rows):
        p_i = jax.tree_util.tree_map(lambda x, i=i: x[i], fit.params)
        x = pack(p_i, VARY)
        o, w = np.where(weights[i] > 0, frames[i], 0.0), weights[i]
        r = np.asarray(res_j(arrays, x, p_i, o, w))
        jac = np.asarray(jac_j(arrays, x, p_i, o, w))
        g = np.zeros((ids.max() + 1, len(VARY)))
        np.add.at(g, ids, jac * r[:, None])
        expected = robust_covariance(fit.covariance[i], sandwich(jac.T @ jac, g.T @ g, np.unique(ids[w > 0]).size))
        np.testing.assert_allclose(c.covariance[k], expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())
        # a right model: within the sandwich's noise of the quasi-likelihood errors
        ratio = np.sqrt(np.diag(c.covariance[k]) / np.diag(fit.covariance[i]))
        sand.append(np.sqrt(np.diag(sandwich(jac.T @ jac, g.T @ g, np.unique(ids[w > 0]).size))
                            / np.diag(fit.covariance[i])))
        np.testing.assert_allclose(ratio, np.maximum(sand[-1], 1.0), rtol=1e-6)
    # two clusterings (tiles and whole rings): each widens what the last left, per parameter
    rings = _polar_clusters(rings=True)
    g2 = np.zeros((rings.max() + 1, len(VARY)))
    np.add.at(g2, rings, jac * r[:, None])
    expected = robust_covariance(expected, sandwich(jac.T @ jac, g2.T @ g2, np.unique(rings[w > 0]).size))
    c2 = covariance_at(frames[rows[-1:]], weights[rows[-1:]], model, jax.tree_util.tree_map(lambda x: x[-1:], params),
                       VARY, clusters=np.stack([ids, rings]))
    np.testing.assert_allclose(c2.covariance[0], expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())
    assert np.all(np.diag(c2.covariance[0]) >= np.diag(c.covariance[-1]) * (1 - 1e-9))
    # the sandwich estimates the same errors as the quasi-likelihood, within its noise (few clusters
    # hold the SL peaks of this small grid: about +-30 % per frame and parameter)
    assert 0.75 < np.median(sand) < 1.25, np.round(sand, 2)
    # fit_batch with clusters reports what covariance_at does at its solution
    two = jax.tree_util.tree_map(lambda x: x[:2], init)
    f = fit_batch(frames[:2], weights[:2], model, two, VARY, clusters=ids)
    at = covariance_at(frames[:2], weights[:2], model, f.params, VARY, clusters=ids)
    np.testing.assert_allclose(f.covariance, at.covariance, rtol=1e-5, atol=1e-9 * np.abs(at.covariance).max())
    # SL peaks 1.6 times wider than the model's: residuals of one sign over each peak's footprint
    t = truths[0]
    wide = np.asarray(model(t.replace(sl_radial_width=1.6 * t.sl_radial_width, sl_mosaic=1.6 * t.sl_mosaic)))
    s = float(np.sum(np.asarray(model(t)) * weights[0])) / float(np.sum(wide * weights[0]))
    counts = poisson_counts(wide * s * weights[0], seed=11).astype(float)
    frame = np.where(weights[0] > 0, counts / np.where(weights[0] > 0, weights[0], 1.0), np.nan)[None]
    quasi = fit_batch(frame, weights[:1], model, t, VARY)
    robust = covariance_at(frame, weights[:1], model, quasi.params, VARY, clusters=ids)
    gain = {k: float(robust.stderr[k][0] / quasi.stderr[k][0]) for k in VARY}
    assert quasi.status[0] is FitStatus.OK, quasi.messages
    # the quasi-likelihood errors (dispersion 250) are 2-5 times too small for a, the angles, sl_scale
    assert gain["lattice_constant"] > 2 and min(gain[k] for k in ("tilt1_deg", "inplane_deg", "sl_scale")) > 2, gain
    with pytest.raises(ValueError, match="clusters must be"):
        covariance_at(frames[:1], weights[:1], model, quasi.params, VARY, clusters=ids[:-1])
