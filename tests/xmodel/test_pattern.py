"""The forward model: sparse evaluation against the dense reference, gradients, vmap."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.parameters import CONTINUOUS, ModelParams, params_from_config, structure_from_config
from xmodel.pattern import TERMS, PatternModel, build_support, dense_pattern
from xmodel.pixels import PixelSet
from xmodel.peaks import reflection_table


def _setup(domain: str, binning: int, dtype=jnp.float32):
    cfg = load_config(default_paths(domain))
    ex = Experiment.from_config(cfg, binning=binning)
    return cfg, ex, structure_from_config(cfg), params_from_config(cfg, dtype=dtype)


def _peak_heights(ex, st, params):
    """Dense-model intensity at the brightest point of every lit reflection, per lattice."""
    rows = reflection_table(ex, st, params, min_relative=0.05)
    out = {}
    for lat in ("SL", "AL"):
        r = [x for x in rows if x["lattice"] == lat]
        px = PixelSet.from_pixels(ex.geometry, [x["row"] for x in r], [x["col"] for x in r],
                                  polarization_factor=ex.polarization_factor)
        out[lat] = float(dense_pattern(px, st, params).max())
    return out


@pytest.mark.parametrize("domain", ["yellow", "purple", "orange"])
def test_sparse_equals_dense_reference(domain):
    """Sparse (q-band, pruned members) evaluation == every pixel x every reflection."""
    cfg, ex, st, params = _setup(domain, binning=8)
    px = ex.pixels()
    model = PatternModel(px, st, params)
    sparse = np.asarray(model(params))
    dense = dense_pattern(px, st, params)
    peaks = _peak_heights(ex, st, params)
    diff = np.abs(sparse - dense)
    assert diff.max() <= 1e-3 * peaks["SL"]
    # the weak AL peaks too, judged against their own height, in the WAXS region
    waxs = np.flatnonzero(px.q_abs > 1.0)
    assert diff[waxs].max() <= 1e-3 * peaks["AL"]
    assert model.support.n_pairs < 0.2 * px.valid.sum() * (len(st.sl_hkl) + len(st.al_hkl))
    assert np.all(sparse[~px.valid] == 0)


def test_pattern_image_shape_dtype_and_mask():
    cfg, ex, st, params = _setup("yellow", binning=8)
    model = PatternModel(ex.pixels(), st, params)
    img = model.image(params)
    assert img.shape == ex.geometry.shape and img.dtype == jnp.float32
    assert np.all(np.asarray(img)[ex.mask] == 0)
    assert np.all(np.isfinite(np.asarray(img)))


def _small_pixels(ex):
    """A polar grid through the SL 200/220 bands and the AL 111/200 bands."""
    q = np.concatenate([np.linspace(0.075, 0.125, 14), np.linspace(1.75, 2.2, 14)])
    chi = np.linspace(-100, 180, 36)
    return PixelSet.from_polar(ex.geometry, q, chi, ex.mask, ex.polarization_factor)


def _fd_params(params: ModelParams) -> ModelParams:
    """Parameters away from symmetric points so that every derivative is non-trivial."""
    return params.replace(inplane=params.inplane + 0.05, tilt1=0.03, tilt2=-0.04,
                          misorientation=jnp.asarray([0.02, -0.03, 0.01]), background=0.3,
                          sl_mosaic=0.05, sl_radial_width=0.004)


def test_gradients_against_finite_differences_float64():
    cfg, ex, st, params = _setup("yellow", binning=8, dtype=jnp.float64)
    params = _fd_params(params)
    px = _small_pixels(ex)
    model = PatternModel(px, st, params, dtype=jnp.float64, orientation_margin_deg=None, width_factor=2.0)
    _check_gradients(model, params, seed=1)


def _check_gradients(model, params, seed):
    """Reverse-mode gradient of a weighted sum of the model against central finite differences
    (float64) for every continuous parameter, each of which must move the pattern."""
    w = jnp.asarray(np.random.default_rng(seed).uniform(0.5, 1.5, model.pixels.size))
    loss = model.value_and_grad(lambda intensity, p: jnp.sum(w * intensity))
    value, grad = loss(params)
    assert np.isfinite(float(value))

    def f(p):
        # the value of the same jitted program: no second program to compile for the differences
        return loss(p)[0]

    for name in CONTINUOUS:
        x0 = np.asarray(getattr(params, name), np.float64)
        g = np.asarray(getattr(grad, name))
        for j in np.ndindex(x0.shape):
            h = 1e-6 * max(1.0, abs(x0[j])) if name not in ("sl_scale", "diffuse_scale", "al_scale") else 1e-3
            xp, xm = x0.copy(), x0.copy()
            xp[j] += h
            xm[j] -= h
            fd = (float(f(params.replace(**{name: xp}))) - float(f(params.replace(**{name: xm})))) / (2 * h)
            assert g[j] == pytest.approx(fd, rel=2e-5, abs=1e-6 * abs(float(value))), (name, j)
            assert abs(fd) > 0, f"{name} has no effect on the pattern"


def test_jacobian_forward_mode_matches_reverse():
    cfg, ex, st, params = _setup("green", binning=8, dtype=jnp.float64)
    params = _fd_params(params)
    px = _small_pixels(ex)
    model = PatternModel(px, st, params, dtype=jnp.float64, orientation_margin_deg=None)
    rows = np.flatnonzero(px.valid)[:50]
    jac = model.jacobian(rows)(params)
    w = np.zeros(px.size)
    w[rows[7]] = 1.0
    _, grad = model.value_and_grad(lambda intensity, p: jnp.sum(jnp.asarray(w) * intensity))(params)
    for name in ("lattice_constant", "disorder", "inplane", "al_scale", "radius"):
        np.testing.assert_allclose(np.asarray(getattr(jac, name))[7], np.asarray(getattr(grad, name)), rtol=1e-9, atol=1e-12)


def test_components_weighted_by_the_scales_sum_to_the_model():
    cfg, ex, st, params = _setup("purple", binning=8, dtype=jnp.float64)
    params = _fd_params(params)
    px = _small_pixels(ex)
    model = PatternModel(px, st, params, orientation_margin_deg=None, dtype=jnp.float64)
    terms = np.asarray(model.components()(model.arrays, params))
    assert terms.shape == (len(TERMS), px.size)
    scales = np.array([float(getattr(params, t)) for t in TERMS])
    full = np.asarray(model(params))
    np.testing.assert_allclose(scales @ terms, full, rtol=1e-12, atol=1e-12 * full.max())
    al_only = np.asarray(model.components(("al_scale",))(model.arrays, params))
    np.testing.assert_array_equal(al_only[0], terms[TERMS.index("al_scale")])
    with pytest.raises(ValueError, match=r"components: unknown or no terms \['radius'\]"):
        model.components(("radius",))


def test_vmap_equals_loop():
    cfg, ex, st, params = _setup("purple", binning=8, dtype=jnp.float64)
    px = _small_pixels(ex)
    model = PatternModel(px, st, params, orientation_margin_deg=None, dtype=jnp.float64)
    variants = [params.replace(lattice_constant=a, inplane=params.inplane + d, disorder=params.disorder * s)
                for a, d, s in [(150.0, 0.0, 1.0), (145.0, 0.1, 1.2), (152.0, -0.2, 0.8)]]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *variants)
    batch = np.asarray(jax.vmap(model)(stacked))
    loop = np.stack([np.asarray(model(v)) for v in variants])
    np.testing.assert_allclose(batch, loop, rtol=1e-10, atol=1e-12 * loop.max())


def test_polar_grid_matches_dense_and_support_errors():
    cfg, ex, st, params = _setup("yellow", binning=4)
    q = np.linspace(0.02, 2.4, 300)
    chi = np.linspace(-180, 180, 90, endpoint=False)
    px = ex.polar_pixels(q, chi)
    model = PatternModel(px, st, params)
    img = np.asarray(model.image(params))
    assert img.shape == (90, 300)
    dense = dense_pattern(px, st, params).reshape(img.shape)
    assert np.abs(img - dense).max() <= 1e-3 * dense.max()
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), params, params)
    with pytest.raises(ValueError, match="parameters of one pattern, not a batch"):
        build_support(px, st, stacked)


def _bin_pixels(geo, q_lo, q_hi, chi_lo, chi_hi, n=20):
    """An n x n grid of pixel q-vectors on the Ewald sphere filling one polar bin, and the bin's
    centroid as `fits.scan.setup.bin_centroid_pixels` takes it (mean |q|, mean chi)."""
    qq, cc = np.meshgrid(np.linspace(q_lo, q_hi, n), np.linspace(chi_lo, chi_hi, n))
    pts = geo.q_lab_from_polar(qq.reshape(-1), cc.reshape(-1)).reshape(-1, 3)
    centroid = geo.q_lab_from_polar(np.array([qq.mean()]), np.array([cc.mean()])).reshape(3)
    return pts, centroid


def test_binned_peak_equals_the_mean_over_the_bins_pixels():
    """A SL peak (1 deg mosaic) seen through 1 % x 1 deg bins around it: the bin-averaged model at
    the centroid equals the brute-force mean over the bin's pixels far better than the peak at
    the centroid (second order left out there, fourth order here)."""
    from xmodel.pattern import bin_frame, binned_shell_sum, shell_sum

    shell_sum, binned_shell_sum = jax.jit(shell_sum), jax.jit(binned_shell_sum)
    _, ex, _, params = _setup("yellow", binning=8, dtype=jnp.float64)
    geo = ex.geometry
    g = 2 * np.pi * np.sqrt(3.0) / float(params.lattice_constant)
    sr, stn = float(params.sl_radial_width), g * np.radians(1.0)
    # a reflection near the sphere at chi = 30 deg, lifted off it by half a tangential sigma
    g_vec = geo.q_lab_from_polar(np.array([g]), np.array([30.0])).reshape(3) + np.array([0.0, 0.0, 0.5 * stn])
    g_vec = (g / np.linalg.norm(g_vec)) * g_vec
    width = 0.01 * g
    errs_c, errs_b = [], []
    for dq in (-1.0, -0.5, 0.0, 0.5):
        for dchi in (-1.5, -1.0, -0.5, 0.0, 0.5):
            q_lo = g + dq * width
            pts, cen = _bin_pixels(geo, q_lo, q_lo + width, 30.0 + dchi, 31.0 + dchi)
            truth = float(np.mean(shell_sum(jnp.asarray(pts.T), jnp.asarray(np.sum(pts ** 2, axis=1)),
                                            jnp.asarray(g_vec[None]), g, sr, stn)))
            c = jnp.asarray(cen[:, None])
            c2 = jnp.asarray(np.sum(cen ** 2)[None])
            at = float(shell_sum(c, c2, jnp.asarray(g_vec[None]), g, sr, stn)[0])
            frame, local = bin_frame(cen[None], np.cov(pts.T, bias=True)[None])
            binned = float(binned_shell_sum(c, c2, jnp.asarray(frame), jnp.asarray(local),
                                            jnp.asarray(g_vec[None]), g, sr, stn)[0])
            errs_c.append(abs(at - truth))
            errs_b.append(abs(binned - truth))
    # the peak is as wide as a bin: the centroid misses the mean by 5 % of the peak height, the
    # bin-averaged model by 0.1 % (the fourth-order term of a uniform, not Gaussian, spread)
    assert max(errs_c) > 0.01
    assert max(errs_b) < 2e-3 and max(errs_b) < 0.1 * max(errs_c), (max(errs_b), max(errs_c))


def test_binned_model_gradients_and_zero_spread():
    """With a spread the model stays differentiable (gradients against central finite
    differences in float64); with a zero spread it is the point model."""
    _, ex, st, params = _setup("yellow", binning=8, dtype=jnp.float64)
    params = _fd_params(params)
    px = _small_pixels(ex)
    zero = PixelSet(px.q_lab, px.weight, px.valid, px.shape, "polar", np.zeros((px.size, 3, 3)))
    opts = {"dtype": jnp.float64, "orientation_margin_deg": None, "width_factor": 2.0}
    np.testing.assert_allclose(np.asarray(PatternModel(zero, st, params, **opts)(params)),
                               np.asarray(PatternModel(px, st, params, **opts)(params)), rtol=1e-12, atol=1e-12)
    # the spread of 1 % x 1 deg bins: radial and chi directions on the detector plane
    u = px.q_lab / np.maximum(px.q_abs, 1e-12)[:, None]
    e_chi = np.cross([0.0, 0.0, 1.0], u)
    e_chi /= np.maximum(np.linalg.norm(e_chi, axis=1), 1e-12)[:, None]
    qa = px.q_abs[:, None, None]
    spread = ((0.01 * qa) ** 2 / 12 * u[:, :, None] * u[:, None, :]
              + (np.radians(1.0) * qa) ** 2 / 12 * e_chi[:, :, None] * e_chi[:, None, :])
    binned = PixelSet(px.q_lab, px.weight, px.valid, px.shape, "polar", spread)
    model = PatternModel(binned, st, params, **opts)
    assert model.layout.binned
    _check_gradients(model, params, seed=2)
    with pytest.raises(ValueError, match="carries bin spreads"):
        dense_pattern(binned, st, params)
    with pytest.raises(ValueError, match=r"expected \(3, 3, 3\)"):
        PixelSet(px.q_lab[:3], px.weight[:3], px.valid[:3], (3,), "list", np.zeros((3, 3)))
