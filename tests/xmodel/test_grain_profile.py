"""The "grain" SL peak shape (`xmodel.pattern.grain_across`): across the Ewald sphere the
pseudo-Voigt of a spherical grain's shape transform (a Lorentzian with the sphere's kink) and its
mosaic, with no constant chosen. Its FWHM is the Voigt's (scipy), the Lorentzian has the sphere's
integral and tail, the integrated intensity is kept, and the model equals the dense reference,
is differentiable, averages over bins, follows into the windows and the reflection table."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize
from scipy.special import voigt_profile

from tests.fits.scan.test_window import red_window_models
from tests.xmodel.test_pattern import _small_pixels
from tests.xmodel.test_peak_tail import (
    assert_table_follows_the_model,
    binned_tail_error,
    check_point_and_binned_gradients,
)
from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.parameters import Structure, params_from_config, structure_from_config
from xmodel.pattern import (
    GRAIN_REACH,
    SL_REFERENCE_SIGMA,
    SPHERE_ETA,
    SPHERE_FWHM,
    SPHERE_FWHM_G,
    SPHERE_FWHM_L,
    PatternModel,
    across_sphere_profile,
    dense_pattern,
    grain_across,
    sl_peak_widths,
    tch_pseudo_voigt,
)

GRAIN = ["model.sl_peak_shape=grain"]


def _setup(domain="yellow", dtype=jnp.float32):
    cfg = load_config(default_paths(domain), GRAIN)
    ex = Experiment.from_config(cfg, binning=8)
    return ex, structure_from_config(cfg), params_from_config(cfg, dtype=dtype)


def _fwhm(f, x0: float) -> float:
    """Full width at half maximum of a symmetric unimodal ``f`` with its maximum at 0."""
    half = 0.5 * f(0.0)
    return 2.0 * optimize.brentq(lambda x: f(x) - half, 0.0, x0)


def test_width_and_share_are_the_voigt_of_size_and_mosaic():
    """The FWHM is that of the Voigt profile of the grain's Voigt components and the mosaic's
    Gaussian (scipy's `voigt_profile`, Gaussians in quadrature); without mosaic the sphere's own
    pseudo-Voigt, without size the mosaic's Gaussian; the support reaches the widest sigma."""
    size = 3.0e-3
    c = 2 * np.sqrt(2 * np.log(2))
    for g, mosaic_deg in ((0.07, 0.5), (0.0835, 1.0), (0.12, 2.0), (0.2, 4.0)):
        fg_m = c * g * np.radians(mosaic_deg)
        sig = np.hypot(SPHERE_FWHM_G * size, fg_m) / c
        gam = 0.5 * SPHERE_FWHM_L * size
        eta, sa = (float(v) for v in grain_across(g, size, np.radians(mosaic_deg)))
        ref = _fwhm(lambda x, s=sig, y=gam: voigt_profile(x, s, y), 50 * (sig + gam))
        assert c * sa == pytest.approx(ref, rel=4.5e-3)            # Thompson-Cox-Hastings' accuracy
        prof = _fwhm(lambda x, e=eta, s=sa: float(across_sphere_profile((x / s) ** 2, e)), 50 * sa)
        assert prof == pytest.approx(c * sa, rel=1e-9)              # the pseudo-Voigt's FWHM is f
        assert 0.0 < eta < SPHERE_ETA
    eta, sa = grain_across(0.1, size, 0.0)
    assert float(eta) == pytest.approx(SPHERE_ETA, abs=1e-9) and c * float(sa) == pytest.approx(SPHERE_FWHM * size)
    eta, sa = grain_across(0.1, 1e-9, np.radians(1.0))
    assert float(eta) == pytest.approx(0.0, abs=1e-5) and float(sa) == pytest.approx(0.1 * np.radians(1.0))
    f, e = tch_pseudo_voigt(SPHERE_FWHM_G, SPHERE_FWHM_L)
    assert float(f) == pytest.approx(SPHERE_FWHM, rel=1e-12) and float(e) == pytest.approx(SPHERE_ETA, rel=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(200):
        g, s, m = rng.uniform(0.02, 0.3), rng.uniform(1e-4, 1e-2), rng.uniform(1e-4, 0.1)
        assert float(grain_across(g, s, m)[1]) <= GRAIN_REACH * np.hypot(s, g * m)


def test_the_pseudo_voigt_is_the_spheres_marginal():
    """Across the Ewald sphere a spherical grain's reflection is the Fourier transform of its
    autocorrelation ``1 - 3|z|/(4R) + |z|^3/(16R^3)`` (Guinier & Fournet): the pseudo-Voigt of
    `SPHERE_FWHM` and `SPHERE_ETA` has its height, its integral and its ``delta^-2`` tail, and stays
    within 4 % of its height everywhere; ``R`` is the sphere whose Guinier sigma is the size sigma."""
    size = 2.0e-3
    R = np.sqrt(2.5) / size

    def marginal(delta):
        if delta == 0.0:
            return 1.5 * R
        return 2.0 * integrate.quad(lambda z: 1 - 3 * z / (4 * R) + z ** 3 / (16 * R ** 3), 0.0, 2 * R,
                                    weight="cos", wvar=delta, limit=400)[0]

    sa = SPHERE_FWHM * size / (2 * np.sqrt(2 * np.log(2)))

    def pv(delta):
        return 1.5 * R * float(across_sphere_profile((delta / sa) ** 2, SPHERE_ETA))

    deltas = np.linspace(0.0, 30.0 / R, 301)
    err = max(abs(pv(d) - marginal(d)) for d in deltas)
    assert err < 0.04 * 1.5 * R
    total = integrate.quad(pv, -np.inf, np.inf, limit=400)[0]
    assert total == pytest.approx(2 * np.pi, rel=1e-6)          # gamma(0) = 1: the marginal's integral
    for x in (40.0, 80.0, 160.0):
        d = x / R
        # the marginal's tail (3 / (2 R)) / delta^2, averaged over the end point's oscillation
        dd = np.linspace(d - np.pi / (2 * R), d + np.pi / (2 * R), 9)
        assert np.mean([marginal(v) * v * v for v in dd]) == pytest.approx(1.5 / R, rel=0.03)
        assert pv(d) * d * d == pytest.approx(1.5 / R, rel=0.01)


def test_integrated_intensity_is_kept():
    """Height times the profile's integral is ``(2 pi)^{3/2} sigma_ref^3`` for any size and mosaic:
    the Gaussian sigmas in the detector plane, the pseudo-Voigt across the sphere."""
    expected = (2 * np.pi) ** 1.5 * SL_REFERENCE_SIGMA ** 3
    for g, sr, mosaic_deg in ((0.1, 1.0e-3, 0.5), (0.1, 3.0e-3, 1.0), (0.2, 1.5e-3, 2.0)):
        m = np.radians(mosaic_deg)
        r, t, h = (float(v) for v in sl_peak_widths(g, sr, m, "grain"))
        eta, sa = (float(v) for v in grain_across(g, sr, m))
        across = integrate.quad(lambda z, e=eta, s=sa: float(across_sphere_profile((z / s) ** 2, e)), -np.inf, np.inf,
                                limit=400)[0]
        assert h * 2 * np.pi * r * t * across == pytest.approx(expected, rel=1e-6)


def test_config_and_errors():
    cfg = load_config(default_paths("yellow"), GRAIN + ["model.sl_paracrystal=0.05"])
    st = structure_from_config(cfg)
    assert st.sl_peak_shape == "grain" and st.sl_paracrystal == 0.05
    with pytest.raises(ValueError, match=r"sl_peak_tail = 0.3 with model.sl_peak_shape = \"grain\""):
        Structure.build(sl_peak_shape="grain", sl_peak_tail=0.3)


def test_model_equals_dense_and_its_gradients_float64():
    """Sparse model == dense reference (the members the Lorentzian keeps), unlike "crystal";
    point and bin-averaged models agree with central finite differences."""
    ex, st, params = _setup("red", jnp.float64)
    px = _small_pixels(ex)
    model = PatternModel(px, st, params, dtype=jnp.float64)
    dense = dense_pattern(px, st, params, dtype=jnp.float64)
    sl = np.asarray(jax.jit(model.components(("sl_scale",)))(model.arrays, params))[0] * float(params.sl_scale)
    assert np.max(np.abs(np.asarray(model(params)) - dense)) < 1e-3 * sl.max()
    crystal = dense_pattern(px, dataclasses.replace(st, sl_peak_shape="crystal"), params, dtype=jnp.float64)
    assert np.max(np.abs(dense - crystal)) > 1e-2 * sl.max()
    check_point_and_binned_gradients(px, st, params, seed=7)


def test_binned_grain_peak_equals_the_mean_over_the_bins_pixels():
    """The bin mean with the grain's (eta, sigma_a), the reflection lifted off the sphere."""
    ex, _, params = _setup("yellow", jnp.float64)
    g = 2 * np.pi * np.sqrt(3.0) / float(params.lattice_constant)
    sr, mosaic = float(params.sl_radial_width), np.radians(1.0)
    st = float(sl_peak_widths(g, sr, mosaic, "grain")[1])
    eta, sa = grain_across(g, sr, mosaic)
    err = binned_tail_error(ex.geometry, g, sr, st, eta, sa)
    assert err < 2e-3, err


def test_windowed_model_follows_the_grain():
    """The scan fit's windowed SL term equals the orientation-free model's with the "grain" shape."""
    m = red_window_models(jnp.float32, GRAIN)
    win, base, template = m["win"], m["base"], m["template"]
    assert base.layout.sl_shape == "grain"
    base_sl, win_sl = jax.jit(base.components(("sl_scale",))), jax.jit(win.components(("sl_scale",)))
    rng = np.random.default_rng(11)
    for _ in range(3):
        p = template.replace(inplane=float(rng.normal(0, 0.3)), tilt1=float(rng.normal(0, 3.0)),
                             tilt2=float(rng.normal(0, 3.0)), sl_scale=3000.0).astype(jnp.float32)
        a = np.asarray(base_sl(base.arrays, p))[0]
        b = np.asarray(win_sl(win.arrays, p))[0]
        assert a.max() > 0 and np.max(np.abs(a - b)) < 1e-3 * a.max()


def test_reflection_table_follows_the_grain():
    """The table's SL heights are the model's SL intensity at the table's pixels."""
    assert_table_follows_the_model(*_setup("yellow"))
