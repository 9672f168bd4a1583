"""Parameter table, lmfit round trips, pack/unpack, status codes and the objectives."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats

from fits import objective
from fits.parameters import (
    NAMES,
    PARAMETER_TABLE,
    from_lmfit,
    pack,
    spec,
    table_markdown,
    to_lmfit,
    unpack,
)
from fits.status import FitStatus
from xmodel.parameters import FWHM_PER_SIGMA, make_params


def _params():
    return make_params(lattice_constant=151.0, disorder=np.radians(12.0) / FWHM_PER_SIGMA,
                       inplane=np.radians(20.0), tilt1=np.radians(1.5), misorientation=(0.01, -0.02, 0.03),
                       dtype=jnp.float64)


def test_table_defaults_match_the_forward_model_defaults():
    p = make_params(dtype=jnp.float64)
    v = np.asarray(pack(p, NAMES))
    for s, x in zip(PARAMETER_TABLE, v):
        assert x == pytest.approx(s.default, rel=1e-12, abs=1e-12), s.name
        assert s.min <= s.default <= s.max
    assert len(set(NAMES)) == len(NAMES) == 17
    assert "disorder_deg" in table_markdown() and table_markdown().count("\n") == 19


def test_spec_unknown_name_lists_valid_names_and_suggests_deg():
    with pytest.raises(KeyError, match=r"unknown fit parameter 'inplane'.*Perhaps you meant 'inplane_deg'"):
        spec("inplane")
    with pytest.raises(KeyError, match=r"valid names are \['lattice_constant'"):
        spec("a")


def test_unit_conversions_disorder_is_fwhm_in_degrees():
    p = _params()
    v = dict(zip(NAMES, np.asarray(pack(p, NAMES))))
    assert v["disorder_deg"] == pytest.approx(12.0)
    assert v["inplane_deg"] == pytest.approx(20.0)
    assert v["mis2_deg"] == pytest.approx(np.degrees(-0.02))
    assert v["mosaic_deg"] == pytest.approx(1.0)


def test_pack_unpack_round_trip_jit_grad_and_batch():
    p = _params()
    names = ("lattice_constant", "disorder_deg", "mis3_deg", "mis1_deg", "tilt1_deg")
    v = pack(p, names)
    q = jax.jit(lambda x: unpack(x, names, p))(v + 1.0)
    assert float(q.lattice_constant) == pytest.approx(152.0)
    assert float(q.disorder) == pytest.approx(np.radians(13.0) / FWHM_PER_SIGMA)
    assert np.allclose(np.asarray(q.misorientation), [0.01 + np.radians(1), -0.02, 0.03 + np.radians(1)])
    assert np.allclose(np.asarray(pack(q, names)), np.asarray(v) + 1.0)
    g = jax.grad(lambda x: unpack(x, names, p).misorientation[2])(v)
    assert np.allclose(np.asarray(g), [0, 0, np.radians(1), 0, 0])
    batch = jax.tree_util.tree_map(lambda x: jnp.stack([x, x, x]), p)
    vb = pack(batch, names)
    assert vb.shape == (3, 5)
    ub = unpack(vb.at[1, 2].add(1.0), names, batch)
    assert ub.misorientation.shape == (3, 3) and ub.lattice_constant.shape == (3,)
    assert float(ub.misorientation[1, 2]) == pytest.approx(0.03 + np.radians(1))
    assert float(ub.misorientation[0, 2]) == pytest.approx(0.03)


def test_lmfit_round_trip_vary_and_bounds():
    p = _params()
    lp = to_lmfit(p, vary=["lattice_constant", "inplane_deg"], bounds={"lattice_constant": (140, 160)})
    assert list(lp) == list(NAMES)
    assert lp["lattice_constant"].vary and lp["inplane_deg"].vary and not lp["background"].vary
    assert (lp["lattice_constant"].min, lp["lattice_constant"].max) == (140, 160)
    assert lp["disorder_deg"].value == pytest.approx(12.0)
    lp["tilt2_deg"].value = 2.0
    q = from_lmfit(lp, p)
    assert float(q.tilt2) == pytest.approx(np.radians(2.0))
    assert np.allclose(np.asarray(pack(q, NAMES))[:12], np.asarray(pack(p, NAMES))[:12])
    assert [n for n, s in zip(NAMES, PARAMETER_TABLE) if s.vary] == [n for n in to_lmfit(p) if to_lmfit(p)[n].vary]


def test_lmfit_errors():
    p = _params()
    with pytest.raises(ValueError, match=r"starting value of lattice_constant = 151 A lies outside its bounds"):
        to_lmfit(p, bounds={"lattice_constant": (100, 120)})
    with pytest.raises(ValueError, match=r"bounds\['tilt1_deg'\] = \(3, 1\) needs min < max"):
        to_lmfit(p, bounds={"tilt1_deg": (3, 1)})
    with pytest.raises(ValueError, match=r"is not a \(min, max\) pair"):
        to_lmfit(p, bounds={"tilt1_deg": 3})
    with pytest.raises(ValueError, match=r"'background' is listed twice"):
        to_lmfit(p, vary=["background", "background"])
    batch = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), p)
    with pytest.raises(ValueError, match="needs the parameters of one pattern"):
        to_lmfit(batch)


def test_status_codes_are_stable_and_round_trip():
    assert [s.code for s in FitStatus] == list(range(len(FitStatus)))
    assert [s.name for s in FitStatus][:7] == ["OK", "NO_SIGNAL", "NOT_CONVERGED", "BAD_DATA", "AT_BOUND",
                                               "FAILED", "MIXED"]        # the scan fit's codes 0-6
    assert FitStatus.OK.code == 0 and FitStatus.FAILED.code == 5 and FitStatus.MIXED.code == 6
    assert not FitStatus.MIXED.success
    for s in FitStatus:
        assert FitStatus.from_code(s.code) is s
    assert FitStatus.BAD_DATA.value == "frame has non-finite or negative counts"
    assert FitStatus.AT_BOUND.success and not FitStatus.NO_SIGNAL.success
    with pytest.raises(ValueError, match=r"unknown fit status code 12; valid codes are 0 \(OK\)"):
        FitStatus.from_code(12)


# --------------------------------------------------------------------------- objectives


def _data():
    rng = np.random.default_rng(3)
    m = rng.uniform(0.05, 30.0, 400)
    w = rng.integers(1, 6, 400).astype(float)
    d = rng.poisson(m * w) / w
    w[:7] = 0.0
    d[:3] = np.nan            # NaN on weight-0 points is allowed
    d[10] = 0.0
    d[11] = m[11]              # exactly on the model
    return m, d, w


def test_deviance_equals_saturated_loglikelihood_difference():
    m, d, w = _data()
    ok = w > 0
    counted = ok.copy()
    counted[11] = False  # d = m exactly (not an integer count): deviance 0 there
    n = d[counted] * w[counted]
    expected = 2 * np.sum(scipy.stats.poisson.logpmf(n, n) - scipy.stats.poisson.logpmf(n, m[counted] * w[counted]))
    dev = float(objective.poisson_deviance(jnp.asarray(m), jnp.asarray(d), jnp.asarray(w)))
    assert dev == pytest.approx(expected, rel=1e-10)
    r = objective.deviance_residuals(jnp.asarray(m), jnp.asarray(d), jnp.asarray(w))
    assert float(jnp.sum(r ** 2)) == pytest.approx(dev, rel=1e-10)
    assert np.all(np.asarray(r)[:7] == 0)
    assert np.all(np.sign(np.asarray(r)[ok]) == np.sign((d - m)[ok]) * (np.abs(d - m)[ok] > 0))
    p = objective.weighted_residuals(jnp.asarray(m), jnp.asarray(d), jnp.asarray(w))
    assert np.allclose(np.asarray(p)[ok], ((d - m) * np.sqrt(w / m))[ok])


_residual = jax.jit(objective.deviance_residuals)
_residual_grad = jax.jit(jax.vmap(jax.grad(objective.deviance_residuals)))


def test_deviance_residual_gradient_finite_and_matches_finite_differences():
    """d r / d m at d = 0, at d = m, across the series/direct switch, far from m, and masked."""
    ratio = np.array([0.0, 1.0, 1.0 + 1e-9, 1.05, 0.9, 0.89, 1.11, 3.0, 1e-4, 1.0])
    m0 = np.full(ratio.size, 2.5)
    d = ratio * m0
    w = np.full(ratio.size, 3.0)
    d[-1], w[-1] = np.nan, 0.0      # masked point: zero residual and zero gradient
    g = np.asarray(_residual_grad(jnp.asarray(m0), jnp.asarray(d), jnp.asarray(w)))
    h = 1e-6
    fd = (np.asarray(_residual(jnp.asarray(m0 + h), jnp.asarray(d), jnp.asarray(w)))
          - np.asarray(_residual(jnp.asarray(m0 - h), jnp.asarray(d), jnp.asarray(w)))) / (2 * h)
    assert np.all(np.isfinite(g))
    assert np.allclose(g, fd, rtol=1e-6, atol=1e-8)
    assert g[-1] == 0.0


def test_series_and_direct_branches_agree_at_the_switch():
    u = jnp.asarray([objective._SMALL_U * (1 - 1e-9), objective._SMALL_U * (1 + 1e-9),
                     -objective._SMALL_U * (1 - 1e-9), -objective._SMALL_U * (1 + 1e-9)])
    g = np.asarray(objective._signed_root(u))
    assert g[0] == pytest.approx(g[1], rel=1e-7) and g[2] == pytest.approx(g[3], rel=1e-7)
    t = 1 + objective._SMALL_U
    assert g[0] == pytest.approx(np.sqrt(2 * (1 - t + t * np.log(t))), rel=1e-8)


def test_null_deviance_matches_scipy_minimum():
    rng = np.random.default_rng(5)
    a = rng.uniform(0.5, 1.5, 300)
    b = np.exp(-np.linspace(0, 4, 300))
    w = np.ones(300)
    d = rng.poisson(3.0 * a + 40.0 * b).astype(float)
    got = float(objective.null_deviance(jnp.asarray(a), jnp.asarray(b), jnp.asarray(d), jnp.asarray(w)))
    def f(c):
        m = c[0] * a + c[1] * b
        return 2 * np.sum(m - d + scipy.special.xlogy(d, d) - scipy.special.xlogy(d, m))

    best = scipy.optimize.minimize(f, [1.0, 10.0], bounds=[(0, None), (0, None)], method="L-BFGS-B").fun
    assert got == pytest.approx(best, rel=1e-4)


def test_check_observed_messages():
    w = np.ones(5)
    assert objective.check_observed(np.ones(5), w) is None
    assert objective.check_observed(np.array([1, np.nan, 1, 1, 1.0]), np.array([1, 0, 1, 1, 1.0])) is None
    assert "non-finite or negative counts" in objective.check_observed(np.array([1, -1, 1, 1, 1.0]), w)
    assert "weight[2] = nan" in objective.check_observed(np.ones(5), np.array([1, 1, np.nan, 1, 1]))
    assert "no point with weight > 0" in objective.check_observed(np.ones(5), np.zeros(5))
    assert "same shape" in objective.check_observed(np.ones(4), w)
    with pytest.raises(ValueError, match=r"unknown objective kind 'chi2'; valid kinds are \['deviance', 'weighted'\]"):
        objective._residuals_of("chi2")


def test_floor_hits_tell_a_width_at_its_floor_from_a_parameter_at_a_limit():
    from fits.parameters import floor_hits
    names = ["lattice_constant", "mosaic_deg", "sl_radial_width", "al_radial_width"]
    lo = np.array([140.0, 0.01, 1e-5, 1e-3])
    hi = np.array([160.0, 2.5, 3.75e-3, np.inf])
    limit, floor = floor_hits(names, np.array([[140.0, 0.01, 1e-5, 0.5], [150.0, 2.5, 3.75e-3, 1e-3]]), lo, hi)
    np.testing.assert_array_equal(limit, [[True, False, False, False], [False, True, True, False]])
    np.testing.assert_array_equal(floor, [[False, True, True, False], [False, False, False, True]])
    assert [s.name for s in PARAMETER_TABLE if s.floor] == ["sl_radial_width", "mosaic_deg", "al_radial_width"]
