"""Tests for xmodel.form_factor: limits, sasmodels agreement, derivatives, dtypes, jit/vmap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xmodel.form_factor import sl_peak_factor, sphere_amplitude, sphere_bragg_factor, sphere_form_factor

# Tests call jitted wrappers: eager op-by-op dispatch of the quadrature (and of jacfwd/jacrev
# of it) compiles dozens of tiny kernels and dominates the run time.
form_factor = jax.jit(sphere_form_factor, static_argnames=("n_nodes", "n_sigma"))
amplitude = jax.jit(sphere_amplitude)
bragg_factor = jax.jit(sphere_bragg_factor, static_argnames=("n_nodes", "n_sigma"))
_jac_fwd = jax.jit(jax.jacfwd(sphere_form_factor, argnums=(1, 2)))
_jac_rev = jax.jit(jax.jacrev(sphere_form_factor, argnums=(1, 2)))


def test_amplitude_limits_and_closed_form():
    x = np.concatenate([np.linspace(0.0, 0.999, 50), np.linspace(1.0, 1.2, 21), np.linspace(2.0, 30.0, 50)])
    phi = np.asarray(amplitude(x, 1.0))
    assert phi[0] == 1.0
    big = x > 0.3  # float64 closed form is accurate to ~1e-15 / x^2 here
    closed = 3 * (np.sin(x[big]) - x[big] * np.cos(x[big])) / x[big] ** 3
    np.testing.assert_allclose(phi[big], closed, rtol=1e-12, atol=1e-15)
    tiny = np.array([1e-8, 1e-4, 1e-2])
    np.testing.assert_allclose(amplitude(tiny, 1.0), 1 - tiny**2 / 10 + tiny**4 / 280, rtol=1e-15)
    np.testing.assert_allclose(amplitude(4.493409457909064, 1.0), 0.0, atol=1e-14)  # first zero, tan x = x


def test_no_nan_gradients_at_q_zero():
    d_amp = jax.jit(jax.grad(sphere_amplitude, argnums=(0, 1)))(0.0, 34.0)
    assert np.all(np.isfinite(d_amp)) and d_amp == (0.0, 0.0)
    np.testing.assert_allclose(jax.jit(jax.grad(jax.grad(sphere_amplitude)))(0.0, 2.0), -2 * 4.0 / 10, rtol=1e-14)
    grad_ff = jax.jit(jax.grad(sphere_form_factor, argnums=(0, 1, 2)))
    d_ff = grad_ff(0.0, 34.0, 2.5)
    assert np.all(np.isfinite(d_ff))
    d_mono = grad_ff(0.05, 34.0, 0.0)
    assert np.all(np.isfinite(d_mono)) and abs(d_mono[2]) < 1e-12  # sigma -> 0: even in sigma


@pytest.mark.parametrize("radius, sigma", [(34.0, 2.5), (65.0, 5.0), (34.0, 0.0), (10.0, 4.0)])
def test_p_of_zero_is_one(radius, sigma):
    assert float(form_factor(0.0, radius, sigma)) == pytest.approx(1.0, abs=1e-15)
    p = form_factor(jnp.linspace(0.0, 0.5, 11), radius, sigma)
    assert np.all(p <= 1.0) and np.all(p >= 0.0)


def test_monodisperse_limit_is_amplitude_squared():
    q = jnp.linspace(0.0, 0.5, 101)
    np.testing.assert_allclose(form_factor(q, 34.0, 0.0), amplitude(q, 34.0) ** 2, rtol=1e-13, atol=1e-20)


def _sasmodels_sphere(q, radius, sigma, nsigma, npts):
    core = pytest.importorskip("sasmodels.core")
    from sasmodels.data import empty_data1D
    from sasmodels.direct_model import DirectModel

    q_with_zero = np.concatenate([[1e-6], q])  # P(1e-6) = 1 - O(1e-9): low-q normalisation
    # cutoff=0: DirectModel otherwise drops dispersion points of weight < 1e-5 (of a unit sum),
    # more of them the more points there are
    model = DirectModel(empty_data1D(q_with_zero), core.load_model("sphere", dtype="double"), cutoff=0.0)
    intensity = model(
        radius=radius, radius_pd=sigma / radius, radius_pd_type="gaussian",
        radius_pd_n=npts, radius_pd_nsigma=nsigma,  # explicit: sasmodels runs monodisperse otherwise
        scale=1.0, background=0.0, sld=1.0, sld_solvent=0.0,
    )
    return intensity[1:] / intensity[0]


@pytest.mark.parametrize("radius, sigma", [(34.0, 2.5), (65.0, 5.0)])
def test_default_converges_to_sasmodels_six_sigma(radius, sigma):
    # the default (6 sigma, 40 nodes) against sasmodels' uniform sum over +-6 sigma, 601 points:
    # within 0.1 % wherever P > 1e-4
    q = np.linspace(0.005, 0.5, 400)
    reference = _sasmodels_sphere(q, radius, sigma, nsigma=6.0, npts=601)
    p = np.asarray(form_factor(q, radius, sigma))
    keep = p > 1e-4
    assert keep.sum() > 150
    np.testing.assert_allclose(p[keep], reference[keep], rtol=1e-5)  # well inside 0.1 %
    # the 3-sigma cut, still available, is off by more than that near the first minimum
    cut = np.asarray(form_factor(q, radius, sigma, n_sigma=3.0))
    assert np.max(np.abs(cut[keep] / reference[keep] - 1)) > 1e-2


@pytest.mark.parametrize("radius, sigma", [(34.0, 2.5), (65.0, 5.0)])
def test_truncation_matches_sasmodels_three_sigma(radius, sigma):
    q = np.linspace(0.005, 0.5, 400)
    reference = _sasmodels_sphere(q, radius, sigma, nsigma=3.0, npts=201)
    p = np.asarray(form_factor(q, radius, sigma, n_sigma=3.0))
    keep = p > 1e-4
    np.testing.assert_allclose(p[keep], reference[keep], rtol=5e-3)
    # the comparison is not vacuous: the monodisperse curve differs by far more
    mono = np.asarray(form_factor(q, radius, 0.0))
    assert np.max(np.abs(mono[keep] / reference[keep] - 1)) > 0.5


def test_bragg_factor_is_squared_mean_amplitude():
    # B = <V Phi>^2 / <V>^2 against a plain Riemann sum over a fine radius grid (+-8 sigma)
    radius, sigma = 34.0, 2.5
    q = np.array([0.0, 0.0838, 0.1185, 0.25])
    r = radius + sigma * np.linspace(-8, 8, 20001)
    pdf = np.exp(-0.5 * ((r - radius) / sigma) ** 2)
    x = q[:, None] * r[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(x > 0, 3 * (np.sin(x) - x * np.cos(x)) / np.where(x > 0, x, 1) ** 3, 1.0)
    expected = (np.sum(pdf * r ** 3 * phi, axis=1) / np.sum(pdf * r ** 3)) ** 2
    b = np.asarray(bragg_factor(q, radius, sigma))
    np.testing.assert_allclose(b, expected, rtol=1e-6)
    # the two weightings differ as the decoupling approximation says (module docstring)
    ratio = b / np.asarray(form_factor(q, radius, sigma))
    np.testing.assert_allclose(ratio, [1.0, 1.044, 0.793, 0.703], atol=2e-3)
    # monodisperse: both are Phi^2
    np.testing.assert_allclose(bragg_factor(q, radius, 0.0), form_factor(q, radius, 0.0), rtol=1e-12)


def test_peak_factor_weightings_and_errors():
    q = np.linspace(0.0, 0.3, 7)
    np.testing.assert_allclose(sl_peak_factor(q, 34.0, 2.5, "average"), form_factor(q, 34.0, 2.5), rtol=1e-12)
    np.testing.assert_allclose(sl_peak_factor(q, 34.0, 2.5), bragg_factor(q, 34.0, 2.5), rtol=1e-12)
    with pytest.raises(ValueError, match=r"sl_peak_weighting 'mean' is unknown; use one of \['decoupling', 'average'\]"):
        sl_peak_factor(q, 34.0, 2.5, "mean")


@pytest.mark.parametrize("radius, sigma", [(34.0, 2.5), (65.0, 5.0), (34.0, 0.3)])
def test_gradients_match_central_differences(radius, sigma):
    q = jnp.linspace(0.005, 0.5, 25)
    jac = _jac_fwd(q, radius, sigma)
    jac_rev = _jac_rev(q, radius, sigma)
    for i, h in enumerate([1e-4 * radius, 1e-4 * radius]):
        args_plus = [q, radius, sigma]
        args_minus = [q, radius, sigma]
        args_plus[i + 1] += h
        args_minus[i + 1] -= h
        fd = (np.asarray(form_factor(*args_plus)) - np.asarray(form_factor(*args_minus))) / (2 * h)
        scale = np.max(np.abs(fd))
        np.testing.assert_allclose(jac[i], fd, rtol=1e-5, atol=1e-6 * scale)
        np.testing.assert_allclose(jac_rev[i], jac[i], rtol=1e-12, atol=1e-14 * scale)


def test_dtype_follows_inputs():
    q32 = np.linspace(0.0, 0.5, 7, dtype=np.float32)
    p32 = form_factor(q32, 34.0, 2.5)
    assert p32.dtype == jnp.float32
    assert amplitude(q32, 34.0).dtype == jnp.float32
    p64 = form_factor(q32.astype(np.float64), 34.0, 2.5)
    assert p64.dtype == jnp.float64
    np.testing.assert_allclose(p32, p64, rtol=2e-4, atol=1e-7)
    grad32 = jax.jit(jax.grad(lambda r: sphere_form_factor(q32, r, jnp.float32(2.5)).sum()))(jnp.float32(34.0))
    assert grad32.dtype == jnp.float32 and np.isfinite(grad32)


def test_jit_vmap_and_broadcasting():
    q = jnp.linspace(0.0, 0.3, 16)
    radii = jnp.array([30.0, 34.0, 40.0])
    sigmas = jnp.array([1.0, 2.5, 0.0])
    batched = jax.jit(jax.vmap(sphere_form_factor, in_axes=(None, 0, 0)))(q, radii, sigmas)
    assert batched.shape == (3, 16)
    broadcast = form_factor(q[None, :], radii[:, None], sigmas[:, None])
    np.testing.assert_allclose(batched, broadcast, rtol=1e-13)
    single = form_factor(q, 34.0, 2.5)
    np.testing.assert_allclose(batched[1], single, rtol=1e-13)
    assert form_factor(q.reshape(4, 4), 34.0, 2.5).shape == (4, 4)
    static_nodes = jax.jit(sphere_form_factor, static_argnames=("n_nodes",))
    np.testing.assert_allclose(static_nodes(q, 34.0, 2.5, n_nodes=60), single, rtol=1e-6)


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"n_nodes must be a positive Python int .* got 2.5"):
        sphere_form_factor(0.1, 34.0, 2.5, n_nodes=2.5)
    with pytest.raises(ValueError, match=r"n_nodes must be a positive Python int \(e.g. 40\), got 0"):
        sphere_form_factor(0.1, 34.0, 2.5, n_nodes=0)
    with pytest.raises(ValueError, match=r"n_sigma must be a positive Python number .* got -3"):
        sphere_form_factor(0.1, 34.0, 2.5, n_sigma=-3)


def test_non_positive_radius_is_an_error_not_nan():
    with pytest.raises(ValueError, match="radius must be > 0"):
        sphere_form_factor(jnp.asarray([0.1]), 0.0, 0.0)
