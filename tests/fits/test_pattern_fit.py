"""Interactive fits (lmfit + JAX Jacobian): certified-fit style recovery, bounds, errors."""
from __future__ import annotations

import lmfit
import numpy as np
import pytest

from fits.parameters import pack, to_lmfit
from fits.pattern_fit import fit_pattern, lmfit_problem
from fits.status import FitStatus
from xmodel.noise import poisson_counts
from xmodel.parameters import FWHM_PER_SIGMA

VARY = ["lattice_constant", "sl_scale", "diffuse_scale", "al_scale", "disorder_deg", "inplane_deg",
        "tilt1_deg", "tilt2_deg", "background"]
PIXELS_PER_BIN = 4.0


@pytest.fixture(scope="module")
def setup(yellow_polar_model):
    """The shared 40 chi x 70 q polar grid (tests/fits/conftest.py) and a tilted yellow truth."""
    model, px, p = yellow_polar_model
    weight = px.valid * PIXELS_PER_BIN
    truth = p.replace(lattice_constant=152.0, inplane=p.inplane + np.radians(1.0), tilt1=np.radians(1.5),
                      tilt2=np.radians(-1.0), disorder=np.radians(12.0) / FWHM_PER_SIGMA, background=0.5)
    return model, weight, truth


def _synthetic(model, weight, truth, total, seed=1):
    """Truth scaled to ``total`` expected counts, Poisson counts, mean per bin."""
    s = total / float(np.sum(np.asarray(model(truth)) * weight))
    truth = truth.replace(sl_scale=truth.sl_scale * s, diffuse_scale=truth.diffuse_scale * s,
                          al_scale=truth.al_scale * s, background=truth.background * s)
    counts = poisson_counts(np.asarray(model(truth)) * weight, seed=seed).astype(float)
    return counts / np.where(weight > 0, weight, 1.0), truth


def _start(truth):
    return truth.replace(lattice_constant=150.2, inplane=truth.inplane - np.radians(1.0), tilt1=0.0, tilt2=0.0,
                         disorder=np.radians(15.0) / FWHM_PER_SIGMA, sl_scale=truth.sl_scale * 0.8,
                         al_scale=truth.al_scale * 1.2)


# certified-fit style: stated absolute tolerances (edge units) per total counts; the
# tolerances are about 4-5 standard errors and shrink roughly as 1/sqrt(counts)
TOLERANCE = {
    1e5: {"lattice_constant": 0.1, "inplane_deg": 0.1, "tilt1_deg": 0.8, "tilt2_deg": 0.6, "disorder_deg": 3.0},
    1e6: {"lattice_constant": 0.03, "inplane_deg": 0.03, "tilt1_deg": 0.25, "tilt2_deg": 0.2, "disorder_deg": 1.0},
    1e7: {"lattice_constant": 0.01, "inplane_deg": 0.01, "tilt1_deg": 0.08, "tilt2_deg": 0.06, "disorder_deg": 0.3},
}


@pytest.mark.parametrize("total", sorted(TOLERANCE))
def test_recovers_known_parameters_at_three_noise_levels(setup, total):
    model, weight, truth = setup
    observed, truth = _synthetic(model, weight, truth, total)
    fit = fit_pattern(observed.reshape(model.pixels.shape), weight.reshape(model.pixels.shape), model,
                      _start(truth), VARY)
    assert fit.status is FitStatus.OK, fit.message
    true = dict(zip(VARY, np.asarray(pack(truth, VARY))))
    for name, tol in TOLERANCE[total].items():
        assert abs(fit.values[name] - true[name]) < tol, (name, fit.values[name], true[name])
        assert abs(fit.values[name] - true[name]) < 5 * fit.stderr[name], name
    # scales and background within 5 standard errors; deviance ~ number of points (chi2)
    for name in ("sl_scale", "diffuse_scale", "background"):
        assert abs(fit.values[name] - true[name]) < 5 * fit.stderr[name], name
    n = int((weight > 0).sum())
    assert abs(fit.objective - n) < 6 * np.sqrt(2 * n)
    assert fit.correl["tilt1_deg"] and -1 <= fit.correl["lattice_constant"]["sl_scale"] <= 1
    assert "[[Variables]]" in fit.report() and "OK" in fit.report()
    assert float(fit.params.lattice_constant) == pytest.approx(fit.values["lattice_constant"])


def test_lmfit_jacobian_with_bounds_matches_finite_differences(setup):
    """The Jacobian lmfit uses (our Dfun times its MINUIT scale_gradient) against central
    differences of lmfit's own residual in its internal (unbounded) variables."""
    model, weight, truth = setup
    observed, truth = _synthetic(model, weight, truth, 1e6)
    start = _start(truth)
    names = VARY
    bounds = {"lattice_constant": (149.0, 152.0), "disorder_deg": (5.0, 15.5), "tilt1_deg": (-0.5, 3.0),
              "background": (0.0, 1e3)}
    lp = to_lmfit(start, names, bounds)
    mini, dfun = lmfit_problem(observed, weight, model, start, lp, names)
    result = mini.prepare_fit()
    assert result.var_names == list(names)
    mini.jacfcn, mini.col_deriv = dfun, False          # as Minimizer.leastsq sets them
    x = np.array(result._init_vals_internal)
    x = x + 0.1                                         # away from the starting point
    jac = mini._jacobian(x)
    residual = mini._Minimizer__residual
    for i, name in enumerate(names):
        h = 1e-6 * max(1.0, abs(x[i]))
        e = np.zeros_like(x)
        e[i] = h
        fd = (residual(x + e) - residual(x - e)) / (2 * h)
        scale = np.abs(fd).max()
        assert np.allclose(jac[:, i], fd, atol=2e-5 * scale), name
    # bounded columns really are rescaled: lmfit's MINUIT transform p = lo + (hi - lo)(sin x + 1)/2
    # has d p / d x = (hi - lo) cos(x) / 2, here 1.5 cos x, not 1
    sg = mini.result.params["lattice_constant"].scale_gradient(x[0])
    assert sg == pytest.approx(1.5 * np.cos(x[0]), rel=1e-9)
    assert abs(sg - 1.0) > 0.01


def test_at_bound_status_and_report(setup):
    model, weight, truth = setup
    observed, truth = _synthetic(model, weight, truth, 1e6)
    fit = fit_pattern(observed, weight, model, _start(truth), VARY, bounds={"lattice_constant": (149.0, 151.0)})
    assert fit.status is FitStatus.AT_BOUND
    assert fit.values["lattice_constant"] == pytest.approx(151.0, abs=1e-6)
    assert "lattice_constant" in fit.message


def test_bad_data_not_converged_and_errors(setup):
    model, weight, truth = setup
    observed, truth = _synthetic(model, weight, truth, 1e5)
    start = _start(truth)
    bad = observed.copy()
    bad[np.flatnonzero(weight)[3]] = np.nan
    with pytest.raises(ValueError, match="cannot fit this pattern: observed has 1 non-finite or negative counts"):
        fit_pattern(bad, weight, model, start, VARY)
    fit = fit_pattern(bad, weight, model, start, VARY, throw=False)
    assert fit.status is FitStatus.BAD_DATA and fit.result is None
    assert np.all(np.isinf(list(fit.stderr.values()))) and fit.values["lattice_constant"] == pytest.approx(150.2)
    fit = fit_pattern(observed, weight, model, start, VARY, throw=False, max_nfev=3)
    assert fit.status is FitStatus.NOT_CONVERGED and "max_nfev=3" in fit.message
    with pytest.raises(RuntimeError, match="did not converge.*raise max_nfev"):
        fit_pattern(observed, weight, model, start, VARY, max_nfev=3)
    lp = to_lmfit(start, ["tilt1_deg", "tilt2_deg"])
    lp["tilt2_deg"].set(expr="tilt1_deg")
    with pytest.raises(ValueError, match=r"'tilt2_deg' has the constraint expr='tilt1_deg'"):
        fit_pattern(observed, weight, model, start, None, parameters=lp)
    lp = to_lmfit(start, ["tilt1_deg"])
    lp.add("helper", value=1.0)
    with pytest.raises(ValueError, match="'helper' is not a model parameter"):
        fit_pattern(observed, weight, model, start, None, parameters=lp)
    with pytest.raises(ValueError, match="no parameter varies"):
        fit_pattern(observed, weight, model, start, [])
    with pytest.raises(ValueError, match="observed has 5 points but the model has 2800"):
        fit_pattern(np.ones(5), np.ones(5), model, start, VARY)
    with pytest.raises(ValueError, match="unknown objective kind 'gauss'"):
        fit_pattern(observed, weight, model, start, VARY, kind="gauss")
    assert isinstance(lp, lmfit.Parameters)


def test_standard_errors_are_scaled_by_the_dispersion(setup):
    """Counts with three times the Poisson variance: the Pearson dispersion is 3 and the standard
    errors are sqrt(3) times lmfit's unscaled ones, the rule of `fits.batch.covariance_scale`;
    the Pearson ("weighted") kind is scaled by its reduced chi-square, as lmfit's scale_covar."""
    model, weight, truth = setup
    _, truth = _synthetic(model, weight, truth, 1e6)
    mu = np.asarray(model(truth))
    rng = np.random.default_rng(3)
    counts = 3.0 * rng.poisson(mu * weight / 3.0)          # mean mu w, variance 3 mu w
    over = np.where(weight > 0, counts / np.where(weight > 0, weight, 1.0), 0.0)
    for kind in ("deviance", "weighted"):
        fit = fit_pattern(over, weight, model, _start(truth), VARY, kind=kind)
        assert fit.status is FitStatus.OK, fit.message
        assert fit.dispersion == pytest.approx(3.0, rel=0.1)
        # lmfit's unscaled errors at the solution (started there: one Jacobian)
        mini, dfun = lmfit_problem(over, weight, model, fit.params, to_lmfit(fit.params, VARY), VARY, kind)
        raw = mini.minimize(method="leastsq", Dfun=dfun, col_deriv=False, max_nfev=20)
        factor = fit.dispersion if kind == "deviance" else fit.objective / ((weight > 0).sum() - len(VARY))
        for name in VARY:
            assert fit.stderr[name] == pytest.approx(np.sqrt(factor) * raw.params[name].stderr, rel=1e-3), name
            assert fit.result.params[name].stderr == pytest.approx(fit.stderr[name], rel=1e-12)
